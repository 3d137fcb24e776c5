package rules

import (
	"math"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
)

func TestRingEvictsByTimeAndCap(t *testing.T) {
	var r ring
	min := int64(time.Minute)
	for i := int64(0); i < 20; i++ {
		r.push(i*min, devices.FloatValue(float64(i)), 5*min, 1000)
	}
	// Keep (now-5m, now]: samples 15..19.
	if r.n != 5 {
		t.Fatalf("n = %d, want 5", r.n)
	}
	if ts, v := r.at(0); ts != 15*min || v.F != 15 {
		t.Fatalf("oldest = %d %v, want sample 15", ts/min, v.F)
	}
	var c ring
	for i := int64(0); i < 100; i++ {
		c.push(i, devices.FloatValue(float64(i)), 1<<62, 10)
	}
	if c.n != 10 || len(c.t) != 10 {
		t.Fatalf("capped ring has n=%d cap=%d, want 10/10", c.n, len(c.t))
	}
	if _, v := c.at(0); v.F != 90 {
		t.Fatalf("oldest after wrap = %v, want 90", v.F)
	}
	if _, v := c.at(9); v.F != 99 {
		t.Fatalf("newest after wrap = %v, want 99", v.F)
	}
}

func TestRingPushDoesNotAllocateInSteadyState(t *testing.T) {
	var r ring
	i := int64(0)
	push := func() { r.push(i, devices.FloatValue(1), 100, 1000); i++ }
	for k := 0; k < 200; k++ {
		push()
	}
	if n := testing.AllocsPerRun(1000, push); n != 0 {
		t.Fatalf("push allocates %v times per call", n)
	}
}

func TestAggregate(t *testing.T) {
	s := int64(time.Second)
	// Samples at 1..6 s: 2, 4, missing, 8, 8, 5 ; strings and bools separately.
	var num ring
	for i, v := range []devices.Value{devices.FloatValue(2), devices.FloatValue(4), {}, devices.FloatValue(8), devices.FloatValue(8), devices.FloatValue(5)} {
		num.push(int64(i+1)*s, v, 1000*s, 100)
	}
	var flags ring
	for i, b := range []bool{true, false, true, true} {
		flags.push(int64(i+1)*s, devices.BoolValue(b), 1000*s, 100)
	}
	var str ring
	for i, v := range []string{"ok", "ok", "lamp_failure", "ok", "ok"} {
		str.push(int64(i+1)*s, devices.StringValue(v), 1000*s, 100)
	}
	tests := []struct {
		name   string
		r      *ring
		op     aggOp
		now, w int64
		want   float64
		ok     bool
	}{
		{"avg all", &num, opAvg, 6 * s, 10 * s, 27.0 / 5, true},
		{"avg last 2s", &num, opAvg, 6 * s, 2 * s, 6.5, true},
		{"min", &num, opMin, 6 * s, 10 * s, 2, true},
		{"max", &num, opMax, 6 * s, 10 * s, 8, true},
		{"sum", &num, opSum, 6 * s, 10 * s, 27, true},
		{"count skips missing", &num, opCount, 6 * s, 10 * s, 5, true},
		{"delta", &num, opDelta, 6 * s, 10 * s, 3, true},
		{"rate per second", &num, opRate, 6 * s, 10 * s, 3.0 / 5, true},
		{"window excludes the future", &num, opMax, 3 * s, 10 * s, 4, true},
		{"empty window: avg has no data", &num, opAvg, 100 * s, 10 * s, 0, false},
		{"empty window: sum is 0", &num, opSum, 100 * s, 10 * s, 0, true},
		{"empty window: count is 0", &num, opCount, 100 * s, 10 * s, 0, true},
		{"delta needs two samples", &num, opDelta, 6 * s, 1 * s, 0, false},
		{"rate needs two samples", &num, opRate, 6 * s, 1 * s, 0, false},
		{"count of a bool counts true", &flags, opCount, 4 * s, 10 * s, 3, true},
		{"avg of a bool is the true fraction", &flags, opAvg, 4 * s, 10 * s, 0.75, true},
		{"changes of a bool", &flags, opChanges, 4 * s, 10 * s, 2, true},
		{"changes of a string", &str, opChanges, 5 * s, 10 * s, 2, true},
		{"changes over a short window", &str, opChanges, 5 * s, 2 * s, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.r.aggregate(tc.op, tc.now, tc.w)
			if ok != tc.ok || ok && math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("got %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
