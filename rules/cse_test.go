package rules

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestShareSubexprs: the maximal pure arithmetic sub-expressions reading
// the reading or the asset become memo calls; nothing else does.
func TestShareSubexprs(t *testing.T) {
	cat := testCatalog(t)
	tests := []struct{ when, want string }{
		{`current_a < 0.03`, `current_a < 0.03`},
		{`abs(tilt_deg) > 10`, `__sub(0) > 10`},
		{`relay_on && abs(current_a - asset.rated_power_w * dim_level / 100 / voltage_v) > 0.3 * asset.rated_power_w * dim_level / 100 / voltage_v`,
			`relay_on && __sub(0) > __sub(1)`},
		{`current_a * 2 > prev(current_a) || -current_a > 1`, `__sub(0) > prev(current_a) || __sub(1) > 1`},
		{`avg(current_a, "10m") * 2 > 1`, `avg(current_a, "10m") * 2 > 1`}, // windows are memoized already
		{`2 + 3 > current_a`, `2 + 3 > current_a`},                         // constants: expr folds them
		{`all([1, 2], {# * current_a > 0})`, `all([1, 2], {# * current_a > 0})`},
		{`let x = current_a * 2; x > 1`, `let x = __sub(0); x > 1`},
	}
	for _, tc := range tests {
		t.Run(tc.when, func(t *testing.T) {
			c := newCompiler(cat, nil)
			ks := c.kindSet("streetlight")
			got, err := c.shareSubexprs(ks, &compiledRule{spec: &RuleSpec{ID: "t", When: tc.when}}, tc.when)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
			if n := strings.Count(tc.want, "__sub("); len(ks.subs) != n {
				t.Fatalf("%d shared sub-expressions, want %d", len(ks.subs), n)
			}
		})
	}
}

// TestSharedSubexprsSameResults evaluates every rule with its shared
// sub-expressions and as written (compiled without sharing), on readings
// with all fields, with fields missing, with a zero divisor and on assets
// without the attribute read: same value, same kind of error.
func TestSharedSubexprsSameResults(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 2)
	whens := []string{
		`relay_on && current_a >= 0.03 && abs(current_a - asset.rated_power_w * dim_level / 100 / voltage_v) > 0.3 * asset.rated_power_w * dim_level / 100 / voltage_v`,
		`abs(current_a - asset.rated_power_w * dim_level / 100 / voltage_v) > 0.1`,
		`abs(tilt_deg) > 10 || tilt_alarm`,
		`dim_level / (dim_level - 50) > 1`, // int division by zero at dim_level 50
		`asset.no_such_attr * current_a > 1`,
		`current_a * 2 > prev(current_a) + 0.1`,
		`floor(voltage_v / 10) == 23 && round(power_w) > 90`,
	}
	var sb strings.Builder
	sb.WriteString("rules:\n")
	for i, w := range whens {
		fmt.Fprintf(&sb, "  - id: t.r%d\n    kind: streetlight\n    when: '%s'\n    severity: minor\n    case: {service: s, title: t}\n", i, w)
	}
	e, _ := newTestEngine(t, Options{Location: time.UTC}, inv, cat, writeRules(t, t.TempDir(), "r.yaml", sb.String()))
	set := e.set.Load()
	ks := set.kinds["streetlight"]
	if len(ks.subs) == 0 {
		t.Fatal("no shared sub-expressions")
	}
	t0 := time.Date(2026, 6, 21, 14, 0, 0, 0, time.UTC)
	readings := []map[string]any{
		{"relay_on": true, "current_a": 0.43, "voltage_v": 230.0, "dim_level": 100, "power_w": 99.0, "tilt_alarm": false, "tilt_deg": 0.3},
		{"relay_on": true, "current_a": 0.2, "voltage_v": 231.0, "dim_level": 50, "power_w": 45.6, "tilt_alarm": false, "tilt_deg": -12.0},
		{"relay_on": true, "current_a": 0.43},                 // voltage, dim level missing
		{"relay_on": false, "voltage_v": 0.0, "dim_level": 0}, // divisions by zero
	}
	a := inv.Lookup("L0")
	for k, vals := range readings {
		r := reading(t, a, t0.Add(time.Duration(k)*time.Minute), vals)
		e.Eval(t.Context(), r)
		st := e.stateOf(a)
		for _, cr := range ks.rules {
			plain, err := compileSub(ks, cr, cr.spec.When)
			if err != nil {
				t.Fatal(err)
			}
			c := newEvalCtx(time.UTC)
			c.reset(ks, a, st, r.Values, r.Time, time.UTC)
			got, gerr := c.vm.Run(cr.prog, c)
			c.reset(ks, a, st, r.Values, r.Time, time.UTC)
			want, werr := c.vm.Run(plain, c)
			if got != want || (gerr == nil) != (werr == nil) || errors.Is(gerr, errNoData) != errors.Is(werr, errNoData) ||
				errors.Is(gerr, errIncomplete) != errors.Is(werr, errIncomplete) {
				t.Errorf("reading %d, %s: shared gives %v, %v; as written %v, %v", k, cr.spec.When, got, gerr, want, werr)
			}
		}
	}
}
