package caseclient

import (
	"math"
	"testing"
)

// metres between two nearby points (equirectangular; fine for < 1 km).
func metres(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371000.0
	x := (lon2 - lon1) * math.Pi / 180 * math.Cos((lat1+lat2)/2*math.Pi/180)
	y := (lat2 - lat1) * math.Pi / 180
	return r * math.Hypot(x, y)
}

func TestWGS84ToGCJ02KnownPoints(t *testing.T) {
	// The published test vectors of eviltransform (googollee/eviltransform,
	// shared by its Go, Python, Ruby, C# ports): WGS84 in, GCJ-02 out.
	cases := []struct {
		name             string
		lat, lon         float64
		wantLat, wantLon float64
		outsideCN        bool
	}{
		{name: "Shanghai", lat: 31.1774276, lon: 121.5272106, wantLat: 31.17530398364597, wantLon: 121.531541859215},
		{name: "Shenzhen", lat: 22.543847, lon: 113.912316, wantLat: 22.540796131694766, wantLon: 113.9171764808363},
		{name: "Beijing", lat: 39.911954, lon: 116.377817, wantLat: 39.91334545536069, wantLon: 116.38404722455657},
		{name: "Denver (outside China: unchanged)", lat: 39.7392, lon: -104.9903, wantLat: 39.7392, wantLon: -104.9903, outsideCN: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			gl, gn := WGS84ToGCJ02(c.lat, c.lon)
			if d := metres(gl, gn, c.wantLat, c.wantLon); d > 1e-6 {
				t.Errorf("WGS84ToGCJ02(%v,%v) = %.7f,%.7f; want %.7f,%.7f (off by %.2f m)", c.lat, c.lon, gl, gn, c.wantLat, c.wantLon, d)
			}
			if !c.outsideCN && metres(c.lat, c.lon, gl, gn) < 100 {
				t.Errorf("GCJ-02 offset in China should be hundreds of metres, got %.1f m", metres(c.lat, c.lon, gl, gn))
			}
			wl, wn := GCJ02ToWGS84(c.wantLat, c.wantLon)
			if d := metres(wl, wn, c.lat, c.lon); d > 0.001 {
				t.Errorf("GCJ02ToWGS84(%v,%v) = %.7f,%.7f; want %.7f,%.7f (off by %.2f m)", c.wantLat, c.wantLon, wl, wn, c.lat, c.lon, d)
			}
		})
	}
}

// The inverse reproduces the forward transform's input across mainland
// China to within a millimetre.
func TestGCJ02RoundTripErrorBound(t *testing.T) {
	worst := 0.0
	for lat := 18.0; lat <= 53.0; lat += 0.73 {
		for lon := 74.0; lon <= 134.0; lon += 0.91 {
			gl, gn := WGS84ToGCJ02(lat, lon)
			wl, wn := GCJ02ToWGS84(gl, gn)
			worst = max(worst, metres(lat, lon, wl, wn))
		}
	}
	if worst > 0.001 {
		t.Fatalf("round-trip error %.6f m, want < 1 mm", worst)
	}
}
