package citybench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestQuantiles(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100 … 1, unsorted
	}
	for _, tc := range []struct {
		name string
		in   []float64
		want Quantiles
	}{
		{"empty", nil, Quantiles{}},
		{"one", []float64{0.3}, Quantiles{N: 1, P50: 0.3, P99: 0.3, Max: 0.3, Min: 0.3}},
		{"nearest rank of 1…100", hundred, Quantiles{N: 100, P50: 50, P99: 99, Max: 100, Min: 1}},
		{"negative kept", []float64{-0.1, 0.2, 0.4}, Quantiles{N: 3, P50: 0.2, P99: 0.4, Max: 0.4, Min: -0.1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := quantiles(tc.in); got != tc.want {
				t.Errorf("quantiles = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestLatencyNotes(t *testing.T) {
	rs := latencyResults{{faultClass: latencyClasses[0], Injected: 3, Cases: 3,
		Total: Quantiles{N: 3, P50: 1.25, P99: 1.75, Max: 1.75}, Device: Quantiles{N: 3, P50: 0.5, P99: 1, Max: 1}}}
	rs[0].RuleFor = "2s" // exercises the subtraction
	got := latencyNotes(rs)[0]
	if s := rs.String(); s != "mqtt 3/3 cases, total p50 1.25 s p99 1.75 s max 1.75 s" {
		t.Errorf("String() = %q", s)
	}
	for _, want := range []string{"| mqtt | bin_fire → waste_bin.fire (2s) | 1s | 3/3 | 1.25 / 1.75 / 1.75 | 0.50 / 1.00 / 1.00 |", "| -0.75 / -0.25 / -0.25 |"} {
		if !strings.Contains(got, want) {
			t.Errorf("notes lack %q:\n%s", want, got)
		}
	}
}

// The fault classes name rules of the shipped set with the `for` they
// claim, and faults and fields the simulator and profiles know.
func TestLatencyClassesMatchShippedRules(t *testing.T) {
	for _, c := range latencyClasses {
		b := readRepoFile(t, "configs/rules/"+c.Kind+".yaml")
		i := bytes.Index(b, []byte("id: "+c.Rule+"\n"))
		if i < 0 {
			t.Fatalf("configs/rules/%s.yaml has no rule %s", c.Kind, c.Rule)
		}
		rest := b[i:]
		if j := bytes.Index(rest[1:], []byte("- id:")); j >= 0 {
			rest = rest[:j+1]
		}
		if !bytes.Contains(rest, []byte("for: "+c.RuleFor)) {
			t.Errorf("rule %s: no `for: %s` in\n%s", c.Rule, c.RuleFor, rest)
		}
		if !bytes.Contains(rest, []byte(c.Field)) {
			t.Errorf("rule %s does not read %s", c.Rule, c.Field)
		}
		if !bytes.Contains(readRepoFile(t, "firmware-sim/README.md"), []byte("`"+c.Fault+"`")) {
			t.Errorf("firmware-sim documents no fault %s", c.Fault)
		}
	}
}

// A small latency run with real processes: every fault opens its case and
// every figure is there and plausible.
func TestLatencySmall(t *testing.T) {
	b := newBench(t, SysCitygw)
	b.Opts.Messages = 4
	rep, err := latency{warmup: 5 * time.Second}.Run(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := rep.Systems[0].Extra["latency"].(latencyResults)
	if len(rs) != 2 {
		t.Fatalf("latency results %#v", rep.Systems[0].Extra)
	}
	for _, r := range rs {
		if r.Injected != 4 || r.Cases != 4 || r.Total.N != 4 || r.Device.N != 4 || r.Gateway.N != 4 {
			t.Errorf("%s: %+v", r.Transport, r)
		}
		// The case cannot reach the desk before the fault was injected, nor
		// the simulator show it before it was injected (less the
		// simulator's tick granularity, as it stamps ticks at whole
		// seconds).
		if r.Total.Min <= 0 || r.Device.Min < -1 || r.Total.Max > 60 {
			t.Errorf("%s: implausible latencies %+v", r.Transport, r)
		}
	}
	if p := rep.Systems[0].Proc("desk"); p == nil || p.PeakRSSMB <= 0 {
		t.Errorf("no desk figures in %+v", rep.Systems[0].Procs)
	}
}
