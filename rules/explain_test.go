package rules

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
)

// lampReadings makes one reading of lamp a per minute from start: relay and
// current per step (a current < 0 leaves the field out).
func lampReadings(a *devices.Asset, start time.Time, relay []bool, current []float64) Readings {
	var out Readings
	ri, _ := a.Schema.Index("relay_on")
	ci, _ := a.Schema.Index("current_a")
	for i := range current {
		r := &devices.Reading{}
		r.Reset(a)
		r.Time = start.Add(time.Duration(i) * time.Minute)
		r.Received = r.Time
		r.Values[ri] = devices.BoolValue(relay[i])
		if current[i] >= 0 {
			r.Values[ci] = devices.FloatValue(current[i])
		}
		out = append(out, r)
	}
	return out
}

func repeat[T any](v T, n int) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func ruleFile(when string) string {
	return fmt.Sprintf(`rules:
  - id: t.rule
    kind: streetlight
    when: %q
    for: 10m
    keep_firing_for: 5m
    severity: major
    case: {service: s, title: "t {{ .Asset.ID }}"}
`, when)
}

func TestExplainTree(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	lamp := inv.Lookup("L0")
	// Shanghai, 21 June 2026: dark at 22:00 local, day at 12:00.
	night := time.Date(2026, 6, 21, 22, 0, 0, 0, time.FixedZone("CST", 8*3600))
	noon := time.Date(2026, 6, 21, 12, 0, 0, 0, time.FixedZone("CST", 8*3600))
	for _, tc := range []struct {
		name    string
		when    string
		start   time.Time
		relay   []bool
		current []float64
		want    string
	}{
		{
			name: "lamp out at night: every operand true", when: "is_dark() && relay_on && current_a < 0.05",
			start: night, relay: repeat(true, 3), current: []float64{0.4, 0.01, 0.01},
			want: `
is_dark() && relay_on && current_a < 0.05 = true
├─ is_dark() && relay_on = true
│  ├─ is_dark() = true
│  └─ relay_on = true
└─ current_a < 0.05 = true
   └─ current_a = 0.01
`,
		},
		{
			name: "by day the rest is not evaluated", when: "is_dark() && relay_on && current_a < 0.05",
			start: noon, relay: repeat(false, 2), current: []float64{0, 0},
			want: `
is_dark() && relay_on && current_a < 0.05 = false
├─ is_dark() && relay_on = false
│  ├─ is_dark() = false
│  └─ relay_on = false   [not evaluated by the rule: decided by the other operand]
└─ current_a < 0.05 = true   [not evaluated by the rule: decided by the other operand]
   └─ current_a = 0   [not evaluated by the rule: decided by the other operand]
`,
		},
		{
			name: "negation and or", when: "!relay_on || current_a < 0.03",
			start: night, relay: repeat(true, 2), current: []float64{0.43, 0.43},
			want: `
!relay_on || current_a < 0.03 = false
├─ !relay_on = false
│  └─ relay_on = true
└─ current_a < 0.03 = false
   └─ current_a = 0.43
`,
		},
		{
			name: "window function and arithmetic with an attribute", when: `avg(current_a, "5m") < asset.rated_power_w / 230 * 0.5`,
			start: night, relay: repeat(true, 4), current: []float64{0.4, 0.2, 0.1, 0.1},
			want: `
avg(current_a, "5m") < asset.rated_power_w / 230 * 0.5 = true
├─ avg(current_a, "5m") = 0.2
└─ asset.rated_power_w / 230 * 0.5 = 0.217391
   └─ asset.rated_power_w / 230 = 0.434783
      └─ asset.rated_power_w = 100
`,
		},
		{
			name: "no data from a window with one sample", when: `delta(current_a, "5m") < -0.1 || prev(relay_on) != relay_on`,
			start: night, relay: []bool{true}, current: []float64{0.4},
			want: `
delta(current_a, "5m") < -0.1 || prev(relay_on) != relay_on = (no data)
├─ delta(current_a, "5m") < -0.1 = (no data)
│  └─ delta(current_a, "5m") = (no data)
└─ prev(relay_on) != relay_on = (no data)   [not evaluated by the rule: decided by the other operand]
   ├─ prev(relay_on) = (no data)   [not evaluated by the rule: decided by the other operand]
   └─ relay_on = true   [not evaluated by the rule: decided by the other operand]
`,
		},
		{
			name: "conditional: the branch not taken", when: "relay_on ? current_a < 0.03 : current_a > 0.03",
			start: night, relay: []bool{false}, current: []float64{0.2},
			want: `
relay_on ? current_a < 0.03 : current_a > 0.03 = true
├─ relay_on = false
├─ current_a < 0.03 = false   [not evaluated by the rule: decided by the other operand]
│  └─ current_a = 0.2   [not evaluated by the rule: decided by the other operand]
└─ current_a > 0.03 = true
   └─ current_a = 0.2
`,
		},
		{
			name: "a field the reading lacks", when: "relay_on && current_a < 0.03",
			start: night, relay: []bool{true}, current: []float64{-1},
			want: `
relay_on && current_a < 0.03 = (not in this reading)
├─ relay_on = true
└─ current_a < 0.03 = (not in this reading)
   └─ current_a = (not in this reading)
`,
		},
		{
			name: "builtin with plain arguments", when: "abs(current_a - 0.43) > 0.1",
			start: night, relay: []bool{true}, current: []float64{0.2},
			want: `
abs(current_a - 0.43) > 0.1 = true
└─ abs(current_a - 0.43) = 0.23
   └─ current_a - 0.43 = -0.23
      └─ current_a = 0.2
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := []string{writeRules(t, t.TempDir(), "r.yaml", ruleFile(tc.when))}
			src := lampReadings(lamp, tc.start, tc.relay, tc.current)
			at := tc.start.Add(time.Duration(len(tc.current)-1) * time.Minute)
			ex, err := Explain(context.Background(), cat, inv, files, src, ExplainOptions{Rule: "t.rule", Asset: "L0", At: at})
			if err != nil {
				t.Fatal(err)
			}
			if ex.Tree == nil {
				t.Fatalf("no tree; verdict %s", ex.Verdict.Summary)
			}
			var b strings.Builder
			WriteTree(&b, ex.Tree)
			if got, want := b.String(), strings.TrimPrefix(tc.want, "\n"); got != want {
				t.Errorf("tree:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestExplainVerdicts(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	lamp := inv.Lookup("L0")
	night := time.Date(2026, 6, 21, 22, 0, 0, 0, time.FixedZone("CST", 8*3600))
	files := []string{writeRules(t, t.TempDir(), "r.yaml", ruleFile("is_dark() && relay_on && current_a < 0.05"))}
	// Lit 5 minutes, dark 8 (shorter than for), lit 2, dark 12, lit 10.
	var cur []float64
	for _, seg := range []struct {
		v float64
		n int
	}{{0.4, 5}, {0.01, 8}, {0.4, 2}, {0.01, 12}, {0.4, 10}} {
		cur = append(cur, repeat(seg.v, seg.n)...)
	}
	src := lampReadings(lamp, night, repeat(true, len(cur)), cur)
	min := func(m int) time.Time { return night.Add(time.Duration(m) * time.Minute) }
	for _, tc := range []struct {
		at       int
		state    string
		since    time.Time
		firesAt  time.Time
		clearsAt time.Time
		summary  string
	}{
		{at: 10, state: "pending", since: min(5), firesAt: min(15), summary: "PENDING since 2026-06-21T22:05:00+08:00: it would fire at 2026-06-21T22:15:00+08:00"},
		{at: 14, state: "inactive", summary: "it last held from 2026-06-21T22:05:00+08:00 until 2026-06-21T22:13:00+08:00 (8m0s), shorter than for 10m0s"},
		{at: 26, state: "firing", since: min(15), summary: "FIRING since 2026-06-21T22:25:00+08:00"},
		{at: 28, state: "firing", since: min(15), clearsAt: min(32), summary: "clears at 2026-06-21T22:32:00+08:00"},
		{at: 36, state: "inactive", summary: "cleared at 2026-06-21T22:32:00+08:00"},
	} {
		t.Run(fmt.Sprint(tc.at), func(t *testing.T) {
			ex, err := Explain(context.Background(), cat, inv, files, src, ExplainOptions{Rule: "t.rule", Asset: "L0", At: min(tc.at), Lookback: time.Hour, Location: night.Location()})
			if err != nil {
				t.Fatal(err)
			}
			v := ex.Verdict
			if v.State != tc.state || !v.Since.Equal(tc.since) || !v.FiresAt.Equal(tc.firesAt) || !v.ClearsAt.Equal(tc.clearsAt) {
				t.Errorf("verdict %+v, want state %s since %s fires %s clears %s", v, tc.state, tc.since, tc.firesAt, tc.clearsAt)
			}
			if !strings.Contains(v.Summary, tc.summary) {
				t.Errorf("summary %q lacks %q", v.Summary, tc.summary)
			}
		})
	}
}

func TestExplainErrors(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	dir := t.TempDir()
	good := writeRules(t, dir, "r.yaml", ruleFile("current_a < 0.05"))
	bad := writeRules(t, dir, "bad.yaml", ruleFile("curent_a < 0.05"))
	for _, tc := range []struct {
		name  string
		files []string
		rule  string
		asset string
		want  error
	}{
		{"invalid rules", []string{bad}, "t.rule", "L0", ErrInvalidRules},
		{"unknown rule", []string{good}, "t.nope", "L0", ErrArgs},
		{"unknown asset", []string{good}, "t.rule", "L99", ErrArgs},
		{"asset of another kind", []string{good}, "t.rule", "CAB0", ErrArgs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Explain(context.Background(), cat, inv, tc.files, Readings(nil), ExplainOptions{Rule: tc.rule, Asset: tc.asset, At: time.Now()})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func TestExplainUnitTestInput(t *testing.T) {
	cat := testCatalog(t)
	in, err := LoadTestInput(cat, "../configs/rules/tests/streetlight.yaml", "a dead circuit is one episode for the circuit and inhibits the per-lamp ones")
	if err != nil {
		t.Fatal(err)
	}
	if len(in.RuleFiles) != 2 || in.Location.String() != "Asia/Shanghai" || len(in.Readings) == 0 {
		t.Fatalf("input %+v", in)
	}
	// Only L1's own readings would not show the circuit: explain replays
	// the circuit of the inhibiting rule too.
	ex, err := Explain(context.Background(), cat, in.Inventory, in.RuleFiles, in.Readings,
		ExplainOptions{Rule: "streetlight.dark_at_night", Asset: "L1", At: in.End, Lookback: in.End.Sub(in.Start), Location: in.Location})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Verdict.State != "firing" || !strings.HasPrefix(ex.Verdict.Muted, "inhibited:streetlight.circuit_dead/C1") ||
		!strings.Contains(ex.Verdict.Summary, "no case would be opened") {
		t.Errorf("verdict %+v: want firing, muted by the dead circuit", ex.Verdict)
	}
	if _, err := LoadTestInput(cat, "../configs/rules/tests/streetlight.yaml", "no such case"); err == nil {
		t.Error("an unknown case loaded")
	}
}
