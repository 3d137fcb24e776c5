package sun

import (
	"math"
	"testing"
	"time"
)

// crossing returns the first minute of the local day at which the elevation
// crosses SunriseElevation in the given direction.
func crossing(t *testing.T, day time.Time, lat, lon float64, rising bool) time.Time {
	t.Helper()
	prev := Elevation(day, lat, lon)
	for m := 1; m <= 24*60; m++ {
		at := day.Add(time.Duration(m) * time.Minute)
		el := Elevation(at, lat, lon)
		if rising && prev < SunriseElevation && el >= SunriseElevation ||
			!rising && prev >= SunriseElevation && el < SunriseElevation {
			return at
		}
		prev = el
	}
	t.Fatalf("no crossing on %s", day)
	return time.Time{}
}

func TestSunriseSunset(t *testing.T) {
	cst := time.FixedZone("CST", 8*3600)
	// Published times (timeanddate.com, NOAA solar calculator), to the minute.
	tests := []struct {
		name            string
		lat, lon        float64
		day             time.Time
		sunrise, sunset string
	}{
		{"Beijing summer solstice", 39.9042, 116.4074, time.Date(2024, 6, 21, 0, 0, 0, 0, cst), "04:46", "19:46"},
		{"Shanghai winter solstice", 31.2304, 121.4737, time.Date(2024, 12, 21, 0, 0, 0, 0, cst), "06:51", "16:56"},
		{"Greenwich spring equinox", 51.4779, -0.0015, time.Date(2024, 3, 20, 0, 0, 0, 0, time.UTC), "06:02", "18:14"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				rising bool
				want   string
			}{{true, tt.sunrise}, {false, tt.sunset}} {
				got := crossing(t, tt.day, tt.lat, tt.lon, c.rising)
				want, _ := time.ParseInLocation("2006-01-02 15:04", tt.day.Format("2006-01-02 ")+c.want, tt.day.Location())
				if d := got.Sub(want); d < -2*time.Minute || d > 2*time.Minute {
					t.Errorf("rising=%v: got %s, want %s ±2m", c.rising, got.Format("15:04"), c.want)
				}
			}
		})
	}
}

func TestNoonElevation(t *testing.T) {
	// At solar noon on a solstice or equinox the elevation is 90° minus the
	// angle between the latitude and the declination.
	tests := []struct {
		name     string
		lat, lon float64
		day      time.Time
		decl     float64
	}{
		{"Beijing June solstice", 39.9042, 116.4074, time.Date(2024, 6, 20, 16, 0, 0, 0, time.UTC), 23.436},
		{"Equator March equinox", 0, 0, time.Date(2024, 3, 20, 0, 0, 0, 0, time.UTC), 0.15}, // 9 h after the equinox,
		{"Sydney June solstice", -33.8688, 151.2093, time.Date(2024, 6, 20, 14, 0, 0, 0, time.UTC), 23.436},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			best, bestAz := -90.0, 0.0
			for m := 0; m < 24*60; m++ {
				p := At(tt.day.Add(time.Duration(m)*time.Minute), tt.lat, tt.lon)
				if p.Elevation > best {
					best, bestAz = p.Elevation, p.Azimuth
				}
			}
			want := 90 - math.Abs(tt.lat-tt.decl)
			if math.Abs(best-want) > 0.15 {
				t.Errorf("noon elevation %.3f, want %.3f", best, want)
			}
			if tt.lat > 30 && math.Abs(bestAz-180) > 3 {
				t.Errorf("noon azimuth %.1f, want south (180)", bestAz)
			}
			if tt.lat < -30 && math.Min(bestAz, 360-bestAz) > 3 {
				t.Errorf("noon azimuth %.1f, want north (0)", bestAz)
			}
		})
	}
}

func TestAmbientLux(t *testing.T) {
	tests := []struct {
		el     float64
		lo, hi float64
	}{
		{90, 100000, 120000},
		{30, 40000, 70000},
		{0, 399, 401},
		{-3, 30, 50},
		{-6, 3.3, 3.5},
		{-12, 0.0079, 0.0081},
		{-40, 0, 0.002},
	}
	for _, tt := range tests {
		got := AmbientLux(tt.el)
		if got < tt.lo || got > tt.hi {
			t.Errorf("AmbientLux(%v) = %v, want %v..%v", tt.el, got, tt.lo, tt.hi)
		}
	}
	for el := -30.0; el < 90; el += 0.5 {
		if a, b := AmbientLux(el), AmbientLux(el+0.5); b < a {
			t.Fatalf("AmbientLux not monotonic at %v: %v > %v", el, a, b)
		}
	}
}
