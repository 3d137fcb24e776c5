package rules

import (
	"context"
	"math"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/citygw/citygw/devices"
)

// TestDisplayMemoryPerAsset measures what the display history costs per
// asset for the shipped profiles at the default 16 samples; display's doc
// comment quotes these figures.
func TestDisplayMemoryPerAsset(t *testing.T) {
	cat := testCatalog(t)
	want := map[string]struct{ numeric, buf int }{ // numeric fields; buffer bytes after size-class rounding
		"streetlight": {13, 896}, "cabinet": {20, 1408}, "gas_station": {13, 896}, "waste_bin": {9, 640},
	}
	if got := unsafe.Sizeof(display{}); got != 40 {
		t.Errorf("display is %d bytes per asset, the doc says 40", got)
	}
	const n = 200
	for _, kind := range cat.KindNames() {
		s := cat.Kinds[kind]
		w, ok := want[kind]
		if !ok {
			t.Errorf("kind %s: no figure in the doc", kind)
			continue
		}
		if got := numericFields(s); got != w.numeric {
			t.Errorf("%s: %d numeric fields, doc says %d", kind, got, w.numeric)
		}
		ds := make([]display, n)
		vals := make([]devices.Value, len(s.Fields))
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		for i := range ds {
			ds[i].push(1e18, vals, 16, s)
		}
		runtime.ReadMemStats(&m1)
		per := int(m1.TotalAlloc-m0.TotalAlloc) / n
		t.Logf("%s: %d numeric fields, %d + %d bytes per asset", kind, numericFields(s), per, unsafe.Sizeof(display{}))
		if per != w.buf {
			t.Errorf("%s: buffer %d bytes per asset, doc says %d", kind, per, w.buf)
		}
	}
}

func TestDisplayHistory(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	// No rules loaded: the display history does not depend on them.
	e, _ := newTestEngine(t, Options{Location: time.UTC, DisplaySamples: 16}, inv, cat)
	a := inv.Lookup("L0")
	t0 := time.Date(2026, 6, 21, 12, 0, 0, 0, time.UTC)
	for i := 0; i < 20; i++ {
		vals := map[string]any{"current_a": 0.1 * float64(i), "relay_on": i%2 == 0, "dim_level": i, "fault": "ok"}
		if i == 10 {
			delete(vals, "current_a") // a partial poll: a gap in that field only
		}
		r := reading(t, a, t0.Add(time.Duration(i)*1500*time.Millisecond), vals)
		e.Eval(context.Background(), r)
	}
	fields, series := e.DisplayHistory("L0")
	got := map[string][]Sample{}
	for i, f := range fields {
		got[f] = series[i]
	}
	if len(fields) != 3 || got["fault"] != nil {
		t.Fatalf("fields %v: want current_a, dim_level, relay_on (numeric fields with values; no strings)", fields)
	}
	dim := got["dim_level"]
	if len(dim) != 16 || dim[0].Value != devices.IntValue(4) || dim[15].Value != devices.IntValue(19) ||
		!dim[0].Time.Equal(t0.Add(6*time.Second)) || !dim[15].Time.Equal(t0.Add(19*1500*time.Millisecond)) {
		t.Fatalf("dim_level = %v", dim)
	}
	if r := got["relay_on"]; len(r) != 16 || r[0].Value != devices.BoolValue(true) || r[1].Value != devices.BoolValue(false) {
		t.Fatalf("relay_on = %v", r)
	}
	cur := got["current_a"]
	if len(cur) != 15 || math.Abs(cur[14].Value.F-1.9) > 1e-6 || !cur[6].Time.Equal(t0.Add(11*1500*time.Millisecond)) {
		t.Fatalf("current_a = %v (want 15 samples, the gap at reading 10)", cur)
	}
	if f, _ := e.DisplayHistory("L1"); f != nil {
		t.Fatal("history for an unknown asset")
	}
	if f, _ := e.DisplayHistory("CAB0"); f != nil {
		t.Fatal("history for an asset without readings")
	}

	off, _ := newTestEngine(t, Options{Location: time.UTC, DisplaySamples: -1}, inv, cat)
	off.Eval(context.Background(), reading(t, a, t0, map[string]any{"current_a": 1.0}))
	if f, _ := off.DisplayHistory("L0"); f != nil || off.assets[a.Seq].disp.buf != nil {
		t.Fatal("display history kept while turned off")
	}
}

func TestDisplayPushDoesNotAllocate(t *testing.T) {
	cat := testCatalog(t)
	s := cat.Kinds["streetlight"]
	vals := make([]devices.Value, len(s.Fields))
	for i := range vals {
		vals[i] = devices.FloatValue(1)
	}
	var d display
	ns := int64(1e18)
	d.push(ns, vals, 16, s)
	if n := testing.AllocsPerRun(1000, func() { ns += 1e9; d.push(ns, vals, 16, s) }); n != 0 {
		t.Fatalf("%v allocations per push", n)
	}
}

// TestDisplayRebase: a clock stepping back or a gap longer than the
// offsets reach keeps the history consistent.
func TestDisplayRebase(t *testing.T) {
	s := &devices.Schema{Fields: []devices.SchemaField{{Name: "x", Type: devices.Float}}}
	val := func(f float64) []devices.Value { return []devices.Value{devices.FloatValue(f)} }
	times := func(d *display) (ts []int64, vs []float32) {
		for j := 0; j < int(d.count); j++ {
			ts = append(ts, d.timeAt(j, 4))
			vs = append(vs, d.valueAt(j, 0, 4, 1))
		}
		return
	}
	var d display
	base := int64(1_700_000_000_000) // ms
	d.push(base*1e6, val(1), 4, s)
	d.push((base+1000)*1e6, val(2), 4, s)
	d.push((base-5000)*1e6, val(3), 4, s) // the device clock stepped back 6s
	ts, vs := times(&d)
	if len(ts) != 3 || ts[0] != base || ts[1] != base+1000 || ts[2] != base-5000 || vs[2] != 3 {
		t.Fatalf("after a step back: %v %v", ts, vs)
	}
	later := base + 60*24*3600*1000 // 60 days later: beyond uint32 milliseconds
	d.push(later*1e6, val(4), 4, s)
	ts, vs = times(&d)
	if len(ts) != 1 || ts[0] != later || vs[0] != 4 {
		t.Fatalf("after a 60-day gap: %v %v", ts, vs)
	}
	for i := 1; i <= 6; i++ { // wraps the ring
		d.push((later+int64(i)*1000)*1e6, val(float64(4+i)), 4, s)
	}
	ts, vs = times(&d)
	if len(ts) != 4 || ts[0] != later+3000 || vs[0] != 7 || vs[3] != 10 {
		t.Fatalf("after wrapping: %v %v", ts, vs)
	}
}
