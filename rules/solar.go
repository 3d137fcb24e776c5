package rules

import (
	"math"
	"time"
)

// Solar position after the NOAA Solar Calculator (Meeus' algorithms as used in
// NOAA's spreadsheet); accurate to well under 0.1° for years 1800–2100, which
// is far better than a streetlight photocell needs.

const deg = math.Pi / 180

// julianDay returns the Julian day of t.
func julianDay(t time.Time) float64 {
	return float64(t.UnixNano())/86400e9 + 2440587.5
}

// sunGeometricElevation returns the sun's elevation above the horizon in
// degrees, without atmospheric refraction, at WGS84 lat/lon (degrees, east
// positive) at time t.
func sunGeometricElevation(t time.Time, lat, lon float64) float64 {
	jc := (julianDay(t) - 2451545) / 36525
	l0 := math.Mod(280.46646+jc*(36000.76983+jc*0.0003032), 360) // geometric mean longitude
	m := 357.52911 + jc*(35999.05029-0.0001537*jc)               // geometric mean anomaly
	e := 0.016708634 - jc*(0.000042037+0.0000001267*jc)          // orbit eccentricity
	mr := m * deg
	c := math.Sin(mr)*(1.914602-jc*(0.004817+0.000014*jc)) + math.Sin(2*mr)*(0.019993-0.000101*jc) + math.Sin(3*mr)*0.000289
	omega := (125.04 - 1934.136*jc) * deg
	appLong := l0 + c - 0.00569 - 0.00478*math.Sin(omega)
	obliq := 23 + (26+(21.448-jc*(46.815+jc*(0.00059-jc*0.001813)))/60)/60 + 0.00256*math.Cos(omega)
	decl := math.Asin(math.Sin(obliq*deg) * math.Sin(appLong*deg))
	y := math.Tan(obliq * deg / 2)
	y *= y
	l0r := l0 * deg
	eqTime := 4 / deg * (y*math.Sin(2*l0r) - 2*e*math.Sin(mr) + 4*e*y*math.Sin(mr)*math.Cos(2*l0r) -
		0.5*y*y*math.Sin(4*l0r) - 1.25*e*e*math.Sin(2*mr)) // minutes
	u := t.UTC()
	minutes := float64(u.Hour()*60+u.Minute()) + (float64(u.Second())+float64(u.Nanosecond())/1e9)/60
	tst := math.Mod(minutes+eqTime+4*lon, 1440)
	if tst < 0 {
		tst += 1440
	}
	ha := tst/4 - 180 // hour angle, degrees
	cosZ := math.Sin(lat*deg)*math.Sin(decl) + math.Cos(lat*deg)*math.Cos(decl)*math.Cos(ha*deg)
	cosZ = math.Max(-1, math.Min(1, cosZ))
	return 90 - math.Acos(cosZ)/deg
}

// sunElevation returns the apparent elevation of the sun's centre in degrees:
// the geometric elevation corrected for atmospheric refraction as NOAA does.
func sunElevation(t time.Time, lat, lon float64) float64 {
	el := sunGeometricElevation(t, lat, lon)
	return el + refraction(el)
}

func refraction(el float64) float64 {
	var r float64 // arc seconds
	switch {
	case el > 85:
		return 0
	case el > 5:
		tn := math.Tan(el * deg)
		r = 58.1/tn - 0.07/(tn*tn*tn) + 0.000086/math.Pow(tn, 5)
	case el > -0.575:
		r = 1735 + el*(-518.2+el*(103.4+el*(-12.79+el*0.711)))
	default:
		r = -20.774 / math.Tan(el*deg)
	}
	return r / 3600
}

// DarkElevation is the sun elevation (degrees) below which is_dark() is true:
// civil dusk, when streetlights must be burning everywhere; between it and
// DayElevation lamps may legitimately be switching.
const (
	DarkElevation = -6.0
	DayElevation  = 6.0
)
