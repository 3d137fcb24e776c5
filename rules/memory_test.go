package rules

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
)

// heapProfile names a file BenchmarkStateMemory writes a heap profile to
// while the engine is alive (its inuse_space shows what the state is made
// of; -memprofile is written after the engine is gone).
var heapProfile = flag.String("rules.heapprofile", "", "write a heap profile with the filled engine alive to this file")

// BenchmarkStateMemory measures what the engine retains per asset for a city
// of waste bins (issue 6's benchmark city: kind waste_bin, profile
// binsense-ws3, the shipped rules) once every asset's windows and display
// history are full: each bin gets 12 readings a minute apart in simulated
// time (more than the longest window the shipped waste_bin rules read,
// delta(temperature_c, "10m"), and than the default display history of 8).
// It reports the heap the engine retains per asset after a GC (B/asset),
// measured from a baseline taken after the inventory is built: the engine's
// per-asset state and its share of the compiled rules (negligible at
// 126,000 assets).
func BenchmarkStateMemory(b *testing.B) {
	cat := testCatalog(b)
	for _, n := range []int{1000, 126000} {
		b.Run(fmt.Sprintf("bins=%d", n), func(b *testing.B) {
			for b.Loop() {
				b.ReportMetric(stateBytesPerAsset(b, cat, n), "B/asset")
			}
		})
	}
}

// stateBytesPerAsset builds an engine over n waste bins with the shipped
// rules, fills their history and returns the heap retained per bin by the
// engine (the inventory does not count).
func stateBytesPerAsset(tb testing.TB, cat *devices.Catalog, n int) float64 {
	as := make([]*devices.Asset, n)
	for i := range as {
		as[i] = &devices.Asset{ID: fmt.Sprintf("B%06d", i), Model: "binsense-ws3", Lat: 31.2 + float64(i%1000)*1e-4,
			Lon: 121.5, District: "310101", MQTT: &devices.MQTTAddr{Topic: fmt.Sprintf("bins/B%06d", i)},
			Attrs: map[string]any{"capacity_l": 240.0}}
	}
	inv, err := devices.NewInventory(cat, as)
	if err != nil {
		tb.Fatal(err)
	}
	t0 := time.Date(2026, 6, 21, 4, 0, 0, 0, time.UTC)
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	e, err := NewEngine(Options{Location: time.UTC, Now: func() time.Time { return t0 }}, cat, inv, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if err := e.Load(shippedRules(tb)...); err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	r := &devices.Reading{}
	for k := 0; k < 12; k++ {
		at := t0.Add(time.Duration(k) * time.Minute)
		for i, a := range inv.Assets {
			r.Reset(a)
			r.Time, r.Received = at.Add(time.Duration(i)*time.Millisecond), at.Add(time.Duration(i)*time.Millisecond)
			set := func(name string, v devices.Value) {
				j, _ := a.Schema.Index(name)
				r.Values[j] = v
			}
			set("fill_pct", devices.FloatValue(float64((i+k)%90)))
			set("distance_cm", devices.IntValue(int64(100-(i+k)%90)))
			set("temperature_c", devices.FloatValue(20+float64(k%5)))
			set("tilt_deg", devices.FloatValue(2))
			set("lid_open", devices.BoolValue(k%3 == 0))
			set("battery_pct", devices.IntValue(80))
			set("battery_v", devices.FloatValue(3.6))
			set("rssi_dbm", devices.IntValue(-87))
			set("snr_db", devices.FloatValue(7.5))
			set("firmware", devices.StringValue("3.1.4"))
			e.Eval(ctx, r)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	if *heapProfile != "" {
		f, err := os.Create(*heapProfile)
		if err != nil {
			tb.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			tb.Fatal(err)
		}
		f.Close()
	}
	runtime.KeepAlive(e)
	runtime.KeepAlive(inv)
	return float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(n)
}
