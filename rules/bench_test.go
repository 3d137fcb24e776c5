package rules

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
)

// ruleTemplates are typical conditions per kind; %v is a varying threshold
// so that every generated rule is distinct.
var ruleTemplates = map[string][]string{
	"streetlight": {
		`is_dark() && (!relay_on || current_a < %v)`,
		`relay_on && voltage_v > 200 + %v`,
		`avg(current_a, "10m") > %v + 5`,
		`relay_on && current_a >= 0.03 && abs(current_a - asset.rated_power_w * dim_level / 100 / voltage_v) > %v`,
		`tilt_alarm || abs(tilt_deg) > 10 + %v`,
	},
	"cabinet":     {`leakage_ma > 30 + %v`, `!mains_ok && va_v < %v`, `max(leakage_ma, "5m") > 50 + %v`},
	"gas_station": {`outlet_pressure_kpa < asset.pressure_min_kpa - %v || outlet_pressure_kpa > asset.pressure_max_kpa + %v`, `delta(outlet_pressure_kpa, "5m") < -25 - %v`, `methane_lel_pct >= 20 + %v`},
	"waste_bin":   {`fill_pct >= 90 + %v`, `temperature_c > 70 + %v || (temperature_c > 50 && delta(temperature_c, "10m") > 15)`},
}

// genRules returns a rule file with n rules spread over the kinds (or only
// the given kind).
func genRules(n int, only string) string {
	kinds := []string{"streetlight", "cabinet", "gas_station", "waste_bin"}
	if only != "" {
		kinds = []string{only}
	}
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := 0; i < n; i++ {
		k := kinds[i%len(kinds)]
		tpls := ruleTemplates[k]
		tpl := tpls[(i/len(kinds))%len(tpls)]
		th := fmt.Sprintf("%d.%03d", i/1000, i%1000)
		expr := strings.ReplaceAll(tpl, "%v", th)
		fmt.Fprintf(&b, "  - id: bench.%s_%d\n    kind: %s\n    when: '%s'\n    for: 5m\n    severity: minor\n    case: {service: s, title: \"t {{ .Asset.ID }}\"}\n",
			k, i, k, expr)
	}
	return b.String()
}

// BenchmarkEval measures one streetlight reading against N loaded rules of
// mixed kinds; kind=streetlight loads only the streetlight rules the mixed
// 1000 contain, to show that the other kinds cost nothing.
func BenchmarkEval(b *testing.B) {
	cat := testCatalog(b)
	inv := testInventory(b, cat, 64)
	cases := []struct {
		name string
		n    int
		only string
	}{{"rules=1", 1, ""}, {"rules=100", 100, ""}, {"rules=1000", 1000, ""}, {"rules=250/streetlight-only", 250, "streetlight"}}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			f := writeRules(b, b.TempDir(), "r.yaml", genRules(tc.n, tc.only))
			e, _ := newTestEngine(b, Options{Location: time.UTC, EvalBudget: 50 * time.Millisecond}, inv, cat, f)
			kindRules := len(e.set.Load().kinds["streetlight"].rules)
			a := inv.Lookup("L1")
			t0 := time.Date(2026, 6, 21, 14, 0, 0, 0, time.UTC) // 22:00 in Shanghai: dark
			r := reading(b, a, t0, map[string]any{"relay_on": true, "current_a": 0.43, "voltage_v": 230.0,
				"dim_level": 100, "power_w": 99.0, "tilt_alarm": false, "tilt_deg": 0.3})
			ctx := context.Background()
			// Warm up: fill windows and pools.
			for i := 0; i < 100; i++ {
				r.Time = t0.Add(time.Duration(i) * time.Second)
				e.Eval(ctx, r)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r.Time = t0.Add(time.Duration(100+i) * time.Second)
				e.Eval(ctx, r)
			}
			b.StopTimer()
			sec := b.Elapsed().Seconds()
			if sec > 0 {
				b.ReportMetric(float64(b.N)*float64(kindRules)/sec, "evals/s")
				b.ReportMetric(float64(kindRules), "kind-rules")
			}
		})
	}
}

// BenchmarkEvalParallel is BenchmarkEval/rules=1000 from all CPUs, readings
// spread over 64 lamps.
func BenchmarkEvalParallel(b *testing.B) {
	cat := testCatalog(b)
	inv := testInventory(b, cat, 64)
	f := writeRules(b, b.TempDir(), "r.yaml", genRules(1000, ""))
	e, _ := newTestEngine(b, Options{Location: time.UTC, EvalBudget: 50 * time.Millisecond}, inv, cat, f)
	kindRules := len(e.set.Load().kinds["streetlight"].rules)
	t0 := time.Date(2026, 6, 21, 14, 0, 0, 0, time.UTC)
	ctx := context.Background()
	var next = make(chan int, 64)
	for i := 0; i < 64; i++ {
		next <- i
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		a := inv.Lookup(fmt.Sprintf("L%d", <-next))
		r := reading(b, a, t0, map[string]any{"relay_on": true, "current_a": 0.43, "voltage_v": 230.0,
			"dim_level": 100, "power_w": 99.0, "tilt_alarm": false, "tilt_deg": 0.3})
		i := 0
		for pb.Next() {
			r.Time = t0.Add(time.Duration(i) * time.Second)
			i++
			e.Eval(ctx, r)
		}
	})
	b.StopTimer()
	if sec := b.Elapsed().Seconds(); sec > 0 {
		b.ReportMetric(float64(b.N)*float64(kindRules)/sec, "evals/s")
	}
}

// BenchmarkEvalComparisons is 250 streetlight rules without arithmetic (field
// comparisons, windows, sun and time helpers): what remains per reading is
// the boxing of the reading's fields and aggregates, once per reading, so
// allocations do not grow with the number of rules.
func BenchmarkEvalComparisons(b *testing.B) {
	cat := testCatalog(b)
	inv := testInventory(b, cat, 4)
	tpls := []string{`current_a < 0.0%d`, `is_dark() && !relay_on && dim_level > %d`, `avg(current_a, "10m") > 5.%d`,
		`voltage_v > 260 + %d || tilt_alarm`, `between("01:00", "05:00") && power_w > 1%d`}
	var sb strings.Builder
	sb.WriteString("rules:\n")
	for i := 0; i < 250; i++ {
		fmt.Fprintf(&sb, "  - id: bench.c%d\n    kind: streetlight\n    when: '%s'\n    severity: minor\n    case: {service: s, title: t}\n",
			i, fmt.Sprintf(tpls[i%len(tpls)], i))
	}
	e, _ := newTestEngine(b, Options{Location: time.UTC, EvalBudget: 50 * time.Millisecond}, inv, cat, writeRules(b, b.TempDir(), "r.yaml", sb.String()))
	a := inv.Lookup("L1")
	t0 := time.Date(2026, 6, 21, 4, 0, 0, 0, time.UTC)
	r := reading(b, a, t0, map[string]any{"relay_on": true, "current_a": 0.43, "voltage_v": 230.0,
		"dim_level": 100, "power_w": 99.0, "tilt_alarm": false})
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		r.Time = t0.Add(time.Duration(i) * time.Second)
		e.Eval(ctx, r)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.Time = t0.Add(time.Duration(100+i) * time.Second)
		e.Eval(ctx, r)
	}
	b.StopTimer()
	if sec := b.Elapsed().Seconds(); sec > 0 {
		b.ReportMetric(float64(b.N)*250/sec, "evals/s")
	}
}

// BenchmarkEvalDisplay is one streetlight reading against one rule with
// the display history off and on (16 samples): the per-reading cost of
// keeping every numeric field's recent values.
func BenchmarkEvalDisplay(b *testing.B) {
	cat := testCatalog(b)
	inv := testInventory(b, cat, 64)
	for _, tc := range []struct {
		name string
		n    int
	}{{"display=off", -1}, {"display=16", 16}} {
		b.Run(tc.name, func(b *testing.B) {
			f := writeRules(b, b.TempDir(), "r.yaml", genRules(1, "streetlight"))
			e, _ := newTestEngine(b, Options{Location: time.UTC, EvalBudget: 50 * time.Millisecond, DisplaySamples: tc.n}, inv, cat, f)
			a := inv.Lookup("L1")
			t0 := time.Date(2026, 6, 21, 14, 0, 0, 0, time.UTC)
			r := reading(b, a, t0, map[string]any{"relay_on": true, "current_a": 0.43, "voltage_v": 230.0,
				"dim_level": 100, "power_w": 99.0, "tilt_alarm": false, "tilt_deg": 0.3})
			ctx := context.Background()
			for i := 0; i < 100; i++ {
				r.Time = t0.Add(time.Duration(i) * time.Second)
				e.Eval(ctx, r)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r.Time = t0.Add(time.Duration(100+i) * time.Second)
				e.Eval(ctx, r)
			}
		})
	}
}

// BenchmarkEvalDisplayPush is the display history's part of a streetlight
// reading alone (16 samples, 13 numeric fields), steadier than the
// difference of two whole-reading benchmarks on a busy machine.
func BenchmarkEvalDisplayPush(b *testing.B) {
	s := testCatalog(b).Kinds["streetlight"]
	vals := make([]devices.Value, len(s.Fields))
	for i := range vals {
		vals[i] = devices.FloatValue(float64(i))
	}
	var d display
	ns := int64(1e18)
	b.ReportAllocs()
	for b.Loop() {
		ns += 1e9
		d.push(ns, vals, 16, s)
	}
}

// wasteBinCity is an engine with the shipped rules over n waste bins, and
// the time their readings start at.
func wasteBinCity(b *testing.B, n int) (*Engine, *devices.Inventory, time.Time) {
	cat := testCatalog(b)
	as := make([]*devices.Asset, n)
	for i := range as {
		as[i] = &devices.Asset{ID: fmt.Sprintf("B%05d", i), Model: "binsense-ws3", Lat: 31.2, Lon: 121.5,
			MQTT: &devices.MQTTAddr{Topic: fmt.Sprintf("bins/B%05d", i)}, Attrs: map[string]any{"capacity_l": 240.0}}
	}
	inv, err := devices.NewInventory(cat, as)
	if err != nil {
		b.Fatal(err)
	}
	e, _ := newTestEngine(b, Options{Location: time.UTC, EvalBudget: 50 * time.Millisecond}, inv, cat, shippedRules(b)...)
	return e, inv, time.Date(2026, 6, 21, 4, 0, 0, 0, time.UTC)
}

// BenchmarkEvalWasteBin is the gateway's per-reading cost of the rule
// engine in issue 6's benchmark city: one waste-bin reading against the
// shipped rules (4 condition rules and 1 absence rule of kind waste_bin),
// round-robin over 10,000 bins a minute apart, with the default display
// history: recording the reading, its window sample and display row, and
// evaluating the rules.
func BenchmarkEvalWasteBin(b *testing.B) {
	const n = 10000
	e, inv, t0 := wasteBinCity(b, n)
	rs := make([]*devices.Reading, n)
	for i, a := range inv.Assets {
		rs[i] = reading(b, a, t0, map[string]any{"fill_pct": 40.0, "distance_cm": 60, "temperature_c": 21.5,
			"tilt_deg": 2.0, "lid_open": false, "battery_pct": 88, "battery_v": 3.61, "rssi_dbm": -87, "snr_db": 7.5,
			"firmware": "3.1.4"})
	}
	ctx := context.Background()
	i := 0
	next := func() {
		r := rs[i%n]
		r.Time = t0.Add(time.Duration(i/n) * time.Minute)
		r.Received = r.Time
		e.Eval(ctx, r)
		i++
	}
	for range 12 * n { // fill windows and display histories
		next()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		next()
	}
}

// BenchmarkEvalWasteBinParallel is BenchmarkEvalWasteBin from all CPUs,
// each goroutine on its own share of the 10,000 bins: what the per-reading
// work shares between cores (metrics, pools, the rules' state).
func BenchmarkEvalWasteBinParallel(b *testing.B) {
	const n = 10000
	e, inv, t0 := wasteBinCity(b, n)
	vals := map[string]any{"fill_pct": 40.0, "distance_cm": 60, "temperature_c": 21.5, "tilt_deg": 2.0, "lid_open": false,
		"battery_pct": 88, "battery_v": 3.61, "rssi_dbm": -87, "snr_db": 7.5, "firmware": "3.1.4"}
	ctx := context.Background()
	// Worker w owns bins w, w+16, w+32, ... (up to 16 workers); their
	// windows and display histories are filled first.
	parts := make([][]*devices.Reading, 16)
	for i, a := range inv.Assets {
		parts[i%16] = append(parts[i%16], reading(b, a, t0, vals))
	}
	for k := 0; k < 12; k++ {
		for _, rs := range parts {
			for _, r := range rs {
				r.Time = t0.Add(time.Duration(k) * time.Minute)
				r.Received = r.Time
				e.Eval(ctx, r)
			}
		}
	}
	var worker atomic.Int32
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rs := parts[int(worker.Add(1)-1)%16]
		i := 12 * len(rs)
		for pb.Next() {
			r := rs[i%len(rs)]
			r.Time = t0.Add(time.Duration(i/len(rs)) * time.Minute)
			r.Received = r.Time
			e.Eval(ctx, r)
			i++
		}
	})
}
