package caseclient

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/rules"
	"github.com/prometheus/client_golang/prometheus"
)

// The flood caps hold new cases back per rule and per sink per minute;
// held cases wait in the outbox (counted) and go out in later minutes.
func TestFloodCaps(t *testing.T) {
	d := startDesk(t, nil)
	clk := &clock{t: time.Now()}
	cfg := fastConfig(t, deskSink(d))
	cfg.MaxOpensPerRule, cfg.MaxOpensPerSink, cfg.Now = 2, 3, clk.Now
	c := startClient(t, cfg)
	var ts []rules.Transition
	for i := range 5 {
		id := fmt.Sprintf("A%d", i)
		ts = append(ts, fire("rule.a", "streetlight_fault", "streetlight", id, []string{"SL-1"}, t0.Add(time.Duration(i)*time.Second), "major"))
	}
	ts = append(ts, fire("rule.b", "bin_overflow", "waste_bin", "BIN-1", []string{"BIN-1"}, t0, "minor"))
	if err := c.Transitions(context.Background(), ts); err != nil {
		t.Fatal(err)
	}
	count := func(rule string) int {
		n := 0
		for _, r := range d.Requests() {
			if r.Attributes["rule"][0] == rule {
				n++
			}
		}
		return n
	}
	waitFor(t, 10*time.Second, "the first minute's cases", func() bool { return count("rule.a") == 2 && count("rule.b") == 1 })
	time.Sleep(150 * time.Millisecond) // several delivery passes: nothing more goes out this minute
	if count("rule.a") != 2 || c.counter("citygw_case_outbox_depth") != 3 {
		t.Fatalf("first minute: %d of rule.a, outbox %v", count("rule.a"), c.counter("citygw_case_outbox_depth"))
	}
	if got := c.counter("citygw_cases_throttled_total", "rule", "rule.a", "sink", "desk"); got != 3 {
		t.Errorf("throttled rule.a %v, want 3 (each held case counted once)", got)
	}
	clk.Add(61 * time.Second)
	waitFor(t, 10*time.Second, "the second minute's cases", func() bool { return count("rule.a") == 4 })
	time.Sleep(150 * time.Millisecond)
	if count("rule.a") != 4 {
		t.Fatalf("second minute: %d of rule.a, want 4", count("rule.a"))
	}
	clk.Add(61 * time.Second)
	waitFor(t, 10*time.Second, "the last case", func() bool { return count("rule.a") == 5 })
	if got := c.counter("citygw_cases_throttled_total"); got != 3 {
		t.Errorf("throttled total %v, want 3", got)
	}
}

// A circuit-dead group rule inhibits its lamps' own rule in the engine: the
// real rules engine feeding the client opens one circuit case, not one per
// lamp, and reports the circuit cleared on the same case.
func TestGroupInhibitionOpensOneCase(t *testing.T) {
	d := startDesk(t, nil)
	c := startClient(t, fastConfig(t, deskSink(d)))
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "r.yaml")
	err := os.WriteFile(ruleFile, []byte(`rules:
  - id: t.lamp_dark
    kind: streetlight
    when: current_a < 0.03
    for: 10m
    severity: major
    case: {service: streetlight_fault, title: "dark {{ .Asset.ID }}"}
  - id: t.circuit_dead
    kind: streetlight
    when: current_a < 0.03
    group_by: [circuit]
    group: {at_least: 3}
    for: 5m
    severity: critical
    inhibit: {rules: [t.lamp_dark]}
    case: {service: streetlight_circuit_fault, title: "circuit {{ .Labels.circuit }} dead"}
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	inv, err := devices.LoadInventory("testdata/inventory.yaml", cat)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: t0}
	eng, err := rules.NewEngine(rules.Options{Sink: c, Now: clk.Now}, cat, inv, prometheus.NewRegistry(), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	if err := eng.Load(ruleFile); err != nil {
		t.Fatal(err)
	}
	exprs, err := RuleExpressions(ruleFile)
	if err != nil {
		t.Fatal(err)
	}
	c.SetRuleExpressions(exprs)
	ctx := context.Background()
	feed := func(at time.Time, current float64, ids ...string) {
		for _, id := range ids {
			a := inv.Lookup(id)
			r := devices.Reading{}
			r.Reset(a)
			r.Time, r.Received = at, at
			i, _ := a.Schema.Index("current_a")
			r.Values[i] = devices.FloatValue(current)
			eng.Eval(ctx, &r)
		}
	}
	for m := 0; m <= 15; m++ {
		at := t0.Add(time.Duration(m) * time.Minute)
		clk.Set(at)
		feed(at, 0, "SL-1", "SL-2", "SL-3")
		feed(at, 0.6, "SL-GCJ")
		eng.Tick(ctx, at)
	}
	muted := 0
	for _, e := range eng.Episodes() {
		if e.Rule == "t.lamp_dark" && e.State == rules.Firing && e.Muted != "" {
			muted++
		}
	}
	if muted != 3 {
		t.Fatalf("%d muted firing lamp episodes in the engine, want 3: %+v", muted, eng.Episodes())
	}
	waitFor(t, 10*time.Second, "the circuit case", func() bool { return len(d.Requests()) >= 1 })
	time.Sleep(200 * time.Millisecond)
	reqs := d.Requests()
	if len(reqs) != 1 || reqs[0].ServiceCode != "SL-CIRCUIT" {
		t.Fatalf("%d requests (%+v), want one circuit case", len(reqs), reqs)
	}
	if !strings.Contains(reqs[0].Description, "current_a < 0.03") || !strings.Contains(reqs[0].Description, "SL-1 SL-2 SL-3") {
		t.Errorf("circuit case description lacks the expression or the lamps:\n%s", reqs[0].Description)
	}
	// Power back: the circuit clears on the same case; the lamps, muted,
	// were never opened and report nothing.
	for m := 16; m <= 20; m++ {
		at := t0.Add(time.Duration(m) * time.Minute)
		clk.Set(at)
		feed(at, 0.6, "SL-1", "SL-2", "SL-3", "SL-GCJ")
		eng.Tick(ctx, at)
	}
	waitFor(t, 10*time.Second, "the circuit's cleared update", func() bool { return len(clientUpdates(d.Requests()[0])) == 1 })
	if n := len(d.Requests()); n != 1 {
		t.Errorf("%d requests after clearing, want 1", n)
	}
}
