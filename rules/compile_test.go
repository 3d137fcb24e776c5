package rules

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices/yamlconf"
)

const ruleHead = "rules:\n  - id: streetlight.t\n    kind: streetlight\n    severity: major\n    case: {service: s, title: t}\n"

func TestCheckErrors(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		line, col int
		msg       string
	}{
		{"unknown field", ruleHead + "    when: is_dark() && curent_a < 0.05\n", 6, 24, "unknown name curent_a"},
		{"wrong type", ruleHead + "    when: relay_on + 1\n", 6, 20, "mismatched types bool and int"},
		{"not a condition", ruleHead + "    when: current_a * 2\n", 6, 11, "expected bool"},
		{"unknown function", ruleHead + "    when: avgg(current_a, \"10m\") > 1\n", 6, 11, "unknown name avgg"},
		{"bad window", ruleHead + "    when: avg(current_a, \"10x\") > 1\n", 6, 26, `bad window "10x"`},
		{"window of a non-field", ruleHead + "    when: avg(1, \"10m\") > 1\n", 6, 15, "must be a field of kind streetlight"},
		{"window not a string", ruleHead + "    when: avg(current_a, 10) > 1\n", 6, 26, "duration string"},
		{"window of a string field", ruleHead + "    when: avg(fault, \"10m\") > 1\n", 6, 15, "fault is a string"},
		{"prev of a non-field", ruleHead + "    when: prev(1) > 1\n", 6, 16, "prev needs a field"},
		{"bad between", ruleHead + "    when: between(\"25:00\", \"06:00\")\n", 6, 19, "time of day"},
		{"reserved name", ruleHead + "    when: __ff > 1\n", 6, 11, "reserved"},
		{"quoted expression", ruleHead + "    when: \"relay_on && curent_a < 1\"\n", 6, 24, "unknown name curent_a"},
		{"block expression", ruleHead + "    when: |\n      relay_on &&\n        foo(current_a)\n", 8, 9, "unknown name foo"},
		{"bad duration field", ruleHead + "    when: relay_on\n    for: 10x\n", 7, 10, "invalid duration"},
		{"unknown key", ruleHead + "    when: relay_on\n    fore: 10m\n", 7, 5, "unknown field"},
		{"unknown kind", "rules:\n  - id: x.t\n    kind: tram\n    when: a\n    severity: major\n    case: {service: s, title: t}\n", 3, 11, "unknown kind"},
		{"both when and absent", ruleHead + "    when: relay_on\n    absent: 5m\n", 6, 11, "exactly one of when"},
		{"bad severity", strings.Replace(ruleHead, "major", "huge", 1) + "    when: relay_on\n", 4, 15, "want one of critical"},
		{"bad template", strings.Replace(ruleHead, "title: t}", "title: \"{{ .Asset.Idd }}\"}", 1) + "    when: relay_on\n", 5, 31, "can't evaluate field Idd"},
		{"group without group_by", ruleHead + "    when: relay_on\n    group: {at_least: 2}\n", 7, 12, "needs group_by"},
		{"inhibit unknown rule", ruleHead + "    when: relay_on\n    inhibit: {rules: [nope]}\n", 2, 9, `no rule "nope"`},
		{"duplicate id", ruleHead + "    when: relay_on\n" + strings.TrimPrefix(ruleHead, "rules:\n") + "    when: relay_on\n", 7, 9, "duplicate rule id"},
	}
	cat := testCatalog(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := writeRules(t, t.TempDir(), "r.yaml", tc.file)
			err := CheckWith(cat, nil, f)
			if err == nil {
				t.Fatal("check passed")
			}
			var ye *yamlconf.Error
			var es yamlconf.Errors
			if errors.As(err, &es) && len(es) > 0 {
				err = es[0]
			}
			if !errors.As(err, &ye) {
				t.Fatalf("error %T %v is not positioned", err, err)
			}
			if ye.Line != tc.line || ye.Column != tc.col || !strings.Contains(ye.Error(), tc.msg) {
				t.Fatalf("got %v (line %d col %d), want %d:%d containing %q", ye, ye.Line, ye.Column, tc.line, tc.col, tc.msg)
			}
		})
	}
}

func TestShippedRulesCheck(t *testing.T) {
	files := shippedRules(t)
	if err := Check(files...); err != nil {
		t.Fatal(err)
	}
}

// exprCase evaluates one expression for streetlight L0 after feeding
// readings (one per minute from t0) and reports whether it held at the last.
func evalExpr(t *testing.T, expr string, t0 time.Time, readings ...map[string]any) (bool, *Engine) {
	t.Helper()
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	f := writeRules(t, t.TempDir(), "r.yaml", ruleHead+"    when: '"+expr+"'\n    for: 1h\n")
	loc, _ := time.LoadLocation("Asia/Shanghai")
	e, _ := newTestEngine(t, Options{Location: loc}, inv, cat, f)
	a := inv.Lookup("L0")
	for i, vals := range readings {
		e.Eval(context.Background(), reading(t, a, t0.Add(time.Duration(i)*time.Minute), vals))
	}
	return len(e.Episodes()) == 1, e
}

func TestFunctions(t *testing.T) {
	loc, _ := time.LoadLocation("Asia/Shanghai")
	night := time.Date(2026, 6, 21, 22, 0, 0, 0, loc) // a Sunday
	day := time.Date(2026, 6, 22, 12, 30, 0, 0, loc)  // a Monday
	cur := func(vs ...float64) []map[string]any {
		var out []map[string]any
		for _, v := range vs {
			out = append(out, map[string]any{"current_a": v, "relay_on": v > 0, "fault": "ok"})
		}
		return out
	}
	tests := []struct {
		expr string
		t0   time.Time
		in   []map[string]any
		want bool
	}{
		{`current_a > 0.4`, night, cur(0.43), true},
		{`current_a > 0.5`, night, cur(0.43), false},
		{`relay_on`, night, cur(0.43), true},
		{`fault == "ok"`, night, cur(0.43), true},
		{`avg(current_a, "3m") == 2`, night, cur(9, 1, 2, 3), true},
		{`avg(current_a, "10m") == 3.75`, night, cur(9, 1, 2, 3), true},
		{`min(current_a, "10m") == 1 && max(current_a, "10m") == 9`, night, cur(9, 1, 2, 3), true},
		{`sum(current_a, "2m") == 5 && count(current_a, "10m") == 4`, night, cur(9, 1, 2, 3), true},
		{`delta(current_a, "3m") == 2`, night, cur(9, 1, 2, 3), true},
		{`rate(current_a, "3m") * 60 == 1`, night, cur(9, 1, 2, 3), true},
		{`changes(relay_on, "1h") == 2`, night, cur(1, 0, 0, 1), true},
		{`changes(fault, "1h") == 0`, night, cur(1, 0, 0, 1), true},
		{`prev(current_a) == 2`, night, cur(9, 1, 2, 3), true},
		{`prev(current_a) == 2`, night, cur(3), false}, // no previous reading: no data, false
		{`age() == 0`, night, cur(1), true},
		{`is_dark() && !is_day() && sun_elevation() < -20`, night, cur(1), true},
		{`is_day() && sun_elevation() > 60`, day, cur(1), true},
		{`hour() == 22 && minute() == 0 && time_of_day() == 22`, night, cur(1), true},
		{`weekday() == 0 && is_weekend()`, night, cur(1), true},
		{`weekday() == 1 && !is_weekend()`, day, cur(1), true},
		{`between("21:00", "06:00") && !between("06:00", "21:00")`, night, cur(1), true},
		{`between("12:00", "13:00")`, day, cur(1), true},
		{`asset.rated_power_w == 100 && asset.circuit == "C0" && asset.id == "L0"`, night, cur(1), true},
		{`asset.district == "310101" && asset.lat > 31 && asset.lon > 121`, night, cur(1), true},
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			got, e := evalExpr(t, tc.expr, tc.t0, tc.in...)
			if got != tc.want {
				t.Fatalf("%s = %v, want %v", tc.expr, got, tc.want)
			}
			if h := e.set.Load().rules[0].st.lastErr.Load(); h != 0 {
				t.Fatalf("rule had a run-time error")
			}
		})
	}
}
