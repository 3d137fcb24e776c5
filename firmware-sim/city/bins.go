package city

import (
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/firmware-sim/faults"
)

// Bin is a waste bin's fill sensor. Its state is a function of time (fill
// since the last collection round), so a bin costs nothing between publishes.
type Bin struct {
	Asset       *devices.Asset
	CapacityL   float64
	DepthCm     float64
	Route       int     // 0-based; route r is collected 20 min × r after each round starts
	RatePerHour float64 // daytime fill rate, %/h

	rng      *rand.Rand
	city     *City
	seed     uint64
	battery0 float64
	rssi     float64
	snr      float64
	tiltBase float64
}

// Daytime (when people throw things away): 07:00 to 22:00 local time; at
// night bins fill at 15 % of the daytime rate.
const (
	dayFrom    = 7 * 60
	dayTo      = 22 * 60
	nightShare = 0.15
	residual   = 2.0 // % left after emptying
)

// dayMinutes returns the daytime minutes in [0, m) minutes after a local
// midnight (m may span several days).
func dayMinutes(m float64) float64 {
	days := math.Floor(m / 1440)
	r := m - days*1440
	return days*(dayTo-dayFrom) + math.Max(0, math.Min(r, dayTo)-dayFrom)
}

// LastCollection returns the latest collection of the bin's route at or
// before simulated time t.
func (b *Bin) LastCollection(t time.Time) time.Time {
	l := t.In(b.city.Loc)
	cs := b.city.collections
	for d := 0; d <= 2; d++ {
		mid := time.Date(l.Year(), l.Month(), l.Day()-d, 0, 0, 0, 0, b.city.Loc)
		for i := len(cs) - 1; i >= 0; i-- {
			at := mid.Add(time.Duration(cs[i]+20*b.Route) * time.Minute)
			if !at.After(t) {
				return at
			}
		}
	}
	return t.Add(-48 * time.Hour)
}

// Fill returns the bin's true fill level in percent at simulated time t.
func (b *Bin) Fill(t time.Time) float64 {
	last := b.LastCollection(t)
	ll := last.In(b.city.Loc)
	m0 := float64(ll.Hour()*60+ll.Minute()) + float64(ll.Second())/60
	m1 := m0 + t.Sub(last).Minutes()
	day := dayMinutes(m1) - dayMinutes(m0)
	night := (m1 - m0) - day
	fill := residual + b.RatePerHour*(day+nightShare*night)/60
	return math.Min(100, fill)
}

// Payload appends the bin's JSON message for environment e to buf (the
// binsense-ws3 shape; ts in unix milliseconds of the device clock).
func (b *Bin) Payload(e *Env, eff *faults.Effects, buf []byte) []byte {
	fill := b.Fill(e.Sim) + 0.5*b.rng.NormFloat64()
	fill = math.Max(0, math.Min(100, fill))
	lid := false
	if eff.Has(faults.BinOverflow) {
		fill, lid = 100, true
	}
	fill = math.Round(fill*10) / 10
	dist := math.Max(0, math.Round(b.DepthCm*(1-fill/100)))
	temp := e.ambient + 1.5 + 0.3*b.rng.NormFloat64()
	if ff := eff.Get(faults.BinFire); ff != nil {
		temp = math.Min(ff.Number("max", 150), temp+math.Max(0, ff.Number("rate_per_min", 15)*ff.Age(e.Wall).Minutes()))
	}
	tilt := b.tiltBase + 0.2*b.rng.NormFloat64()
	if kf := eff.Get(faults.BinKnockedOver); kf != nil {
		tilt, lid = kf.Number("tilt", 90)+2*b.rng.NormFloat64(), true
	}
	batt := math.Max(0, math.Floor(b.battery0-0.3*e.Since/86400))
	battV := 3.0 + 0.0065*batt
	rssi := math.Round(b.rssi + 3*b.rng.NormFloat64())
	snr := b.snr + b.rng.NormFloat64()

	types := false
	if mf := eff.Get(faults.MalformedPayload); mf != nil {
		if mf.String("mode", "syntax") == "syntax" {
			// A truncated frame, as from a radio gateway cutting a message.
			buf = append(buf, `{"ts":`...)
			buf = strconv.AppendInt(buf, e.Wall.UnixMilli(), 10)
			buf = append(buf, `,"fill":{"pct":`...)
			return strconv.AppendFloat(buf, fill, 'f', 1, 64)
		}
		types = true
	}
	buf = append(buf, `{"ts":`...)
	buf = strconv.AppendInt(buf, e.Wall.UnixMilli(), 10)
	buf = append(buf, `,"fill":{"pct":`...)
	if types {
		buf = append(buf, '"')
		buf = strconv.AppendFloat(buf, fill, 'f', 1, 64)
		buf = append(buf, '"')
	} else {
		buf = strconv.AppendFloat(buf, fill, 'f', 1, 64)
	}
	buf = append(buf, `,"dist_cm":`...)
	buf = strconv.AppendInt(buf, int64(dist), 10)
	buf = append(buf, `},"temp_c":`...)
	buf = strconv.AppendFloat(buf, temp, 'f', 1, 64)
	buf = append(buf, `,"tilt_deg":`...)
	buf = strconv.AppendFloat(buf, tilt, 'f', 1, 64)
	buf = append(buf, `,"lid_open":`...)
	if types {
		buf = append(buf, `"no"`...)
	} else {
		buf = strconv.AppendBool(buf, lid)
	}
	buf = append(buf, `,"battery":{"pct":`...)
	buf = strconv.AppendInt(buf, int64(batt), 10)
	buf = append(buf, `,"v":`...)
	buf = strconv.AppendFloat(buf, battV, 'f', 2, 64)
	buf = append(buf, `},"radio":{"rssi":`...)
	buf = strconv.AppendInt(buf, int64(rssi), 10)
	buf = append(buf, `,"snr":`...)
	buf = strconv.AppendFloat(buf, snr, 'f', 1, 64)
	buf = append(buf, `},"fw":`...)
	buf = strconv.AppendQuote(buf, b.city.Config.Bins.Firmware)
	return append(buf, '}')
}
