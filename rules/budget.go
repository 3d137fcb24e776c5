package rules

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/conf"
)

// The sandbox of rule expressions. A rule sees only its typed environment
// (its kind's fields, asset.*, the engine's functions): no file system,
// network or process. Three bounds keep one rule from hurting the others:
//
//   - maxExprNodes (compile time): a rule is short.
//   - maxExprMemory (run time, expr's VM memory budget): ranges, arrays,
//     maps, sorting and repeat() count against it, so `1..1000000000` or a
//     loop over a million elements stops at once with "memory budget
//     exceeded" instead of running for seconds.
//   - the evaluation time budget (Options.RuleBudget): expr's VM cannot be
//     interrupted, so a rule that runs over its budget repeatedly is
//     quarantined: it is no longer evaluated until the rules are reloaded.

// maxExprMemory is the VM memory budget of one evaluation, in expr's units
// (roughly elements allocated: range and array lengths, map sizes, bytes of
// repeat()). Rules compare fields; they need no collections of any size.
const maxExprMemory = 10_000

// disabledBuiltins are expr builtins a rule may not call: now() (rules use
// the reading's time), date() and timezone() (they read the time-zone
// database from the file system and depend on the process's local zone).
var disabledBuiltins = []string{"now", "date", "timezone"}

// sandboxOption is the compile-time bounds of every rule expression: the
// node limit and the disabled builtins.
func sandboxOption() expr.Option {
	return func(c *conf.Config) {
		expr.MaxNodes(maxExprNodes)(c)
		for _, b := range disabledBuiltins {
			expr.DisableBuiltin(b)(c)
		}
	}
}

// Health is a rule's health, as Prometheus reports a rule's: ok, err (a
// run-time error within the health window) or quarantined (over its
// evaluation time budget repeatedly; not evaluated until the next reload).
type Health string

// Rule health values.
const (
	HealthOK          Health = "ok"
	HealthErr         Health = "err"
	HealthQuarantined Health = "quarantined"
)

// quarantine is a rule's over-budget record. It lives on the compiled rule,
// so a reload (which compiles anew) clears it. Strikes are rare: only the
// overrun path takes the lock.
type quarantine struct {
	on atomic.Bool // read once per evaluation

	mu      sync.Mutex
	strikes []int64 // unix ns of the last QuarantineAfter overruns (a ring)
	next    int
	count   int
	at      time.Time     // when it was quarantined
	took    time.Duration // the evaluation that tipped it
}

// RuleStatus is one loaded rule's health.
type RuleStatus struct {
	Rule   string `json:"rule"`
	Kind   string `json:"kind"`
	File   string `json:"file"`
	Line   int    `json:"line"`
	Health Health `json:"health"`
	// LastError is when the rule last failed at run time (zero if never).
	LastError time.Time `json:"last_error,omitzero"`
	// Overruns counts evaluations measured over the budget since the load.
	Overruns int `json:"overruns,omitempty"`
	// QuarantinedAt and Took: when the rule was quarantined and how long
	// the evaluation that tipped it took.
	QuarantinedAt time.Time     `json:"quarantined_at,omitzero"`
	Took          time.Duration `json:"took,omitempty"`
}

// RuleStatuses returns the health of every loaded rule, sorted by id.
func (e *Engine) RuleStatuses() []RuleStatus {
	set := e.set.Load()
	if set == nil {
		return nil
	}
	out := make([]RuleStatus, 0, len(set.rules))
	now := time.Now().UnixNano()
	for _, cr := range set.rules {
		rs := RuleStatus{Rule: cr.id(), Kind: cr.kind, File: cr.file, Line: cr.line, Health: e.health(cr, now)}
		if last := cr.st.lastErr.Load(); last != 0 {
			rs.LastError = time.Unix(0, last)
		}
		q := &cr.quar
		q.mu.Lock()
		rs.Overruns, rs.QuarantinedAt, rs.Took = q.count, q.at, q.took
		q.mu.Unlock()
		out = append(out, rs)
	}
	return out
}

// Quarantined returns the ids of the loaded rules in quarantine, sorted.
func (e *Engine) Quarantined() []string {
	set := e.set.Load()
	if set == nil {
		return nil
	}
	var out []string
	for _, cr := range set.rules {
		if cr.quar.on.Load() {
			out = append(out, cr.id())
		}
	}
	return out
}

func (e *Engine) health(cr *compiledRule, nowNs int64) Health {
	if cr.quar.on.Load() {
		return HealthQuarantined
	}
	if last := cr.st.lastErr.Load(); last != 0 && time.Duration(nowNs-last) <= e.opts.HealthWindow {
		return HealthErr
	}
	return HealthOK
}

// overran records that one evaluation of cr took d, over the rule budget,
// and quarantines the rule at the QuarantineAfter-th overrun within
// QuarantineWindow.
func (e *Engine) overran(cr *compiledRule, a *devices.Asset, d time.Duration) {
	q := &cr.quar
	q.mu.Lock()
	if q.on.Load() {
		q.mu.Unlock()
		return
	}
	k := e.opts.QuarantineAfter
	if len(q.strikes) != k {
		q.strikes = make([]int64, k)
	}
	now := time.Now()
	ns := now.UnixNano()
	q.strikes[q.next] = ns
	q.next = (q.next + 1) % k
	q.count++
	oldest := q.strikes[q.next] // after the write: the oldest of the last k
	tipped := q.count >= k && time.Duration(ns-oldest) <= e.opts.QuarantineWindow
	if tipped {
		q.at, q.took = now, d
		q.on.Store(true)
	}
	count := q.count
	q.mu.Unlock()
	at := fmt.Sprintf("%s:%d", cr.file, cr.line)
	if !tipped {
		e.log.Warn("rule evaluation over its time budget", "rule", cr.id(), "at", at, "asset", a.ID, "took", d,
			"budget", e.opts.RuleBudget, "overruns", count, "quarantine_after", k, "within", e.opts.QuarantineWindow)
		return
	}
	cr.m.quarantined.Set(1)
	cr.m.health.Set(0)
	e.log.Error("rule quarantined: its evaluation exceeded the time budget repeatedly; it is not evaluated until the rules are reloaded",
		"rule", cr.id(), "at", at, "asset", a.ID, "took", d, "budget", e.opts.RuleBudget,
		"overruns", k, "within", e.opts.QuarantineWindow)
}

// CheckBudget is the evaluation time budget `rules check` holds each rule
// to on its trial evaluation: the gateway's default rules.eval_budget.
const CheckBudget = 50 * time.Millisecond

// trialRun evaluates every when-rule of the set once against a made-up
// reading of its kind (every field present, zero, false or ""; the first
// asset of the kind in the inventory, or a bare one) and reports, at the
// rule's file:line, a rule stopped by the memory budget or slower than
// budget (0: not timed). Other run-time errors are left to the gateway:
// made-up values may divide by zero where real ones would not.
func trialRun(set *ruleSet, budget time.Duration) error {
	var errs yamlconf.Errors
	now := time.Now()
	for _, kind := range sortedKeys(set.kinds) {
		ks := set.kinds[kind]
		if len(ks.rules) == 0 {
			continue
		}
		a := &devices.Asset{ID: "trial", Kind: kind, Schema: ks.schema, Attrs: map[string]any{}}
		if len(ks.assets) > 0 {
			a = ks.assets[0]
		}
		vals := make([]devices.Value, len(ks.schema.Fields))
		for i, f := range ks.schema.Fields {
			switch f.Type {
			case devices.Bool:
				vals[i] = devices.BoolValue(false)
			case devices.Int:
				vals[i] = devices.IntValue(0)
			case devices.Float:
				vals[i] = devices.FloatValue(0)
			default:
				vals[i] = devices.StringValue("")
			}
		}
		st := &assetState{}
		st.record(vals, now.UnixNano(), now.UnixNano(), ks, 16)
		c := newEvalCtx(time.UTC)
		for _, cr := range ks.rules {
			c.reset(ks, a, st, vals, now, time.UTC)
			t0 := time.Now()
			_, err := c.vm.Run(cr.prog, c)
			d := time.Since(t0)
			pos := &yamlconf.Error{File: cr.file, Line: cr.line, Column: cr.col, Field: "rule " + cr.id() + ".when"}
			switch {
			case err != nil && strings.Contains(err.Error(), "memory budget exceeded"):
				pos.Msg = "stopped by the memory budget on a trial evaluation (rules may not build large ranges, arrays or strings): " + err.Error()
				errs = append(errs, pos)
			case budget > 0 && d > budget:
				pos.Msg = fmt.Sprintf("a trial evaluation took %s, over the %s evaluation budget: the gateway would quarantine this rule", d.Round(time.Microsecond), budget)
				errs = append(errs, pos)
			}
		}
		c.release()
	}
	return errs.Err()
}
