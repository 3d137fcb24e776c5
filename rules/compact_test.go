package rules

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
)

// TestRingRebase pushes samples across more than the 49 days a uint32 of
// milliseconds spans: the ring re-bases and the window still sees the
// right samples at the right times.
func TestRingRebase(t *testing.T) {
	day := int64(24 * time.Hour)
	tests := []struct {
		name  string
		times []int64 // ns
		keep  int64
		want  []int64 // sample times kept, oldest first
	}{
		{"steady past 49 days", []int64{0, 30 * day, 45 * day, 49 * day, 50 * day, 51 * day}, 7 * day, []int64{45 * day, 49 * day, 50 * day, 51 * day}},
		{"gap longer than the offsets", []int64{0, 1, 100 * day, 100*day + 1e6}, 7 * day, []int64{100 * day, 100*day + 1e6}},
		{"clock goes back", []int64{10 * day, 11 * day, 9 * day, 9*day + 60e9}, 7 * day, []int64{9 * day, 9*day + 60e9}},
		{"before 1970", []int64{-2 * day, -day, -day + 1e6}, 7 * day, []int64{-2 * day, -day, -day + 1e6}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r ring
			for i, ts := range tc.times {
				r.push(ts, devices.FloatValue(float64(i)), tc.keep, 1000)
			}
			if int(r.n) != len(tc.want) {
				t.Fatalf("n = %d, want %d", r.n, len(tc.want))
			}
			for i, w := range tc.want {
				if ts, _ := r.at(i); ts != w {
					t.Errorf("sample %d at %d, want %d", i, ts, w)
				}
			}
			now := tc.want[len(tc.want)-1]
			got, ok := r.aggregate(opCount, now, tc.keep)
			if !ok || got != float64(len(tc.want)) {
				t.Errorf("count over the window = %v %v, want %d", got, ok, len(tc.want))
			}
		})
	}
}

// TestRingTypes keeps bool, int and string fields: their samples come back
// with their type, count() counts true bools and changes() compares
// strings and NaN floats as devices.Value.Equal does.
func TestRingTypes(t *testing.T) {
	s := int64(time.Second)
	nan := math.NaN()
	tests := []struct {
		name string
		vals []devices.Value
		op   aggOp
		want float64
	}{
		{"bool count", []devices.Value{devices.BoolValue(true), devices.BoolValue(false), devices.BoolValue(true)}, opCount, 2},
		{"bool changes", []devices.Value{devices.BoolValue(true), devices.BoolValue(false), devices.BoolValue(true)}, opChanges, 2},
		{"bool avg", []devices.Value{devices.BoolValue(true), devices.BoolValue(false), devices.BoolValue(true), devices.BoolValue(true)}, opAvg, 0.75},
		{"int count", []devices.Value{devices.IntValue(0), devices.IntValue(5), devices.IntValue(0)}, opCount, 3},
		{"int delta", []devices.Value{devices.IntValue(-3), devices.IntValue(5), devices.IntValue(40)}, opDelta, 43},
		{"string changes", []devices.Value{devices.StringValue("a"), devices.StringValue("a"), devices.StringValue("b"), devices.StringValue("")}, opChanges, 2},
		{"string count", []devices.Value{devices.StringValue("a"), {}, devices.StringValue("b")}, opCount, 2},
		{"NaN equals NaN for changes", []devices.Value{devices.FloatValue(nan), devices.FloatValue(nan), devices.FloatValue(1)}, opChanges, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r ring
			for i, v := range tc.vals {
				r.push(int64(i+1)*s, v, 100*s, 100)
			}
			got, ok := r.aggregate(tc.op, int64(len(tc.vals))*s, 100*s)
			if !ok || got != tc.want {
				t.Fatalf("got %v %v, want %v", got, ok, tc.want)
			}
			k := 0
			for _, v := range tc.vals {
				if !v.Valid() {
					continue
				}
				if _, g := r.at(k); !g.Equal(v) {
					t.Errorf("sample %d = %+v, want %+v", k, g, v)
				}
				k++
			}
		})
	}
}

// TestAssetStateLastAndPrev stores readings compactly and reads them back
// exactly, with and without the previous reading kept, across a reload
// that starts keeping it (the reading before the reload becomes prev).
func TestAssetStateLastAndPrev(t *testing.T) {
	r1 := []devices.Value{devices.FloatValue(1.5), devices.IntValue(-7), {}, devices.StringValue("fw1"),
		devices.BoolValue(true), devices.StringValue("ok"), devices.FloatValue(math.Inf(-1)), devices.IntValue(math.MaxInt64)}
	r2 := []devices.Value{devices.FloatValue(2.5), {}, devices.IntValue(3), devices.StringValue("fw2"),
		devices.BoolValue(false), {}, devices.FloatValue(0), devices.IntValue(math.MinInt64)}
	r3 := []devices.Value{devices.FloatValue(3.5), devices.IntValue(1), devices.IntValue(4), {},
		devices.BoolValue(true), devices.StringValue("alarm"), devices.FloatValue(-1), devices.IntValue(0)}
	check := func(t *testing.T, s *assetState, last, prev []devices.Value) {
		t.Helper()
		got := s.lastValues(nil)
		if len(got) != len(last) {
			t.Fatalf("last has %d values, want %d", len(got), len(last))
		}
		for i := range last {
			if got[i] != last[i] {
				t.Errorf("last[%d] = %+v, want %+v", i, got[i], last[i])
			}
			var want devices.Value
			if prev != nil {
				want = prev[i]
			}
			if p := s.prevValue(i); p != want {
				t.Errorf("prev[%d] = %+v, want %+v", i, p, want)
			}
		}
	}
	noPrev, withPrev := &kindSet{}, &kindSet{usesPrev: true}
	var s assetState
	s.record(r1, 1, 1, noPrev, 16)
	check(t, &s, r1, nil)
	s.record(r2, 2, 2, noPrev, 16)
	check(t, &s, r2, nil)
	s.record(r3, 3, 3, withPrev, 16) // a reload brought in a rule reading prev()
	check(t, &s, r3, r2)
	s.record(r1, 4, 4, withPrev, 16)
	check(t, &s, r1, r3)
	s.record(r2, 5, 5, withPrev, 16)
	check(t, &s, r2, r1)
	if n := testing.AllocsPerRun(100, func() { s.record(r3, 6, 6, withPrev, 16) }); n != 0 {
		t.Errorf("record with prev allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { s.record(r3, 6, 6, noPrev, 16) }); n != 0 {
		t.Errorf("record without prev allocates %v times", n)
	}
	s.record(r1[:3], 7, 7, withPrev, 16) // another layout: no prev
	check(t, &s, r1[:3], []devices.Value{{}, {}, {}})
}

// TestRecordDropsUnusedHistory: after a reload that no longer reads a
// field through a window, the asset's ring for it is freed on its next
// reading; the other field's history is kept.
func TestRecordDropsUnusedHistory(t *testing.T) {
	vals := []devices.Value{devices.FloatValue(1), devices.FloatValue(2), devices.FloatValue(3)}
	both := &kindSet{keep: []int64{int64(time.Hour), 0, int64(time.Hour)}}
	one := &kindSet{keep: []int64{0, 0, int64(time.Hour)}}
	var s assetState
	s.record(vals, 1e9, 1e9, both, 16)
	s.record(vals, 2e9, 2e9, both, 16)
	if s.ringOf(0) == nil || s.ringOf(2) == nil || s.ringOf(1) != nil {
		t.Fatalf("rings kept for fields %v, want 0 and 2", ringFields(&s))
	}
	s.record(vals, 3e9, 3e9, one, 16)
	if s.ringOf(0) != nil || s.ringOf(2) == nil || s.ringOf(2).n != 3 {
		t.Fatalf("after the reload rings kept for fields %v, want only 2 with 3 samples", ringFields(&s))
	}
}

func ringFields(s *assetState) []int {
	var fs []int
	for _, r := range s.hist {
		fs = append(fs, int(r.field))
	}
	return fs
}

// TestAggregateMatchesNaive compares aggregate (binary-searched bounds,
// one pass per operation) with a plain scan of the samples over random
// series, windows and evaluation times.
func TestAggregateMatchesNaive(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		var r ring
		typ := []devices.Type{devices.Float, devices.Int, devices.Bool}[round%3]
		ts := int64(0)
		for k := 0; k < 1+rnd.IntN(60); k++ {
			ts += int64(rnd.IntN(5)) * int64(time.Second) // equal times too
			var v devices.Value
			switch typ {
			case devices.Float:
				v = devices.FloatValue(float64(rnd.IntN(7)) - 3)
			case devices.Int:
				v = devices.IntValue(int64(rnd.IntN(7)))
			default:
				v = devices.BoolValue(rnd.IntN(2) == 0)
			}
			r.push(ts, v, int64(time.Minute), 1000)
		}
		for _, op := range []aggOp{opAvg, opMin, opMax, opSum, opCount, opDelta, opRate, opChanges} {
			now := ts - int64(rnd.IntN(20))*int64(time.Second)
			w := int64(1+rnd.IntN(90)) * int64(time.Second)
			got, gok := r.aggregate(op, now, w)
			want, wok := naiveAggregate(&r, op, now, w)
			if gok != wok || gok && math.Abs(got-want) > 1e-9 {
				t.Fatalf("round %d op %d now %d w %d: got %v %v, want %v %v", round, op, now, w, got, gok, want, wok)
			}
		}
	}
}

// naiveAggregate is the aggregate of the samples in (now-window, now], by a
// plain scan.
func naiveAggregate(r *ring, op aggOp, now, window int64) (float64, bool) {
	var xs, ts []float64
	var vs []devices.Value
	for i := 0; i < int(r.n); i++ {
		t, v := r.at(i)
		if t <= now-window || t > now {
			continue
		}
		xs, ts, vs = append(xs, v.Float64()), append(ts, float64(t)), append(vs, v)
	}
	n := len(xs)
	sum, mn, mx := 0.0, math.Inf(1), math.Inf(-1)
	for _, x := range xs {
		sum, mn, mx = sum+x, math.Min(mn, x), math.Max(mx, x)
	}
	switch op {
	case opAvg:
		return sum / float64(n), n > 0
	case opMin:
		return mn, n > 0
	case opMax:
		return mx, n > 0
	case opSum:
		return sum, true
	case opCount:
		if r.typ == devices.Bool {
			return sum, true
		}
		return float64(n), true
	case opDelta:
		if n < 2 {
			return 0, false
		}
		return xs[n-1] - xs[0], true
	case opRate:
		if n < 2 || ts[n-1] == ts[0] {
			return 0, false
		}
		return (xs[n-1] - xs[0]) / ((ts[n-1] - ts[0]) / 1e9), true
	case opChanges:
		c := 0
		for i := 1; i < n; i++ {
			if !vs[i].Equal(vs[i-1]) {
				c++
			}
		}
		return float64(c), true
	}
	return 0, false
}

// TestSnapshotSeenRoundTrip writes when assets were last seen, with ids
// that need JSON escaping, and reads it back as the state file's JSON
// object: the same times, and assets never seen left out.
func TestSnapshotSeenRoundTrip(t *testing.T) {
	cat := testCatalog(t)
	ids := []string{"B1", "垃圾桶-9", "<&>", "a'b", "caf\u00e9", "x\x7f"}
	var as []*devices.Asset
	for _, id := range append(ids, "never") {
		as = append(as, &devices.Asset{ID: id, Model: "binsense-ws3", Lat: 31.2, Lon: 121.5, MQTT: &devices.MQTTAddr{Topic: "bins/" + id}})
	}
	inv, err := devices.NewInventory(cat, as)
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/state.db"
	t0 := time.Date(2026, 6, 21, 4, 0, 0, 0, time.UTC)
	e, _ := newTestEngine(t, Options{StatePath: path, Now: func() time.Time { return t0 }}, inv, cat)
	want := map[string]int64{}
	for i, id := range ids {
		r := &devices.Reading{}
		r.Reset(inv.Lookup(id))
		r.Time = t0.Add(time.Duration(i+1) * time.Second)
		r.Received = r.Time.Add(time.Millisecond)
		e.Eval(t.Context(), r)
		want[id] = r.Received.UnixNano()
	}
	if err := e.Snapshot(); err != nil {
		t.Fatal(err)
	}
	_, got, err := e.db.load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("seen %v, want %v", got, want)
	}
	for id, ns := range want {
		if got[id] != ns {
			t.Errorf("%q seen at %d, want %d", id, got[id], ns)
		}
	}
	// Plain ids (nearly all) are appended without encoding/json.
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf = appendJSONString(buf[:0], "SL-001-01") }); n != 0 {
		t.Errorf("appending a plain id allocates %v times", n)
	}

}
