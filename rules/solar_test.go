package rules

import (
	"math"
	"testing"
	"time"
)

func TestSunElevationKnownValues(t *testing.T) {
	tests := []struct {
		name     string
		t        string
		lat, lon float64
		want     float64 // geometric elevation, degrees
		tol      float64
	}{
		// Solar noon at the equator on the March equinox: the sun is overhead.
		{"equinox noon on the equator", "2024-03-20T12:07:00Z", 0, 0, 89.9, 0.3},
		// Greenwich solar noon at the June solstice: 90 - 51.4769 + 23.44.
		{"solstice noon at Greenwich", "2024-06-20T12:01:40Z", 51.4769, 0, 61.96, 0.1},
		// Published sunrise/sunset (upper limb at the horizon, centre at -0.833 geometric).
		{"Shanghai sunrise 21 June", "2026-06-21T04:50:00+08:00", 31.23, 121.47, -0.833, 0.5},
		{"Shanghai sunset 21 June", "2026-06-21T19:01:00+08:00", 31.23, 121.47, -0.833, 0.5},
		{"London sunset 21 December", "2024-12-21T15:53:00Z", 51.5074, -0.1278, -0.833, 0.5},
		// Midnight sun: the North Pole in June sits at the declination.
		{"North Pole in June", "2024-06-21T00:00:00Z", 90, 0, 23.43, 0.1},
		// Polar night.
		{"North Pole in December", "2024-12-21T12:00:00Z", 90, 0, -23.43, 0.1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			at, err := time.Parse(time.RFC3339, tc.t)
			if err != nil {
				t.Fatal(err)
			}
			got := sunGeometricElevation(at, tc.lat, tc.lon)
			if math.Abs(got-tc.want) > tc.tol {
				t.Errorf("elevation = %.3f°, want %.3f ± %.2f", got, tc.want, tc.tol)
			}
		})
	}
}

func TestSunElevationDayNight(t *testing.T) {
	loc, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		hour      int
		dark, day bool
	}{{0, true, false}, {3, true, false}, {6, false, true}, {12, false, true}, {18, false, true}, {19, false, false}, {21, true, false}} {
		at := time.Date(2026, 6, 21, tc.hour, 0, 0, 0, loc)
		el := sunElevation(at, 31.23, 121.47)
		if dark := el < DarkElevation; dark != tc.dark {
			t.Errorf("%02d:00 elevation %.1f: dark=%v, want %v", tc.hour, el, dark, tc.dark)
		}
		if day := el > DayElevation; day != tc.day {
			t.Errorf("%02d:00 elevation %.1f: day=%v, want %v", tc.hour, el, day, tc.day)
		}
	}
}

func TestRefraction(t *testing.T) {
	if r := refraction(89); r != 0 {
		t.Errorf("refraction near zenith = %v, want 0", r)
	}
	// About half a degree at the horizon, less higher up.
	if r := refraction(0); r < 0.4 || r > 0.6 {
		t.Errorf("refraction at the horizon = %.3f°, want about 0.48", r)
	}
	prev := math.Inf(1)
	for el := -0.5; el < 85; el += 0.5 {
		r := refraction(el)
		if r > prev+1e-9 || r < 0 {
			t.Fatalf("refraction not decreasing with elevation at %.1f: %.4f after %.4f", el, r, prev)
		}
		prev = r
	}
}
