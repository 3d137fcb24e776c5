package caseclient

import "math"

// GCJ-02 ("Mars coordinates") is the obfuscated datum of Chinese map data.
// The forward transform (WGS84 → GCJ-02) is the widely published one
// (Krasovsky 1940 ellipsoid constants); it has no closed-form inverse, so
// GCJ02ToWGS84 inverts it by fixed-point iteration to well below a
// millimetre. Outside mainland China both datums coincide.

const (
	gcjA  = 6378245.0              // Krasovsky 1940 semi-major axis
	gcjEE = 0.00669342162296594323 // eccentricity squared
)

// outOfChina reports whether a point is outside the rough bounding box where
// GCJ-02 applies.
func outOfChina(lat, lon float64) bool {
	return lon < 72.004 || lon > 137.8347 || lat < 0.8293 || lat > 55.8271
}

func gcjTransformLat(x, y float64) float64 {
	r := -100.0 + 2.0*x + 3.0*y + 0.2*y*y + 0.1*x*y + 0.2*math.Sqrt(math.Abs(x))
	r += (20.0*math.Sin(6.0*x*math.Pi) + 20.0*math.Sin(2.0*x*math.Pi)) * 2.0 / 3.0
	r += (20.0*math.Sin(y*math.Pi) + 40.0*math.Sin(y/3.0*math.Pi)) * 2.0 / 3.0
	r += (160.0*math.Sin(y/12.0*math.Pi) + 320*math.Sin(y*math.Pi/30.0)) * 2.0 / 3.0
	return r
}

func gcjTransformLon(x, y float64) float64 {
	r := 300.0 + x + 2.0*y + 0.1*x*x + 0.1*x*y + 0.1*math.Sqrt(math.Abs(x))
	r += (20.0*math.Sin(6.0*x*math.Pi) + 20.0*math.Sin(2.0*x*math.Pi)) * 2.0 / 3.0
	r += (20.0*math.Sin(x*math.Pi) + 40.0*math.Sin(x/3.0*math.Pi)) * 2.0 / 3.0
	r += (150.0*math.Sin(x/12.0*math.Pi) + 300.0*math.Sin(x/30.0*math.Pi)) * 2.0 / 3.0
	return r
}

// WGS84ToGCJ02 converts a WGS84 position to GCJ-02.
func WGS84ToGCJ02(lat, lon float64) (float64, float64) {
	if outOfChina(lat, lon) {
		return lat, lon
	}
	dLat := gcjTransformLat(lon-105.0, lat-35.0)
	dLon := gcjTransformLon(lon-105.0, lat-35.0)
	radLat := lat / 180.0 * math.Pi
	magic := math.Sin(radLat)
	magic = 1 - gcjEE*magic*magic
	sqrtMagic := math.Sqrt(magic)
	dLat = (dLat * 180.0) / ((gcjA * (1 - gcjEE)) / (magic * sqrtMagic) * math.Pi)
	dLon = (dLon * 180.0) / (gcjA / sqrtMagic * math.Cos(radLat) * math.Pi)
	return lat + dLat, lon + dLon
}

// GCJ02ToWGS84 converts a GCJ-02 position to WGS84 by iterating the forward
// transform until it reproduces the input to 1e-10 degrees (about 0.01 mm).
func GCJ02ToWGS84(lat, lon float64) (float64, float64) {
	if outOfChina(lat, lon) {
		return lat, lon
	}
	wLat, wLon := lat, lon
	for range 30 {
		gLat, gLon := WGS84ToGCJ02(wLat, wLon)
		dLat, dLon := gLat-lat, gLon-lon
		wLat -= dLat
		wLon -= dLon
		if math.Abs(dLat) < 1e-10 && math.Abs(dLon) < 1e-10 {
			break
		}
	}
	return wLat, wLon
}
