package history

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/influx"
	"github.com/citygw/citygw/rules"
)

// BenchmarkBacktest replays a day of 50 lamps reporting every minute
// (72,000 points, line protocol in memory) through the shipped streetlight
// and cabinet rules; one op is the whole day.
func BenchmarkBacktest(b *testing.B) {
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		b.Fatal(err)
	}
	var assets []*devices.Asset
	for i := 0; i < 50; i++ {
		assets = append(assets, &devices.Asset{ID: fmt.Sprintf("L%d", i), Model: "citylight-slc200", Lat: 31.23, Lon: 121.47,
			District: "310101", Modbus: &devices.ModbusAddr{Host: "127.0.0.1:502", Unit: uint8(i + 1)},
			Attrs: map[string]any{"rated_power_w": 100.0, "circuit": fmt.Sprintf("C%d", i/5), "cabinet": "CAB1"}})
	}
	inv, err := devices.NewInventory(cat, assets)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Date(2026, 6, 21, 0, 0, 0, 0, cst)
	end := start.Add(24 * time.Hour)
	enc := influx.NewEncoder("gw")
	var lines []byte
	r := &devices.Reading{}
	for ts := start; ts.Before(end); ts = ts.Add(time.Minute) {
		for i, a := range inv.Assets {
			r.Reset(a)
			r.Time = ts
			set := func(name string, v devices.Value) {
				k, _ := a.Schema.Index(name)
				r.Values[k] = v
			}
			night := ts.Hour() < 5 || ts.Hour() >= 19
			set("relay_on", devices.BoolValue(night))
			set("dim_level", devices.IntValue(100))
			set("voltage_v", devices.FloatValue(230))
			set("tilt_deg", devices.FloatValue(0.5))
			set("tilt_alarm", devices.BoolValue(false))
			cur := 0.0
			if night && !(i == 7 && ts.Hour() == 22) {
				cur = 0.43
			}
			set("current_a", devices.FloatValue(cur))
			lines = enc.Append(lines, r)
		}
	}
	lp, err := ParseLineProtocol(bytes.NewReader(lines))
	if err != nil {
		b.Fatal(err)
	}
	files := []string{"../../configs/rules/streetlight.yaml", "../../configs/rules/cabinet.yaml"}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rep, err := rules.Backtest(context.Background(), cat, inv, files, lp, rules.BacktestOptions{From: start, To: end, Location: cst, Kinds: []string{"streetlight"}})
		if err != nil {
			b.Fatal(err)
		}
		if rep.Points != len(lp) {
			b.Fatalf("replayed %d of %d points", rep.Points, len(lp))
		}
	}
	b.ReportMetric(float64(len(lp))*float64(b.N)/b.Elapsed().Seconds(), "points/s")
}
