package rules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Sink receives episode transitions. The case client implements it; it is
// called from the goroutine that caused the transitions, one call at a time.
type Sink interface {
	Transitions(ctx context.Context, ts []Transition) error
}

// Options configure an Engine. Zero values take the defaults noted.
type Options struct {
	Location  *time.Location // the city's time zone for hour(), weekday(), between(); default UTC
	Sink      Sink           // receives transitions; nil drops them (status page only)
	StatePath string         // bbolt file for engine state; "" keeps state in memory only
	Silences  []Silence      // maintenance windows

	TickInterval     time.Duration // Run's evaluation tick for time-driven work; default 5s
	SnapshotInterval time.Duration // Run's state snapshot interval; default 30s
	MaxSamples       int           // per asset and field history cap; default 4096
	EvalBudget       time.Duration // a reading whose rules take longer is counted and logged; 0 = off
	// RuleBudget is one rule's evaluation time budget against one reading;
	// default EvalBudget (0 with EvalBudget 0: off). Rules are timed one by
	// one only on readings that follow one whose rules took longer than
	// this (of the same asset or kind), so a healthy gateway pays nothing
	// per rule; a rule measured over it QuarantineAfter times within
	// QuarantineWindow is quarantined until the next reload.
	RuleBudget       time.Duration
	QuarantineAfter  int           // default 3
	QuarantineWindow time.Duration // default 10m
	// DisplaySamples is the length of the display history: the last N
	// values of every numeric field of every asset, for the status page's
	// sparklines. Default 8; negative turns it off.
	DisplaySamples int
	LogEvery       time.Duration // at most one run-time error log line per rule per this; default 1m
	HealthWindow   time.Duration // a rule with an error within this is unhealthy; default 5m
	ReloadDebounce time.Duration // wait after a file change before reloading; default 250ms
	Now            func() time.Time
	// SeenElsewhere, when set, is asked before an absence rule calls an
	// asset silent that this engine has not heard from: a reading stored
	// there since counts as heard (rules.absence: shared, for replicas that
	// each receive only their share of the assets).
	SeenElsewhere SeenElsewhere
}

func (o *Options) defaults() {
	if o.Location == nil {
		o.Location = time.UTC
	}
	if o.TickInterval <= 0 {
		o.TickInterval = 5 * time.Second
	}
	if o.SnapshotInterval <= 0 {
		o.SnapshotInterval = 30 * time.Second
	}
	if o.MaxSamples <= 0 {
		o.MaxSamples = 4096
	}
	if o.RuleBudget <= 0 {
		o.RuleBudget = o.EvalBudget
	}
	if o.QuarantineAfter <= 0 {
		o.QuarantineAfter = 3
	}
	if o.QuarantineWindow <= 0 {
		o.QuarantineWindow = 10 * time.Minute
	}
	if o.DisplaySamples == 0 {
		o.DisplaySamples = 8
	}
	o.DisplaySamples = min(o.DisplaySamples, math.MaxUint16)
	if o.LogEvery <= 0 {
		o.LogEvery = time.Minute
	}
	if o.HealthWindow <= 0 {
		o.HealthWindow = 5 * time.Minute
	}
	if o.ReloadDebounce <= 0 {
		o.ReloadDebounce = 250 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// ruleSet is one loaded, compiled set of rules; it is replaced as a whole.
type ruleSet struct {
	files []string
	kinds map[string]*kindSet
	rules []*compiledRule // sorted by id
	order []*compiledRule // inhibiting rules before the rules they inhibit
	byID  map[string]*compiledRule
}

// inhibitDepth is how many inhibiting rules stand above cr (cycles cut).
func inhibitDepth(cr *compiledRule, seen map[*compiledRule]bool) int {
	if seen[cr] {
		return 0
	}
	seen[cr] = true
	d := 0
	for _, src := range cr.inhibitedBy {
		d = max(d, 1+inhibitDepth(src, seen))
	}
	delete(seen, cr)
	return d
}

// orderByInhibition sorts rules so that a rule is evaluated after the rules
// that may inhibit it: when both change state at one instant, the
// inhibitor is firing by the time its target would be notified.
func orderByInhibition(rs []*compiledRule) {
	depth := map[*compiledRule]int{}
	for _, cr := range rs {
		depth[cr] = inhibitDepth(cr, map[*compiledRule]bool{})
	}
	sort.SliceStable(rs, func(i, j int) bool { return depth[rs[i]] < depth[rs[j]] })
}

type metrics struct {
	evals       prometheus.Counter
	readings    prometheus.Counter
	dur         prometheus.Histogram
	health      *prometheus.GaugeVec
	errs        *prometheus.CounterVec
	skipped     *prometheus.CounterVec
	loaded      prometheus.Gauge
	lastOK      prometheus.Gauge
	reloads     *prometheus.CounterVec
	episodes    *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	overBudget  prometheus.Counter
	sinkErrs    prometheus.Counter
	quarantined *prometheus.GaugeVec
}

type ruleMetrics struct {
	errs        prometheus.Counter
	skipped     prometheus.Counter
	health      prometheus.Gauge
	quarantined prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		evals: prometheus.NewCounter(prometheus.CounterOpts{Name: "citygw_rule_evaluations_total",
			Help: "Rule evaluations (one rule against one reading or one asset on a tick)."}),
		readings: prometheus.NewCounter(prometheus.CounterOpts{Name: "citygw_rule_readings_total",
			Help: "Readings evaluated by the rule engine."}),
		dur: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "citygw_rule_eval_duration_seconds",
			Help:    "Time to evaluate all rules of a kind against one reading.",
			Buckets: []float64{1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 2e-3, 1e-2, 5e-2, 0.25}}),
		health: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "citygw_rule_health",
			Help: "1 when the rule evaluated without run-time error within the health window, else 0."}, []string{"rule"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_rule_eval_errors_total",
			Help: "Run-time errors of rule expressions."}, []string{"rule"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_rule_skipped_total",
			Help: "Evaluations skipped because the reading lacked a field the rule reads (a partial poll)."}, []string{"rule"}),
		loaded: prometheus.NewGauge(prometheus.GaugeOpts{Name: "citygw_rules_loaded", Help: "Rules in the running set."}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "citygw_rules_last_reload_success",
			Help: "1 when the last (re)load of the rule files succeeded."}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_rules_reload_total",
			Help: "Rule (re)loads by result."}, []string{"result"}),
		episodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "citygw_episodes",
			Help: "Current anomaly episodes by state."}, []string{"state"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_episode_transitions_total",
			Help: "Episode transitions handed to the sink, by new state."}, []string{"to"}),
		overBudget: prometheus.NewCounter(prometheus.CounterOpts{Name: "citygw_rule_eval_over_budget_total",
			Help: "Readings whose rule evaluation took longer than the budget."}),
		sinkErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "citygw_rule_sink_errors_total",
			Help: "Failed hand-overs of transitions to the sink (retried on the next tick)."}),
		quarantined: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "citygw_rule_quarantined",
			Help: "1 when the rule is quarantined (over its evaluation time budget repeatedly; not evaluated until the next reload)."}, []string{"rule"}),
	}
	for _, c := range []prometheus.Collector{m.evals, m.readings, m.dur, m.health, m.errs, m.skipped, m.loaded, m.lastOK,
		m.reloads, m.episodes, m.transitions, m.overBudget, m.sinkErrs, m.quarantined} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering rule engine metrics: %w", err)
		}
	}
	return m, nil
}

// Engine evaluates loaded rules against readings and emits episode
// transitions. It is safe for concurrent use; readings of one asset must be
// passed to Eval in arrival order (they are serialised per asset).
type Engine struct {
	opts   Options
	cat    *devices.Catalog
	inv    *devices.Inventory
	log    *slog.Logger
	m      *metrics
	set    atomic.Pointer[ruleSet]
	loadMu sync.Mutex
	assets []assetState
	pool   sync.Pool
	start  int64
	epoch  time.Time // Eval measures its duration on the monotonic clock from here
	// absence confirms absences with Options.SeenElsewhere (nil without).
	absence *absenceCheck

	budgetLog atomic.Int64 // last over-budget log line, unix ns

	fmu    sync.RWMutex
	firing map[string]map[string]map[string]string // rule -> group key -> group labels

	silMu    sync.RWMutex
	silences []Silence

	snapMu  sync.Mutex
	snapBuf []byte // the last snapshot's last-seen JSON, reused

	emitMu sync.Mutex
	retry  []Transition
	// persistMu orders the state file's writes: a rule's record written
	// by the snapshot and its series written by emit land in the order
	// they were read from the rule.
	persistMu sync.Mutex
	db        *stateDB
	// restored is the persisted state not yet claimed by a loaded rule.
	restored map[string]*ruleRecord
}

// NewEngine returns an engine with no rules loaded. With opts.StatePath set it
// opens (or creates) the state file and restores what the last run left
// there; the state is attached to rules as Load brings them in.
func NewEngine(opts Options, cat *devices.Catalog, inv *devices.Inventory, reg prometheus.Registerer, log *slog.Logger) (*Engine, error) {
	if cat == nil || inv == nil {
		return nil, errors.New("rule engine: a catalog and an inventory are required")
	}
	opts.defaults()
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	e := &Engine{opts: opts, cat: cat, inv: inv, log: log, m: m, assets: make([]assetState, inv.Len()),
		firing: map[string]map[string]map[string]string{}}
	if err := e.SetSilences(opts.Silences); err != nil {
		return nil, err
	}
	e.start = opts.Now().UnixNano()
	e.epoch = time.Now()
	for i := range e.assets {
		e.assets[i].seen.Store(e.start)
	}
	e.pool.New = func() any { return newEvalCtx(e.opts.Location) }
	if opts.SeenElsewhere != nil {
		e.absence = newAbsenceCheck(opts.SeenElsewhere, inv.Len(), opts.TickInterval, reg, log)
	}
	if opts.StatePath != "" {
		db, err := openStateDB(opts.StatePath)
		if err != nil {
			return nil, err
		}
		e.db = db
		recs, seen, err := db.load()
		if err != nil {
			db.close()
			return nil, err
		}
		e.restored = recs
		for id, ns := range seen {
			if a := inv.Lookup(id); a != nil && ns > 0 {
				e.assets[a.Seq].seen.Store(ns)
			}
		}
	}
	m.lastOK.Set(0)
	return e, nil
}

// SetSilences replaces the maintenance windows.
func (e *Engine) SetSilences(ss []Silence) error {
	for i := range ss {
		if err := ss[i].Validate(); err != nil {
			return err
		}
	}
	e.silMu.Lock()
	e.silences = append([]Silence(nil), ss...)
	e.silMu.Unlock()
	return nil
}

// Close writes a final snapshot and closes the state file.
func (e *Engine) Close() error {
	if e.db == nil {
		return nil
	}
	err := e.Snapshot()
	if cerr := e.db.close(); err == nil {
		err = cerr
	}
	return err
}

// compile reads, checks and compiles rule files against the engine's
// catalog and inventory; every problem is reported.
func compileFiles(cat *devices.Catalog, inv *devices.Inventory, files []string) (*ruleSet, error) {
	c := newCompiler(cat, inv)
	seen := map[string]string{}
	set := &ruleSet{files: files, byID: map[string]*compiledRule{}}
	for _, f := range files {
		pf, err := readRuleFile(f)
		if err != nil {
			c.errs = append(c.errs, err)
			continue
		}
		set.rules = append(set.rules, c.compileFile(pf, seen)...)
	}
	for _, cr := range set.rules {
		set.byID[cr.id()] = cr
	}
	for _, cr := range set.rules {
		if cr.spec.Inhibit == nil {
			continue
		}
		for _, t := range cr.spec.Inhibit.Rules {
			target := set.byID[t]
			switch {
			case target == nil:
				c.errs = append(c.errs, &yamlconf.Error{File: cr.file, Line: cr.line, Column: cr.col,
					Field: "rule " + cr.id() + ".inhibit.rules", Msg: fmt.Sprintf("no rule %q in the loaded files", t)})
			case target == cr:
				c.errs = append(c.errs, &yamlconf.Error{File: cr.file, Line: cr.line, Column: cr.col,
					Field: "rule " + cr.id() + ".inhibit.rules", Msg: "a rule cannot inhibit itself"})
			default:
				target.inhibitedBy = append(target.inhibitedBy, cr)
			}
		}
	}
	if err := c.errs.Err(); err != nil {
		return nil, err
	}
	sort.Slice(set.rules, func(i, j int) bool { return set.rules[i].id() < set.rules[j].id() })
	set.order = append([]*compiledRule(nil), set.rules...)
	orderByInhibition(set.order)
	for _, ks := range c.kinds {
		orderByInhibition(ks.rules)
		orderByInhibition(ks.absence)
		orderByInhibition(ks.ageRules)
	}
	set.kinds = c.kinds
	return set, nil
}

// Load compiles and checks the rule files in full and, when all is well,
// replaces the running set. On error the old set keeps running. Rules whose
// condition and grouping are unchanged keep their episodes.
func (e *Engine) Load(files ...string) error {
	e.loadMu.Lock()
	defer e.loadMu.Unlock()
	set, err := compileFiles(e.cat, e.inv, files)
	if err != nil {
		e.m.reloads.WithLabelValues("failure").Inc()
		e.m.lastOK.Set(0)
		e.log.Error("rule files rejected; the previous rules keep running", "files", files, "err", err)
		return fmt.Errorf("loading rules: %w", err)
	}
	if err := trialRun(set, e.opts.RuleBudget); err != nil {
		// Made-up values may mislead; the gateway's own measurements decide.
		e.log.Warn("rule trial evaluation", "err", err)
	}
	now := e.opts.Now()
	old := e.set.Load()
	var out []Transition
	var cleared []string
	if old != nil {
		for _, cr := range old.rules {
			if cr.quar.on.Load() {
				cleared = append(cleared, cr.id())
			}
		}
	}
	for _, cr := range set.rules {
		cr.m = ruleMetrics{errs: e.m.errs.WithLabelValues(cr.id()), skipped: e.m.skipped.WithLabelValues(cr.id()),
			health: e.m.health.WithLabelValues(cr.id()), quarantined: e.m.quarantined.WithLabelValues(cr.id())}
		cr.m.health.Set(1)
		cr.m.quarantined.Set(0) // a reload compiles anew: quarantine is cleared
		if old != nil {
			if prev := old.byID[cr.id()]; prev != nil && prev.fingerprint == cr.fingerprint {
				cr.st = prev.st
				continue
			}
		}
		cr.st = newRuleState()
		if rec := e.restored[cr.id()]; rec != nil {
			delete(e.restored, cr.id())
			if rec.Fingerprint == cr.fingerprint {
				e.restore(cr, rec)
				continue
			}
			out = append(out, e.endRecord(cr.id(), rec, cr, now, "rule_changed")...)
		}
	}
	if old != nil {
		for _, prev := range old.rules {
			cr := set.byID[prev.id()]
			if cr != nil && cr.st == prev.st {
				continue
			}
			reason := "rule_removed"
			if cr != nil {
				reason = "rule_changed"
			}
			out = append(out, e.endRule(prev, now, reason)...)
			if cr == nil {
				e.m.health.DeleteLabelValues(prev.id())
				e.m.errs.DeleteLabelValues(prev.id())
				e.m.skipped.DeleteLabelValues(prev.id())
				e.m.quarantined.DeleteLabelValues(prev.id())
				if e.db != nil {
					if err := e.db.deleteRule(prev.id()); err != nil {
						e.log.Error("dropping state of a removed rule", "rule", prev.id(), "err", err)
					}
				}
			}
		}
	}
	// Persisted rules the new set no longer has.
	for id, rec := range e.restored {
		if set.byID[id] == nil && old == nil {
			out = append(out, e.endRecord(id, rec, nil, now, "rule_removed")...)
			delete(e.restored, id)
		}
	}
	e.set.Store(set)
	e.fmu.Lock()
	for id := range e.firing {
		if cr := set.byID[id]; cr == nil {
			delete(e.firing, id)
		}
	}
	e.fmu.Unlock()
	e.m.loaded.Set(float64(len(set.rules)))
	e.m.lastOK.Set(1)
	e.m.reloads.WithLabelValues("success").Inc()
	if len(cleared) > 0 {
		e.log.Info("rules loaded", "files", files, "rules", len(set.rules), "quarantine_cleared", cleared)
	} else {
		e.log.Info("rules loaded", "files", files, "rules", len(set.rules))
	}
	if len(out) > 0 {
		e.emit(context.Background(), out, set)
	}
	return nil
}

// counterValue reads a counter's value for a log line.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil || m.Counter == nil {
		return 0
	}
	return m.Counter.GetValue()
}

// Reload loads the files of the last successful Load again.
func (e *Engine) Reload() error {
	set := e.set.Load()
	if set == nil {
		return errors.New("reload: no rules loaded yet")
	}
	return e.Load(set.files...)
}

// endRule resolves the notified episodes of a rule leaving the set.
func (e *Engine) endRule(cr *compiledRule, now time.Time, reason string) []Transition {
	var out []Transition
	cr.st.mu.Lock()
	defer cr.st.mu.Unlock()
	for _, s := range cr.st.series {
		if s.notified != Inactive {
			out = append(out, e.transition(cr, s, s.notified, Inactive, now, reason))
			s.notified = Inactive
		}
		if s.state == Firing {
			e.setFiring(cr, s, false)
		}
	}
	return out
}

// stateOf returns the asset state of a, or nil for an asset not in the
// engine's inventory.
func (e *Engine) stateOf(a *devices.Asset) *assetState {
	if a == nil || a.Seq < 0 || a.Seq >= len(e.assets) || e.inv.Assets[a.Seq] != a {
		return nil
	}
	return &e.assets[a.Seq]
}

func readingTime(r *devices.Reading, now func() time.Time) time.Time {
	switch {
	case !r.Time.IsZero():
		return r.Time
	case !r.Received.IsZero():
		return r.Received
	}
	return now()
}

// Eval evaluates the rules of the reading's kind against it. It does not
// retain r.
func (e *Engine) Eval(ctx context.Context, r *devices.Reading) {
	set := e.set.Load()
	st := e.stateOf(r.Asset)
	if st == nil {
		return
	}
	a := r.Asset
	var ks *kindSet
	if set != nil {
		ks = set.kinds[a.Kind]
	}
	t0 := time.Since(e.epoch) // the monotonic clock alone: cheaper than time.Now
	now := readingTime(r, e.opts.Now)
	st.mu.Lock()
	seenAt := now
	if !r.Received.IsZero() {
		seenAt = r.Received
	}
	st.record(r.Values, now.UnixNano(), seenAt.UnixNano(), ks, e.opts.MaxSamples)
	if e.opts.DisplaySamples > 0 && a.Schema != nil {
		st.disp.push(now.UnixNano(), r.Values, e.opts.DisplaySamples, a.Schema)
	}
	if ks == nil || len(ks.schema.Fields) != len(r.Values) {
		st.mu.Unlock()
		return
	}
	c := e.pool.Get().(*evalCtx)
	c.reset(ks, a, st, r.Values, now, e.opts.Location)
	// Time rules one by one only after a reading (of this asset or kind)
	// whose rules took longer than one rule may: a healthy gateway reads
	// no clock per rule.
	c.timed = e.opts.RuleBudget > 0 && (st.slow || ks.slow.Load())
	for _, cr := range ks.rules {
		e.evalRule(cr, c, now)
	}
	for _, cr := range ks.absence {
		e.observe(cr, a, false, now, c)
	}
	d := time.Since(e.epoch) - t0
	if e.opts.RuleBudget > 0 {
		slow := d > e.opts.RuleBudget
		st.slow = slow
		if slow {
			ks.slow.Store(true)
		} else if c.timed && ks.slow.Load() {
			ks.slow.Store(false)
		}
	}
	c.timed = false
	st.mu.Unlock()
	n := len(ks.rules) + len(ks.absence)
	e.m.evals.Add(float64(n))
	e.m.readings.Inc()
	e.m.dur.Observe(d.Seconds())
	if e.opts.EvalBudget > 0 && d > e.opts.EvalBudget {
		e.m.overBudget.Inc()
		if now, last := time.Now().UnixNano(), e.budgetLog.Load(); now-last >= int64(e.opts.LogEvery) && e.budgetLog.CompareAndSwap(last, now) {
			e.log.Warn("rule evaluation over budget", "asset", a.ID, "kind", a.Kind, "rules", n, "took", d,
				"budget", e.opts.EvalBudget, "total_over_budget", counterValue(e.m.overBudget))
		}
	}
	if len(c.out) > 0 {
		out := append([]Transition(nil), c.out...)
		c.release()
		e.pool.Put(c)
		e.emit(ctx, out, set)
		return
	}
	c.release()
	e.pool.Put(c)
}

// evalRule runs one rule's expression for the context's asset.
func (e *Engine) evalRule(cr *compiledRule, c *evalCtx, now time.Time) {
	if cr.quar.on.Load() {
		return // quarantined: its state stays as it was, as after an error
	}
	var res any
	var err error
	if c.timed {
		t0 := time.Now()
		res, err = c.vm.Run(cr.prog, c)
		if d := time.Since(t0); d > e.opts.RuleBudget {
			e.overran(cr, c.asset, d)
		}
	} else {
		res, err = c.vm.Run(cr.prog, c)
	}
	cond := false
	if err != nil {
		if errors.Is(err, errIncomplete) {
			cr.m.skipped.Inc()
			return // state unchanged until a reading carries the fields
		}
		if !errors.Is(err, errNoData) {
			e.ruleError(cr, c.asset, err)
			return // state unchanged: an error says nothing about the condition
		}
	} else {
		cond, _ = res.(bool)
	}
	e.observe(cr, c.asset, cond, now, c)
}

func (e *Engine) ruleError(cr *compiledRule, a *devices.Asset, err error) {
	cr.m.errs.Inc()
	now := time.Now().UnixNano()
	cr.st.lastErr.Store(now)
	cr.m.health.Set(0)
	last := cr.st.lastLog.Load()
	if now-last < int64(e.opts.LogEvery) || !cr.st.lastLog.CompareAndSwap(last, now) {
		cr.st.dropped.Add(1)
		return
	}
	e.log.Warn("rule evaluation failed", "rule", cr.id(), "asset", a.ID, "err", err,
		"suppressed", cr.st.dropped.Swap(0))
}

// observe records asset a's condition for a rule and advances the series.
func (e *Engine) observe(cr *compiledRule, a *devices.Asset, cond bool, now time.Time, c *evalCtx) {
	rs := cr.st
	if !cond && rs.nseries.Load() == 0 {
		// No series at all: none to leave and none to start. (A series
		// created meanwhile by another asset does not count a's
		// membership: a's own evaluations are serialised.)
		return
	}
	key := cr.key(a)
	rs.mu.Lock()
	s := rs.series[key]
	if s == nil {
		if !cond {
			rs.mu.Unlock()
			return
		}
		s = &series{key: key, labels: cr.groupLabels(key, a), members: map[int]struct{}{}}
		rs.setSeries(key, s)
	}
	if cond {
		if _, ok := s.members[a.Seq]; !ok {
			s.members[a.Seq] = struct{}{}
			rs.dirty.Store(true)
		}
		if s.rep != a {
			s.rep = a // (no store when unchanged: the series stays clean in other cores' caches)
		}
	} else if _, ok := s.members[a.Seq]; ok {
		delete(s.members, a.Seq)
		rs.dirty.Store(true)
	}
	var out *[]Transition
	if c != nil {
		out = &c.out
	} else {
		out = new([]Transition)
	}
	e.advance(cr, s, len(s.members) >= cr.need(key), now, c, out)
	if s.state == Inactive && len(s.members) == 0 {
		rs.deleteSeries(key)
	}
	rs.mu.Unlock()
	if c == nil && len(*out) > 0 {
		e.emit(context.Background(), *out, e.set.Load())
	}
}

// advance steps the series and, on a change, records evidence and tells the
// sink what it should know. Called with the rule's lock held.
func (e *Engine) advance(cr *compiledRule, s *series, cond bool, now time.Time, c *evalCtx, out *[]Transition) {
	from, changed := step(cr, s, cond, now)
	if !changed {
		return
	}
	cr.st.dirty.Store(true)
	if s.state != Inactive && c != nil {
		s.values = capture(cr, c)
	}
	if from != Firing && s.state == Firing {
		e.setFiring(cr, s, true)
	} else if from == Firing && s.state != Firing {
		e.setFiring(cr, s, false)
	}
	e.notify(cr, s, now, "", out)
}

// notify emits the transition from what the sink was told to the series'
// state, unless the series is muted (silenced or inhibited).
func (e *Engine) notify(cr *compiledRule, s *series, now time.Time, reason string, out *[]Transition) {
	target := s.state
	if target != Inactive {
		s.muted = e.muteReason(cr, s, now)
		if s.muted != "" {
			return
		}
	}
	if target == s.notified {
		return
	}
	if reason == "" {
		switch {
		case target == Inactive && s.notified == Firing:
			reason = "cleared"
		case target == Inactive:
			reason = "cancelled"
		}
	}
	*out = append(*out, e.transition(cr, s, s.notified, target, now, reason))
	s.notified = target
}

func capture(cr *compiledRule, c *evalCtx) map[string]any {
	v := make(map[string]any, len(cr.probes))
	for _, p := range cr.probes {
		if x := c.probeValue(p); x != nil {
			v[p.name] = x
		}
	}
	return v
}

func (e *Engine) setFiring(cr *compiledRule, s *series, on bool) {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	m := e.firing[cr.id()]
	if on {
		if m == nil {
			m = map[string]map[string]string{}
			e.firing[cr.id()] = m
		}
		m[s.key] = s.labels
	} else if m != nil {
		delete(m, s.key)
	}
}

// muteReason returns why a series must not be notified: an active silence
// or a firing episode of an inhibiting rule; "" when it may.
func (e *Engine) muteReason(cr *compiledRule, s *series, now time.Time) string {
	e.silMu.RLock()
	for i := range e.silences {
		if sl := &e.silences[i]; sl.active(now) && e.silenced(sl, cr, s) {
			e.silMu.RUnlock()
			return "silence:" + sl.ID
		}
	}
	e.silMu.RUnlock()
	if len(cr.inhibitedBy) == 0 {
		return ""
	}
	e.fmu.RLock()
	defer e.fmu.RUnlock()
	for _, src := range cr.inhibitedBy {
		for key, labels := range e.firing[src.id()] {
			if inhibits(src, labels, s) {
				return "inhibited:" + src.id() + "/" + key
			}
		}
	}
	return ""
}

// inhibits reports whether a firing episode of src with group labels
// matches target series s.
func inhibits(src *compiledRule, labels map[string]string, s *series) bool {
	for target, label := range src.inhibits {
		want, ok := labels[label]
		if !ok {
			return false
		}
		got, ok := s.labels[target]
		if !ok {
			if s.rep == nil {
				return false
			}
			got = assetProp(s.rep, target)
		}
		if got != want {
			return false
		}
	}
	return len(src.inhibits) > 0
}

func (e *Engine) silenced(sl *Silence, cr *compiledRule, s *series) bool {
	if len(sl.Rules) > 0 {
		ok := false
		for _, r := range sl.Rules {
			if r == cr.id() || strings.HasSuffix(r, "*") && strings.HasPrefix(cr.id(), strings.TrimSuffix(r, "*")) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(sl.Assets) > 0 {
		ok := false
		for _, id := range sl.Assets {
			if a := e.inv.Lookup(id); a != nil {
				if _, in := s.members[a.Seq]; in || s.key == id || s.rep == a {
					ok = true
					break
				}
			}
		}
		if !ok {
			return false
		}
	}
	for k, v := range sl.Labels {
		got, ok := s.labels[k]
		if !ok {
			got, ok = cr.labels[k]
		}
		if !ok && s.rep != nil {
			got, ok = assetProp(s.rep, k), true
		}
		if !ok || got != v {
			return false
		}
	}
	return true
}

// transition builds the sink's view of a state change.
func (e *Engine) transition(cr *compiledRule, s *series, from, to State, now time.Time, reason string) Transition {
	assets := s.memberIDs(e.inv)
	if len(assets) == 0 {
		assets = s.assets // cleared: the assets of the episode
	} else if to != Inactive {
		s.assets = assets
	}
	t := Transition{EpisodeID: s.id, Rule: cr.id(), Kind: cr.kind, GroupKey: s.key, GroupLabels: s.labels,
		Assets: assets, From: from, To: to, Reason: reason, Time: now, Start: s.activeAt,
		Severity: cr.spec.Severity, Shadow: cr.spec.Shadow, Values: s.values, Thresholds: cr.thresholds,
		Service: cr.spec.Case.Service}
	if cr.groups != nil {
		t.GroupSize = cr.groups.size[s.key]
	}
	t.Labels = make(map[string]string, len(cr.labels)+len(s.labels))
	for k, v := range s.labels {
		t.Labels[k] = v
	}
	for k, v := range cr.labels {
		t.Labels[k] = v
	}
	td := &TemplateData{Rule: RuleInfo{ID: cr.id(), Kind: cr.kind, Severity: cr.spec.Severity, Description: cr.spec.Description},
		Asset: s.rep, Assets: t.Assets, Group: s.key, GroupLabels: s.labels, Labels: t.Labels, Values: s.values,
		Thresholds: cr.thresholds, Count: len(s.members), Size: t.GroupSize, State: to.String(), Start: s.activeAt, Time: now,
		Location: e.opts.Location}
	if td.Asset == nil {
		td.Asset = &devices.Asset{ID: s.key}
	}
	var err error
	if t.Title, err = render(cr.title, td); err != nil {
		t.Title = cr.spec.Case.Title
	}
	if t.Description, err = render(cr.desc, td); err != nil {
		t.Description = cr.spec.Case.Description
	}
	s.title, s.desc = t.Title, t.Description
	return t
}

// emit persists the state of the rules involved, then hands the
// transitions to the sink.
func (e *Engine) emit(ctx context.Context, ts []Transition, set *ruleSet) {
	e.emitMu.Lock()
	defer e.emitMu.Unlock()
	if e.db != nil && set != nil {
		keys := map[*compiledRule][]string{}
		for _, t := range ts {
			if cr := set.byID[t.Rule]; cr != nil && !slices.Contains(keys[cr], t.GroupKey) {
				keys[cr] = append(keys[cr], t.GroupKey)
			}
		}
		if len(keys) > 0 {
			e.persistMu.Lock()
			err := e.db.saveSeries(keys, e.inv)
			e.persistMu.Unlock()
			if err != nil {
				e.log.Error("persisting rule state", "err", err)
			}
		}
	}
	for _, t := range ts {
		e.m.transitions.WithLabelValues(t.To.String()).Inc()
		e.log.Info("episode transition", "rule", t.Rule, "group", t.GroupKey, "episode", t.EpisodeID,
			"from", t.From.String(), "to", t.To.String(), "reason", t.Reason, "shadow", t.Shadow)
	}
	if e.opts.Sink == nil {
		return
	}
	batch := append(e.retry, ts...)
	if err := e.opts.Sink.Transitions(ctx, batch); err != nil {
		e.m.sinkErrs.Inc()
		e.log.Error("handing transitions to the sink failed; will retry", "count", len(batch), "err", err)
		e.retry = batch
		return
	}
	e.retry = nil
}

// Tick does the time-driven work at now: absence rules and age() rules,
// pending episodes whose `for` has passed, firing episodes whose
// keep_firing_for has passed, and episodes whose silence or inhibition ended.
func (e *Engine) Tick(ctx context.Context, now time.Time) {
	set := e.set.Load()
	if set == nil {
		return
	}
	nowNs := now.UnixNano()
	c := e.pool.Get().(*evalCtx)
	for _, kind := range sortedKeys(set.kinds) {
		ks := set.kinds[kind]
		var unjudged []bool // by asset Seq: its absence cannot be confirmed this tick
		if e.absence != nil && len(ks.absence) > 0 {
			unjudged = e.absence.confirm(ctx, e, ks, now)
		}
		for _, cr := range ks.absence {
			for _, a := range ks.assets {
				if unjudged != nil && unjudged[a.Seq] {
					continue
				}
				st := &e.assets[a.Seq]
				e.observe(cr, a, nowNs-st.seenNs() >= int64(cr.absent), now, c)
			}
			e.m.evals.Add(float64(len(ks.assets)))
		}
		if len(ks.ageRules) == 0 {
			continue
		}
		for _, a := range ks.assets {
			st := &e.assets[a.Seq]
			st.mu.Lock()
			c.scratch = st.lastValues(c.scratch)
			vals := c.scratch
			if len(vals) != len(ks.schema.Fields) {
				vals = make([]devices.Value, len(ks.schema.Fields))
			}
			c.reset(ks, a, st, vals, now, e.opts.Location)
			for _, cr := range ks.ageRules {
				e.evalRule(cr, c, now)
			}
			st.mu.Unlock()
			e.m.evals.Add(float64(len(ks.ageRules)))
		}
	}
	counts := [3]int{}
	for _, cr := range set.order {
		rs := cr.st
		rs.mu.Lock()
		for key, s := range rs.series {
			e.advance(cr, s, len(s.members) >= cr.need(key), now, nil, &c.out)
			if s.state != Inactive {
				if s.state != s.notified {
					e.notify(cr, s, now, "unmuted", &c.out)
				} else {
					s.muted = e.muteReason(cr, s, now)
				}
			}
			if s.state == Inactive && len(s.members) == 0 {
				rs.deleteSeries(key)
				continue
			}
			counts[s.state]++
		}
		rs.mu.Unlock()
		if e.health(cr, time.Now().UnixNano()) == HealthOK {
			cr.m.health.Set(1)
		}
	}
	e.m.episodes.WithLabelValues("pending").Set(float64(counts[Pending]))
	e.m.episodes.WithLabelValues("firing").Set(float64(counts[Firing]))
	out := append([]Transition(nil), c.out...)
	c.release()
	e.pool.Put(c)
	e.emitMu.Lock()
	retry := len(e.retry) > 0
	e.emitMu.Unlock()
	if len(out) > 0 || retry {
		e.emit(ctx, out, set)
	}
}

// Episodes returns the current pending and firing episodes, sorted by rule
// and group key.
func (e *Engine) Episodes() []Episode {
	set := e.set.Load()
	if set == nil {
		return nil
	}
	var out []Episode
	for _, cr := range set.rules {
		cr.st.mu.Lock()
		for _, s := range cr.st.series {
			if s.state == Inactive {
				continue
			}
			out = append(out, Episode{ID: s.id, Rule: cr.id(), Kind: cr.kind, GroupKey: s.key, GroupLabels: s.labels,
				Assets: s.memberIDs(e.inv), State: s.state, Start: s.activeAt, FiredAt: s.firedAt,
				Severity: cr.spec.Severity, Shadow: cr.spec.Shadow, Muted: s.muted, Notified: s.notified, Values: s.values,
				Title: s.title, Description: s.desc})
		}
		cr.st.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Rule != out[j].Rule {
			return out[i].Rule < out[j].Rule
		}
		return out[i].GroupKey < out[j].GroupKey
	})
	return out
}

// Snapshot writes the engine state (episodes and when each asset was last
// seen) to the state file; a no-op without one.
func (e *Engine) Snapshot() error {
	if e.db == nil {
		return nil
	}
	set := e.set.Load()
	if set != nil {
		e.persistMu.Lock()
		for _, cr := range set.rules {
			if cr.st.dirty.Load() {
				if err := e.db.saveRule(cr, e.inv); err != nil {
					e.persistMu.Unlock()
					return err
				}
			}
		}
		e.persistMu.Unlock()
	}
	e.snapMu.Lock()
	defer e.snapMu.Unlock()
	e.snapBuf = e.appendSeenJSON(e.snapBuf[:0])
	return e.db.saveSeen(e.snapBuf)
}

// appendSeenJSON appends when each asset was last seen, as the JSON object
// {asset id: unix ns} the state file holds, written straight from the
// assets' state: at 126,000 assets a map and encoding/json's sorting and
// reflection cost tens of megabytes of garbage per snapshot.
func (e *Engine) appendSeenJSON(buf []byte) []byte {
	buf = append(buf, '{')
	first := true
	for i := range e.assets {
		ns := e.assets[i].seen.Load()
		if ns == e.start {
			continue
		}
		if !first {
			buf = append(buf, ',')
		}
		first = false
		buf = appendJSONString(buf, e.inv.Assets[i].ID)
		buf = append(buf, ':')
		buf = strconv.AppendInt(buf, ns, 10)
	}
	return append(buf, '}')
}

// appendJSONString appends s as a JSON string: as is when it is printable
// ASCII without quotes or backslashes (asset ids), else through
// encoding/json.
func appendJSONString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, err := json.Marshal(s)
			if err != nil { // cannot happen for a string
				return append(buf, `""`...)
			}
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
}

// Run ticks the engine, reloads the rule files when they change and
// snapshots state, until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching rule files: %w", err)
	}
	defer w.Close()
	watched := map[string]bool{}
	watch := func() {
		set := e.set.Load()
		if set == nil {
			return
		}
		for _, f := range set.files {
			dir := filepath.Dir(f)
			if !watched[dir] {
				if err := w.Add(dir); err != nil {
					e.log.Warn("cannot watch rule directory", "dir", dir, "err", err)
					continue
				}
				watched[dir] = true
			}
		}
	}
	watch()
	tick := time.NewTicker(e.opts.TickInterval)
	defer tick.Stop()
	snap := time.NewTicker(e.opts.SnapshotInterval)
	defer snap.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := e.Snapshot(); err != nil {
				e.log.Error("final state snapshot", "err", err)
			}
			return nil
		case <-tick.C:
			e.Tick(ctx, e.opts.Now())
		case <-snap.C:
			if err := e.Snapshot(); err != nil {
				e.log.Error("state snapshot", "err", err)
			}
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("rule file watcher closed")
			}
			if e.isRuleFile(ev.Name) {
				debounce.Reset(e.opts.ReloadDebounce)
			}
		case err, ok := <-w.Errors:
			if ok {
				e.log.Warn("rule file watcher", "err", err)
			}
		case <-debounce.C:
			if err := e.Reload(); err == nil {
				watch()
			}
		}
	}
}

func (e *Engine) isRuleFile(name string) bool {
	set := e.set.Load()
	if set == nil {
		return false
	}
	abs, _ := filepath.Abs(name)
	for _, f := range set.files {
		if fa, _ := filepath.Abs(f); fa == abs {
			return true
		}
	}
	return false
}
