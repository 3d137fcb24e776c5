package rules

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestAssetHistoryAndLastReading(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 2)
	e, _ := newTestEngine(t, Options{}, inv, cat, shippedRules(t)...)
	ctx := context.Background()

	if _, ok := e.LastReading("G0"); ok {
		t.Error("LastReading before any reading: ok")
	}
	if f, s := e.AssetHistory("G0"); f != nil || s != nil {
		t.Errorf("AssetHistory before any reading = %v %v", f, s)
	}
	if _, ok := e.LastReading("nope"); ok {
		t.Error("LastReading of an unknown asset: ok")
	}
	if f, _ := e.AssetHistory("nope"); f != nil {
		t.Error("AssetHistory of an unknown asset is not nil")
	}

	a := inv.Lookup("G0")
	pressures := []float64{300, 301, 299, 200, 199}
	for i, p := range pressures {
		r := reading(t, a, min_(i), map[string]any{"outlet_pressure_kpa": p, "inlet_pressure_kpa": 600.0})
		r.Received = min_(i).Add(2 * time.Second)
		e.Eval(ctx, r)
	}
	// delta(outlet_pressure_kpa, "5m") keeps outlet history; inlet has none.
	fields, series := e.AssetHistory("G0")
	if len(fields) != 1 || fields[0] != "outlet_pressure_kpa" {
		t.Fatalf("history fields = %v, want [outlet_pressure_kpa]", fields)
	}
	if len(series[0]) != len(pressures) {
		t.Fatalf("history has %d samples, want %d", len(series[0]), len(pressures))
	}
	for i, s := range series[0] {
		if !s.Time.Equal(min_(i)) || s.Value.Float64() != pressures[i] {
			t.Errorf("sample %d = %v %v, want %v %v", i, s.Time, s.Value, min_(i), pressures[i])
		}
	}
	// The copy is the caller's: changing it leaves the engine alone.
	series[0][0].Value.F = -1
	if _, again := e.AssetHistory("G0"); again[0][0].Value.F != 300 {
		t.Error("AssetHistory returned the engine's own storage")
	}

	r, ok := e.LastReading("G0")
	if !ok || r.Asset != a || !r.Time.Equal(min_(4)) || !r.Received.Equal(min_(4).Add(2*time.Second)) {
		t.Fatalf("LastReading = %+v %v", r, ok)
	}
	i, _ := a.Schema.Index("outlet_pressure_kpa")
	if r.Values[i].Float64() != 199 {
		t.Errorf("last outlet pressure = %v, want 199", r.Values[i])
	}
	r.Values[i].F = 0
	if r2, _ := e.LastReading("G0"); r2.Values[i].F != 199 {
		t.Error("LastReading returned the engine's own storage")
	}

	seen := e.LastSeen(nil)
	if len(seen) != inv.Len() {
		t.Fatalf("LastSeen has %d entries, want %d", len(seen), inv.Len())
	}
	for j, ns := range seen {
		want := int64(0)
		if j == a.Seq {
			want = min_(4).Add(2 * time.Second).UnixNano()
		}
		if ns != want {
			t.Errorf("LastSeen[%d] (%s) = %d, want %d", j, inv.Assets[j].ID, ns, want)
		}
	}
	if n := testing.AllocsPerRun(10, func() { seen = e.LastSeen(seen) }); n != 0 {
		t.Errorf("LastSeen into a big enough slice allocates %v times", n)
	}
}

func TestAssetRules(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 4)
	const grouped = `rules:
  - id: streetlight.circuit_low
    kind: streetlight
    when: current_a < 0.03
    group_by: [circuit]
    group: {at_least: 2}
    for: 1m
    severity: major
    case: {service: s, title: t}
  - id: streetlight.lamp_low
    kind: streetlight
    description: one lamp
    when: current_a < 0.03
    for: 2m
    severity: minor
    shadow: true
    case: {service: s, title: t}
  - id: streetlight.quiet
    kind: streetlight
    absent: 10m
    severity: minor
    case: {service: s, title: t}
  - id: cabinet.leak
    kind: cabinet
    when: leakage_ma > 30
    severity: minor
    case: {service: s, title: t}
`
	f := writeRules(t, t.TempDir(), "r.yaml", grouped)
	e, _ := newTestEngine(t, Options{}, inv, cat, f)
	ctx := context.Background()
	feed := func(id string, m int, amps float64) {
		e.Eval(ctx, reading(t, inv.Lookup(id), min_(m), map[string]any{"current_a": amps}))
	}
	type want struct {
		rule    string
		state   State
		since   time.Time
		meets   bool
		members int
		need    int
	}
	check := func(step, id string, wants []want) {
		t.Helper()
		got := e.AssetRules(id)
		if len(got) != len(wants) {
			t.Fatalf("%s: AssetRules(%s) = %d rules %+v, want %d", step, id, len(got), got, len(wants))
		}
		for i, w := range wants {
			g := got[i]
			if g.Rule != w.rule || g.State != w.state || !g.Since.Equal(w.since) || g.Meets != w.meets ||
				g.Members != w.members || g.Need != w.need || !g.Healthy {
				t.Errorf("%s: %s rule %d = %+v, want %+v", step, id, i, g, w)
			}
			if (g.State == Inactive) != (g.EpisodeID == "") {
				t.Errorf("%s: %s %s state %s with episode %q", step, id, g.Rule, g.State, g.EpisodeID)
			}
		}
	}
	check("start", "L0", []want{
		{"streetlight.circuit_low", Inactive, time.Time{}, false, 0, 2},
		{"streetlight.lamp_low", Inactive, time.Time{}, false, 0, 1},
		{"streetlight.quiet", Inactive, time.Time{}, false, 0, 1},
	})
	feed("L0", 0, 0.0)
	check("one lamp low", "L0", []want{
		{"streetlight.circuit_low", Inactive, time.Time{}, true, 1, 2},
		{"streetlight.lamp_low", Pending, min_(0), true, 1, 1},
		{"streetlight.quiet", Inactive, time.Time{}, false, 0, 1},
	})
	feed("L1", 1, 0.01)
	check("two lamps low", "L1", []want{
		{"streetlight.circuit_low", Pending, min_(1), true, 2, 2},
		{"streetlight.lamp_low", Pending, min_(1), true, 1, 1},
		{"streetlight.quiet", Inactive, time.Time{}, false, 0, 1},
	})
	feed("L2", 2, 0.5)
	feed("L0", 2, 0.0)
	check("circuit fired", "L2", []want{
		{"streetlight.circuit_low", Firing, min_(2), false, 2, 2},
		{"streetlight.lamp_low", Inactive, time.Time{}, false, 0, 1},
		{"streetlight.quiet", Inactive, time.Time{}, false, 0, 1},
	})
	check("lamp fired", "L0", []want{
		{"streetlight.circuit_low", Firing, min_(2), true, 2, 2},
		{"streetlight.lamp_low", Firing, min_(2), true, 1, 1},
		{"streetlight.quiet", Inactive, time.Time{}, false, 0, 1},
	})
	got := e.AssetRules("L0")
	if g := got[0]; g.Group != "C0" || !g.Grouped || g.Condition != "current_a < 0.03" || g.Severity != "major" {
		t.Errorf("grouped rule identity %+v", g)
	}
	if g := got[1]; g.Group != "L0" || g.Grouped || !g.Shadow || g.Description != "one lamp" {
		t.Errorf("per-lamp rule identity %+v", g)
	}
	if g := got[2]; g.Condition != "absent 10m0s" {
		t.Errorf("absence rule condition %q", g.Condition)
	}
	if rs := e.AssetRules("nope"); rs != nil {
		t.Errorf("AssetRules of an unknown asset = %v", rs)
	}
	if rs := e.AssetRules("G0"); len(rs) != 0 {
		t.Errorf("a gas station is watched by %v", rs)
	}
}

// TestInspectConcurrent reads while readings are evaluated; run with -race.
func TestInspectConcurrent(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 2)
	e, _ := newTestEngine(t, Options{}, inv, cat, shippedRules(t)...)
	a := inv.Lookup("G1")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		var seen []int64
		for {
			select {
			case <-stop:
				return
			default:
			}
			e.AssetHistory("G1")
			e.LastReading("G1")
			e.AssetRules("G1")
			seen = e.LastSeen(seen)
		}
	}()
	for i := 0; i < 300; i++ {
		e.Eval(context.Background(), reading(t, a, t0.Add(time.Duration(i)*time.Second), map[string]any{"outlet_pressure_kpa": 300.0 - float64(i)}))
	}
	close(stop)
	wg.Wait()
	if _, s := e.AssetHistory("G1"); len(s) != 1 || len(s[0]) != 300 {
		t.Errorf("history after concurrent reads: %d series", len(s))
	}
}
