package rules

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/gateway/testenv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSandbox: a rule reaches nothing outside its typed environment, and
// what could run long or big is refused by check, at compile time or by the
// memory budget on the trial evaluation; the engine stops the latter too.
func TestSandbox(t *testing.T) {
	tests := []struct {
		name, expr string
		msg        string
		runtime    bool // compiles; stopped by the memory budget when it runs
	}{
		{"process", `exec("rm -rf /") == ""`, "unknown name exec", false},
		{"go package", `os.Getenv("HOME") != ""`, "unknown name os", false},
		{"environment", `$env.__f != nil`, "$env is reserved", false},
		{"environment index", `$env["__f"] != nil`, "$env is reserved", false},
		{"internal function", `__attr("x") != nil`, "__attr is reserved", false},
		{"wall clock", `now().Year() > 2000`, "unknown name now", false},
		{"time-zone files", `timezone("Europe/Berlin") != nil`, "unknown name timezone", false},
		{"date parsing", `date("2026-01-01").Year() > 2000`, "unknown name date", false},
		{"float range", `len(1..1e9) > 0`, "mismatched types int and float64", false},
		{"deep nesting", strings.Repeat("abs(", 600) + "current_a" + strings.Repeat(")", 600) + " > 1", "exceeds maximum allowed nodes", false},
		{"huge range", `len(1..1000000000) > 0`, "memory budget exceeded", true},
		{"long loop", `all(1..999999, {# > 0})`, "memory budget exceeded", true},
		{"nested loops", `none(1..900, {any(1..900, {# < 0})})`, "memory budget exceeded", true},
		{"big string", `len(repeat("x", 100000)) > 0`, "memory budget exceeded", true},
		{"range to string", `len(string(1..500000)) > 0`, "memory budget exceeded", true},
	}
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := writeRules(t, t.TempDir(), "r.yaml", ruleHead+"    when: '"+tc.expr+"'\n")
			err := CheckWith(cat, nil, f)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("check: %v, want an error containing %q", err, tc.msg)
			}
			var es yamlconf.Errors
			var ye *yamlconf.Error
			if !errors.As(err, &es) || len(es) == 0 || !errors.As(es[0], &ye) || ye.File != f || ye.Line != 6 && ye.Line != 2 {
				t.Fatalf("check error %v is not positioned at the rule", err)
			}
			if !tc.runtime {
				return
			}
			// The engine loads it (check's made-up reading is advice) and
			// the memory budget stops every evaluation with a clear error.
			var logs bytes.Buffer
			e, err := NewEngine(Options{Location: time.UTC}, cat, inv, prometheus.NewRegistry(),
				slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			if err := e.Load(f); err != nil {
				t.Fatal(err)
			}
			e.Eval(context.Background(), reading(t, inv.Lookup("L0"), time.Now(), map[string]any{"current_a": 1.0}))
			cr := e.set.Load().rules[0]
			if got := testutil.ToFloat64(cr.m.errs); got != 1 {
				t.Fatalf("run-time errors = %v, want 1", got)
			}
			if st := e.RuleStatuses(); len(st) != 1 || st[0].Health != HealthErr {
				t.Fatalf("statuses = %+v, want health err", st)
			}
			if !strings.Contains(logs.String(), "memory budget exceeded") {
				t.Fatalf("logs lack the memory budget error:\n%s", logs.String())
			}
		})
	}
}

// slowExpr is a rule that runs long without building anything the memory
// budget counts: 2,000 upper-casings of a 500-character string (about ten
// milliseconds, ten times the test's rule budget).
var slowExpr = `all(1..2000, {len(upper("` + strings.Repeat("a", 500) + `")) > 0})`

const budgetRules = `rules:
  - id: streetlight.slow
    kind: streetlight
    when: 'SLOW && current_a > 0.5'
    severity: major
    case: {service: s, title: t}
  - id: streetlight.fast
    kind: streetlight
    when: 'current_a > 0.5'
    severity: major
    case: {service: s, title: t}
`

// TestQuarantine: the rule over its budget, not its fast neighbour, is
// quarantined at the third overrun: no longer evaluated, health
// "quarantined", the gauge 1, one error line with its file:line; a reload
// clears it.
func TestQuarantine(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 2)
	f := writeRules(t, t.TempDir(), "r.yaml", strings.Replace(budgetRules, "SLOW", slowExpr, 1))
	var logs testenv.SyncBuffer
	reg := prometheus.NewRegistry()
	e, err := NewEngine(Options{Location: time.UTC, EvalBudget: 50 * time.Millisecond, RuleBudget: time.Millisecond},
		cat, inv, reg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.Load(f); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 6, 21, 12, 0, 0, 0, time.UTC)
	lamp := func(i int, cur float64) { // alternate lamps: the kind's flag carries the timing over
		a := inv.Lookup([]string{"L0", "L1"}[i%2])
		e.Eval(context.Background(), reading(t, a, t0.Add(time.Duration(i)*time.Second), map[string]any{"current_a": cur}))
	}
	// The first reading flags the kind; the next three are timed rule by
	// rule. A generous loop: a loaded machine only makes the slow rule slower.
	for i := 0; i < 20 && len(e.Quarantined()) == 0; i++ {
		lamp(i, 1)
	}
	if q := e.Quarantined(); len(q) != 1 || q[0] != "streetlight.slow" {
		t.Fatalf("quarantined = %v, want [streetlight.slow]", q)
	}
	gauge := func(name, rule string) float64 { return gaugeValue(t, reg, name, rule) }
	if gauge("citygw_rule_quarantined", "streetlight.slow") != 1 || gauge("citygw_rule_quarantined", "streetlight.fast") != 0 ||
		gauge("citygw_rule_health", "streetlight.slow") != 0 {
		t.Fatal("quarantine gauges wrong")
	}
	sts := e.RuleStatuses()
	if sts[0].Rule != "streetlight.fast" || sts[0].Health != HealthOK || sts[1].Health != HealthQuarantined ||
		sts[1].Overruns != 3 || sts[1].Took <= time.Millisecond || sts[1].QuarantinedAt.IsZero() {
		t.Fatalf("statuses = %+v", sts)
	}
	for _, ar := range e.AssetRules("L0") {
		if want := ar.Rule == "streetlight.fast"; ar.Healthy != want || (ar.Health == HealthQuarantined) == want {
			t.Fatalf("asset rule %+v", ar)
		}
	}
	// No longer evaluated: the lamps' current drops; the fast rule's
	// episodes end, the quarantined rule's stay as they were (as after an
	// error, its state says nothing new), and the log names it once.
	for i := 20; i < 60; i++ {
		lamp(i, 0)
	}
	byRule := map[string]int{}
	for _, ep := range e.Episodes() {
		byRule[ep.Rule]++
	}
	if byRule["streetlight.fast"] != 0 || byRule["streetlight.slow"] != 2 {
		t.Fatalf("episodes by rule = %v, want the slow rule's two pending, frozen", byRule)
	}
	e.Tick(context.Background(), t0.Add(time.Hour))
	if gauge("citygw_rule_health", "streetlight.slow") != 0 {
		t.Fatal("a tick made the quarantined rule healthy")
	}
	if n := strings.Count(logs.String(), "rule quarantined"); n != 1 {
		t.Fatalf("%d quarantine log lines, want 1:\n%s", n, logs.String())
	}
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "rule quarantined") {
			line = l
		}
	}
	for _, want := range []string{"level=ERROR", "rule=streetlight.slow", "at=" + f + ":2", "took=", "budget=1ms"} {
		if !strings.Contains(line, want) {
			t.Fatalf("quarantine line %q lacks %q", line, want)
		}
	}
	// A reload compiles anew and clears the quarantine.
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if q := e.Quarantined(); len(q) != 0 || gauge("citygw_rule_quarantined", "streetlight.slow") != 0 {
		t.Fatalf("after reload quarantined = %v", q)
	}
	if !strings.Contains(logs.String(), "quarantine_cleared=[streetlight.slow]") {
		t.Fatalf("reload did not report the cleared quarantine:\n%s", logs.String())
	}
}

// TestQuarantineWindow: overruns further apart than the window do not add
// up to a quarantine.
func TestQuarantineWindow(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	f := writeRules(t, t.TempDir(), "r.yaml", ruleHead+"    when: current_a > 1\n")
	e, _ := newTestEngine(t, Options{Location: time.UTC, RuleBudget: time.Nanosecond, QuarantineAfter: 2,
		QuarantineWindow: time.Hour}, inv, cat, f)
	cr := e.set.Load().rules[0]
	a := inv.Lookup("L0")
	e.overran(cr, a, time.Second)
	cr.quar.mu.Lock()
	cr.quar.strikes[0] -= int64(2 * time.Hour) // the first overrun was long ago
	cr.quar.mu.Unlock()
	e.overran(cr, a, time.Second)
	if len(e.Quarantined()) != 0 {
		t.Fatal("quarantined by overruns two hours apart")
	}
	e.overran(cr, a, time.Second)
	if len(e.Quarantined()) != 1 {
		t.Fatal("not quarantined by two overruns within the window")
	}
	// Any evaluation is over a 1ns budget: the engine finds it too.
	e2, _ := newTestEngine(t, Options{Location: time.UTC, RuleBudget: time.Nanosecond, QuarantineAfter: 2}, inv, cat, f)
	for i := 0; i < 3; i++ {
		e2.Eval(context.Background(), reading(t, a, time.Now(), map[string]any{"current_a": 1.0}))
	}
	if len(e2.Quarantined()) != 1 {
		t.Fatal("a rule over a 1ns budget was not quarantined after three readings")
	}
}

func TestCheckReportsSlowRule(t *testing.T) {
	cat := testCatalog(t)
	// 20 times the slow expression: far over the check budget.
	slower := strings.Repeat(slowExpr+" && ", 20) + "true"
	f := writeRules(t, t.TempDir(), "r.yaml", ruleHead+"    when: '"+slower+"'\n")
	err := CheckWith(cat, nil, f)
	if err == nil || !strings.Contains(err.Error(), "would quarantine") || !strings.Contains(err.Error(), f+":2:") {
		t.Fatalf("check: %v", err)
	}
}

// gaugeValue reads a gauge of the rule engine by its rule label.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name, rule string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "rule" && l.GetValue() == rule {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{rule=%q}", name, rule)
	return 0
}
