// Package sun computes the sun's position in the sky with NOAA's solar
// calculator algorithm (after Meeus, Astronomical Algorithms), accurate to
// about a minute of arc for dates between 1901 and 2099. The simulator uses it
// to switch streetlights at dusk and dawn at each asset's location and to
// derive ambient light.
package sun

import (
	"math"
	"time"
)

// Elevations that define day and night. The sun's upper limb touches the
// horizon at -0.833° (refraction plus the solar radius); civil twilight ends
// at -6°.
const (
	SunriseElevation     = -0.833
	CivilTwilight        = -6.0
	NauticalTwilight     = -12.0
	AstronomicalTwilight = -18.0
)

func rad(d float64) float64 { return d * math.Pi / 180 }
func deg(r float64) float64 { return r * 180 / math.Pi }

// Position is where the sun is: its geometric elevation above the horizon
// and its azimuth clockwise from north, both in degrees.
type Position struct {
	Elevation float64
	Azimuth   float64
}

// At returns the sun's position at time t seen from lat, lon (WGS84 degrees,
// east and north positive). The elevation is geometric, without
// atmospheric refraction.
func At(t time.Time, lat, lon float64) Position {
	jd := float64(t.UnixNano())/86400e9 + 2440587.5
	jc := (jd - 2451545) / 36525

	l0 := math.Mod(280.46646+jc*(36000.76983+jc*0.0003032), 360) // geometric mean longitude
	m := 357.52911 + jc*(35999.05029-0.0001537*jc)               // geometric mean anomaly
	e := 0.016708634 - jc*(0.000042037+0.0000001267*jc)          // eccentricity of Earth's orbit
	c := math.Sin(rad(m))*(1.914602-jc*(0.004817+0.000014*jc)) +
		math.Sin(rad(2*m))*(0.019993-0.000101*jc) +
		math.Sin(rad(3*m))*0.000289 // equation of centre
	trueLong := l0 + c
	omega := 125.04 - 1934.136*jc
	appLong := trueLong - 0.00569 - 0.00478*math.Sin(rad(omega))
	meanObliq := 23 + (26+(21.448-jc*(46.815+jc*(0.00059-jc*0.001813)))/60)/60
	obliq := meanObliq + 0.00256*math.Cos(rad(omega))
	decl := deg(math.Asin(math.Sin(rad(obliq)) * math.Sin(rad(appLong))))

	y := math.Tan(rad(obliq / 2))
	y *= y
	eqTime := 4 * deg(y*math.Sin(2*rad(l0))-2*e*math.Sin(rad(m))+
		4*e*y*math.Sin(rad(m))*math.Cos(2*rad(l0))-
		0.5*y*y*math.Sin(4*rad(l0))-1.25*e*e*math.Sin(2*rad(m))) // minutes

	u := t.UTC()
	minutes := float64(u.Hour()*60+u.Minute()) + (float64(u.Second())+float64(u.Nanosecond())/1e9)/60
	tst := math.Mod(minutes+eqTime+4*lon, 1440) // true solar time, minutes
	if tst < 0 {
		tst += 1440
	}
	ha := tst/4 - 180 // hour angle, degrees
	cosZen := math.Sin(rad(lat))*math.Sin(rad(decl)) + math.Cos(rad(lat))*math.Cos(rad(decl))*math.Cos(rad(ha))
	cosZen = math.Max(-1, math.Min(1, cosZen))
	zen := deg(math.Acos(cosZen))

	var az float64
	if den := math.Cos(rad(lat)) * math.Sin(rad(zen)); math.Abs(den) > 1e-9 {
		cosAz := (math.Sin(rad(lat))*math.Cos(rad(zen)) - math.Sin(rad(decl))) / den
		cosAz = math.Max(-1, math.Min(1, cosAz))
		a := deg(math.Acos(cosAz))
		if ha > 0 {
			az = math.Mod(a+180, 360)
		} else {
			az = math.Mod(540-a, 360)
		}
	}
	return Position{Elevation: 90 - zen, Azimuth: az}
}

// Elevation returns the sun's geometric elevation in degrees at t from lat, lon.
func Elevation(t time.Time, lat, lon float64) float64 { return At(t, lat, lon).Elevation }

// AmbientLux estimates horizontal illuminance under a clear sky from the
// sun's elevation: about 400 lx at sunset, 3.4 lx at the end of civil
// twilight, 0.008 lx at the end of nautical twilight and starlight below,
// interpolated on a log scale; in daylight it rises with the sine of the
// elevation to about 110 000 lx with the sun overhead.
func AmbientLux(elevation float64) float64 {
	switch {
	case elevation >= 0:
		return 400 + 110000*math.Pow(math.Sin(rad(elevation)), 1.15)
	case elevation >= CivilTwilight:
		return logInterp(elevation, CivilTwilight, 3.4, 0, 400)
	case elevation >= NauticalTwilight:
		return logInterp(elevation, NauticalTwilight, 0.008, CivilTwilight, 3.4)
	case elevation >= AstronomicalTwilight:
		return logInterp(elevation, AstronomicalTwilight, 0.001, NauticalTwilight, 0.008)
	}
	return 0.001
}

func logInterp(x, x0, y0, x1, y1 float64) float64 {
	f := (x - x0) / (x1 - x0)
	return math.Exp(math.Log(y0) + f*(math.Log(y1)-math.Log(y0)))
}
