package rules

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	bolt "go.etcd.io/bbolt"

	"github.com/citygw/citygw/devices"
)

const leakRule = `rules:
  - id: cabinet.leak
    kind: cabinet
    when: leakage_ma > 30
    for: 2m
    keep_firing_for: 3m
    severity: critical
    labels: {team: lighting}
    case:
      service: leak
      title: "漏电 {{ .Asset.ID }} {{ fmt .Values.leakage_ma }} mA"
      description: "{{ .Rule.ID }} {{ .State }} {{ index .Thresholds \"leakage_ma >\" }}"
`

var t0 = time.Date(2026, 3, 10, 6, 0, 0, 0, time.UTC)

func min_(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }

func feedLeak(t *testing.T, e *Engine, asset string, from int, vals ...float64) {
	t.Helper()
	a := e.inv.Lookup(asset)
	for i, v := range vals {
		e.Eval(context.Background(), reading(t, a, min_(from+i), map[string]any{"leakage_ma": v, "mains_ok": true}))
	}
}

func TestTransitionsCarryEvidence(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 2)
	sink := &memSink{}
	f := writeRules(t, t.TempDir(), "r.yaml", leakRule)
	e, _ := newTestEngine(t, Options{Sink: sink}, inv, cat, f)

	feedLeak(t, e, "CAB0", 0, 5, 40, 41, 42, 5, 5, 5, 5)
	ts := sink.take()
	want := []struct {
		from, to State
		at       int
		reason   string
	}{{Inactive, Pending, 1, ""}, {Pending, Firing, 3, ""}, {Firing, Inactive, 7, "cleared"}}
	if len(ts) != len(want) {
		t.Fatalf("got %d transitions, want %d: %+v", len(ts), len(want), ts)
	}
	id := episodeID("cabinet.leak", "CAB0", min_(1))
	for i, w := range want {
		tr := ts[i]
		if tr.From != w.from || tr.To != w.to || !tr.Time.Equal(min_(w.at)) || tr.Reason != w.reason {
			t.Errorf("transition %d: %s->%s at %s (%s), want %s->%s at %dm (%s)", i, tr.From, tr.To, tr.Time, tr.Reason, w.from, w.to, w.at, w.reason)
		}
		if tr.EpisodeID != id || !tr.Start.Equal(min_(1)) {
			t.Errorf("transition %d: episode %s start %s, want %s start 1m", i, tr.EpisodeID, tr.Start, id)
		}
		if tr.Rule != "cabinet.leak" || tr.GroupKey != "CAB0" || tr.Service != "leak" || tr.Severity != "critical" ||
			tr.Labels["team"] != "lighting" || strings.Join(tr.Assets, ",") != "CAB0" {
			t.Errorf("transition %d: bad identity %+v", i, tr)
		}
	}
	fired := ts[1]
	if fired.Title != "漏电 CAB0 42 mA" {
		t.Errorf("title %q", fired.Title)
	}
	if fired.Description != "cabinet.leak firing 30" {
		t.Errorf("description %q", fired.Description)
	}
	if fired.Values["leakage_ma"] != 42.0 || fired.Thresholds["leakage_ma >"] != 30 {
		t.Errorf("evidence values %v thresholds %v", fired.Values, fired.Thresholds)
	}
	if len(e.Episodes()) != 0 {
		t.Errorf("episodes left: %+v", e.Episodes())
	}
}

func TestTickFiresAndClearsWithoutReadings(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	sink := &memSink{}
	e, _ := newTestEngine(t, Options{Sink: sink}, inv, cat, writeRules(t, t.TempDir(), "r.yaml", leakRule))
	feedLeak(t, e, "CAB0", 0, 40)
	e.Tick(context.Background(), min_(1))
	if eps := e.Episodes(); len(eps) != 1 || eps[0].State != Pending {
		t.Fatalf("episodes %+v, want one pending", eps)
	}
	e.Tick(context.Background(), min_(2))
	if eps := e.Episodes(); len(eps) != 1 || eps[0].State != Firing || !eps[0].FiredAt.Equal(min_(2)) {
		t.Fatalf("episodes %+v, want firing since 2m", eps)
	}
	feedLeak(t, e, "CAB0", 3, 5)
	e.Tick(context.Background(), min_(5))
	if len(e.Episodes()) != 1 {
		t.Fatal("cleared before keep_firing_for")
	}
	e.Tick(context.Background(), min_(6))
	if eps := e.Episodes(); len(eps) != 0 {
		t.Fatalf("still %+v after keep_firing_for", eps)
	}
	if n := len(sink.take()); n != 3 {
		t.Fatalf("%d transitions, want 3", n)
	}
}

// leakEnv is what the restart tests share: leakRule in the file f, two
// cabinets, and the state file the engines keep.
type leakEnv struct {
	cat   *devices.Catalog
	inv   *devices.Inventory
	f     string
	state string
}

func newLeakEnv(t *testing.T) *leakEnv {
	cat := testCatalog(t)
	dir := t.TempDir()
	return &leakEnv{cat: cat, inv: testInventory(t, cat, 2), f: writeRules(t, dir, "r.yaml", leakRule), state: filepath.Join(dir, "state.db")}
}

// start opens an engine on state (the env's file, or another path) with
// the rule loaded; the test closes it.
func (le *leakEnv) start(t *testing.T, state string, sink *memSink) *Engine {
	t.Helper()
	e, err := NewEngine(Options{Sink: sink, StatePath: state}, le.cat, le.inv, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Load(le.f); err != nil {
		e.Close()
		t.Fatal(err)
	}
	return e
}

// wantRestored checks the episodes leakEpisodes leaves: CAB0 firing, CAB1
// pending.
func wantRestored(t *testing.T, e *Engine) {
	t.Helper()
	if eps := e.Episodes(); len(eps) != 2 || eps[0].State != Firing || eps[1].State != Pending {
		t.Fatalf("restored episodes %+v, want CAB0 firing and CAB1 pending", eps)
	}
}

// leakEpisodes feeds CAB0 into firing (at 2m) and CAB1 into pending
// (since 1m): three transitions.
func leakEpisodes(t *testing.T, e *Engine) {
	feedLeak(t, e, "CAB0", 0, 40, 40, 40)
	feedLeak(t, e, "CAB1", 1, 50)
}

func TestRestartKeepsEpisodes(t *testing.T) {
	le := newLeakEnv(t)
	sink := &memSink{}
	e1 := le.start(t, le.state, sink)
	leakEpisodes(t, e1)
	before := sink.take()
	if len(before) != 3 {
		t.Fatalf("before restart: %d transitions", len(before))
	}
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}

	// A new process: same state file, same rules.
	sink2 := &memSink{}
	e2 := le.start(t, le.state, sink2)
	defer e2.Close()
	wantRestored(t, e2)
	feedLeak(t, e2, "CAB0", 3, 40, 40)
	feedLeak(t, e2, "CAB1", 3, 50) // pending since 1m: fires at 3m, not 2m after the restart
	ts := sink2.take()
	if len(ts) != 1 || ts[0].To != Firing || ts[0].GroupKey != "CAB1" || !ts[0].Start.Equal(min_(1)) {
		t.Fatalf("after restart: %+v, want only CAB1 firing with its original start", ts)
	}
	if ts[0].EpisodeID != before[2].EpisodeID {
		t.Fatalf("CAB1's episode renamed across restart: %s vs %s", ts[0].EpisodeID, before[2].EpisodeID)
	}
	feedLeak(t, e2, "CAB0", 5, 5, 5, 5, 5)
	ts = sink2.take()
	if len(ts) != 1 || !ts[0].Resolved() || ts[0].EpisodeID != before[1].EpisodeID {
		t.Fatalf("resolution %+v, want CAB0's original episode %s", ts, before[1].EpisodeID)
	}
}

func TestRestartWithChangedRuleResolvesOldEpisode(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	dir := t.TempDir()
	f := writeRules(t, dir, "r.yaml", leakRule)
	state := filepath.Join(dir, "state.db")
	e1, err := NewEngine(Options{StatePath: state}, cat, inv, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e1.Load(f); err != nil {
		t.Fatal(err)
	}
	feedLeak(t, e1, "CAB0", 0, 40, 40, 40)
	e1.Close()
	writeRules(t, dir, "r.yaml", strings.Replace(leakRule, "> 30", "> 35", 1))
	sink := &memSink{}
	e2, err := NewEngine(Options{Sink: sink, StatePath: state}, cat, inv, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if err := e2.Load(f); err != nil {
		t.Fatal(err)
	}
	ts := sink.take()
	if len(ts) != 1 || !ts[0].Resolved() || ts[0].Reason != "rule_changed" {
		t.Fatalf("got %+v, want the old episode resolved as rule_changed", ts)
	}
}

func TestReload(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	dir := t.TempDir()
	sink := &memSink{}
	other := "\n  - id: cabinet.door\n    kind: cabinet\n    when: door_open\n    severity: minor\n    case: {service: s, title: t}\n"
	f := writeRules(t, dir, "r.yaml", leakRule+other)
	e, reg := newTestEngine(t, Options{Sink: sink}, inv, cat, f)
	feedLeak(t, e, "CAB0", 0, 40, 40, 40)
	sink.take()

	// A broken file: rejected, the old set keeps running.
	writeRules(t, dir, "r.yaml", leakRule+"  - id: broken\n")
	if err := e.Reload(); err == nil {
		t.Fatal("broken rules accepted")
	}
	if v := testutil.ToFloat64(e.m.lastOK); v != 0 {
		t.Fatalf("citygw_rules_last_reload_success = %v after a failure", v)
	}
	if v := testutil.ToFloat64(e.m.reloads.WithLabelValues("failure")); v != 1 {
		t.Fatalf("failed reloads = %v", v)
	}
	if n := len(e.set.Load().rules); n != 2 {
		t.Fatalf("%d rules after a failed reload, want the old 2", n)
	}

	// Another rule changed, this one unchanged: it keeps its episode.
	writeRules(t, dir, "r.yaml", leakRule+strings.Replace(other, "minor", "major", 1))
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if eps := e.Episodes(); len(eps) != 1 || eps[0].State != Firing {
		t.Fatalf("episodes after reload %+v", eps)
	}
	if ts := sink.take(); len(ts) != 0 {
		t.Fatalf("reload of an unchanged rule emitted %+v", ts)
	}
	if v := testutil.ToFloat64(e.m.lastOK); v != 1 {
		t.Fatalf("citygw_rules_last_reload_success = %v", v)
	}

	// The rule removed: its episode is resolved as rule_removed.
	writeRules(t, dir, "r.yaml", "rules:"+other)
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	ts := sink.take()
	if len(ts) != 1 || !ts[0].Resolved() || ts[0].Reason != "rule_removed" {
		t.Fatalf("got %+v", ts)
	}
	if n, _ := testutil.GatherAndCount(reg, "citygw_rule_health"); n != 1 {
		t.Fatalf("%d health series, want 1 (the removed rule's series deleted)", n)
	}
}

func TestRunTimeErrorMarksRuleUnhealthyOnly(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	rules := leakRule + `  - id: cabinet.bad
    kind: cabinet
    when: leakage_ma > asset.no_such_attr
    severity: minor
    case: {service: s, title: t}
  - id: cabinet.missing
    kind: cabinet
    when: va_v < 100
    severity: minor
    case: {service: s, title: t}
`
	e, reg := newTestEngine(t, Options{}, inv, cat, writeRules(t, t.TempDir(), "r.yaml", rules))
	feedLeak(t, e, "CAB0", 0, 40, 40, 40) // va_v is not in these readings: partial polls
	if eps := e.Episodes(); len(eps) != 1 || eps[0].Rule != "cabinet.leak" {
		t.Fatalf("the healthy rule stopped: %+v", eps)
	}
	// A field the asset's model reports but a reading lacks (a request of the
	// poll failed) skips the rule; it is not the rule's fault.
	for rule, want := range map[string]float64{"cabinet.bad": 0, "cabinet.missing": 1, "cabinet.leak": 1} {
		if v := testutil.ToFloat64(e.m.health.WithLabelValues(rule)); v != want {
			t.Errorf("health{%s} = %v, want %v", rule, v, want)
		}
	}
	if v := testutil.ToFloat64(e.m.errs.WithLabelValues("cabinet.bad")); v != 3 {
		t.Errorf("errors{cabinet.bad} = %v, want 3", v)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP citygw_rule_eval_errors_total Run-time errors of rule expressions.
# TYPE citygw_rule_eval_errors_total counter
citygw_rule_eval_errors_total{rule="cabinet.bad"} 3
citygw_rule_eval_errors_total{rule="cabinet.leak"} 0
citygw_rule_eval_errors_total{rule="cabinet.missing"} 0
`), "citygw_rule_eval_errors_total"); err != nil {
		t.Error(err)
	}
	if v := testutil.ToFloat64(e.m.skipped.WithLabelValues("cabinet.missing")); v != 3 {
		t.Errorf("skipped{cabinet.missing} = %v, want 3", v)
	}
}

// TestFieldTheModelLacksIsAnError: a kind with two models where one never
// reports a field a rule reads: that rule is unhealthy for the other model's
// assets (a rule or profile problem, unlike a partial reading).
func TestFieldTheModelLacksIsAnError(t *testing.T) {
	base := testCatalog(t)
	lite, err := devices.ParseProfile("lite.yaml", []byte(`model: cabinet-lite
kind: cabinet
transport: modbus
fields:
  - {name: leakage_ma, table: input, address: 6, type: uint16, scale: 0.1}
`))
	if err != nil {
		t.Fatal(err)
	}
	var profiles []*devices.Profile
	for _, p := range base.Profiles {
		profiles = append(profiles, p)
	}
	cat, err := devices.NewCatalog(append(profiles, lite)...)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := devices.NewInventory(cat, []*devices.Asset{{ID: "CAB-LITE", Model: "cabinet-lite", Lat: 31.2, Lon: 121.5,
		Modbus: &devices.ModbusAddr{Host: "10.0.0.1:502", Unit: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := newTestEngine(t, Options{}, inv, cat, writeRules(t, t.TempDir(), "r.yaml", `rules:
  - id: cabinet.low_voltage
    kind: cabinet
    when: va_v < 100
    severity: minor
    case: {service: s, title: t}
`))
	a := inv.Lookup("CAB-LITE")
	e.Eval(context.Background(), reading(t, a, time.Unix(1_700_000_000, 0), map[string]any{"leakage_ma": 1.5}))
	if v := testutil.ToFloat64(e.m.health.WithLabelValues("cabinet.low_voltage")); v != 0 {
		t.Errorf("health = %v, want 0: cabinet-lite never reports va_v", v)
	}
}

func TestRulesIndexedByKind(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	e, _ := newTestEngine(t, Options{}, inv, cat, writeRules(t, t.TempDir(), "r.yaml", genRules(40, "")))
	feedLeak(t, e, "CAB0", 0, 1)
	if v := testutil.ToFloat64(e.m.evals); v != 10 {
		t.Fatalf("a cabinet reading ran %v evaluations, want its kind's 10 of 40", v)
	}
}

func TestShadowAndSilence(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 2)
	sink := &memSink{}
	rules := strings.Replace(leakRule, "    severity: critical\n", "    severity: critical\n    shadow: true\n", 1)
	sil := []Silence{{ID: "m1", Assets: []string{"CAB1"}, Start: min_(0), End: min_(30)}}
	e, _ := newTestEngine(t, Options{Sink: sink, Silences: sil}, inv, cat, writeRules(t, t.TempDir(), "r.yaml", rules))
	feedLeak(t, e, "CAB0", 0, 40, 40, 40)
	feedLeak(t, e, "CAB1", 0, 40, 40, 40)
	ts := sink.take()
	if len(ts) != 2 {
		t.Fatalf("got %+v, want CAB0's two transitions only", ts)
	}
	for _, tr := range ts {
		if !tr.Shadow || tr.GroupKey != "CAB0" {
			t.Fatalf("transition %+v: want shadow, CAB0", tr)
		}
	}
	// The silence ends while CAB1 is still firing: the sink hears of it then.
	e.Tick(context.Background(), min_(31))
	ts = sink.take()
	if len(ts) != 1 || ts[0].GroupKey != "CAB1" || ts[0].To != Firing || ts[0].Reason != "unmuted" || !ts[0].Start.Equal(min_(0)) {
		t.Fatalf("after the silence: %+v", ts)
	}
	if err := (&Silence{ID: "x", Start: min_(0), End: min_(1)}).Validate(); err == nil {
		t.Fatal("a silence of everything was accepted")
	}
}

func TestSinkFailureIsRetried(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	sink := &memSink{err: errors.New("case system down")}
	e, _ := newTestEngine(t, Options{Sink: sink}, inv, cat, writeRules(t, t.TempDir(), "r.yaml", leakRule))
	feedLeak(t, e, "CAB0", 0, 40, 40, 40)
	sink.mu.Lock()
	sink.err = nil
	sink.mu.Unlock()
	e.Tick(context.Background(), min_(3))
	if ts := sink.take(); len(ts) != 2 || ts[0].To != Pending || ts[1].To != Firing {
		t.Fatalf("retried transitions %+v", ts)
	}
}

func TestConcurrentEval(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 16)
	sink := &memSink{}
	rules := leakRule + `  - id: cabinet.grouped
    kind: cabinet
    when: leakage_ma > 30
    group_by: [district]
    group: {at_least: 8}
    severity: minor
    case: {service: s, title: "{{ .Count }}"}
`
	e, _ := newTestEngine(t, Options{Sink: sink}, inv, cat, writeRules(t, t.TempDir(), "r.yaml", rules))
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 4; i++ {
				feedLeak(t, e, fmt.Sprintf("CAB%d", g*4+i), 0, 40, 40, 40, 40)
			}
		}(g)
	}
	go func() {
		for i := 0; i < 20; i++ {
			e.Tick(context.Background(), min_(2))
			e.Episodes()
		}
	}()
	wg.Wait()
	eps := e.Episodes()
	if len(eps) != 17 {
		t.Fatalf("%d episodes, want 16 assets + 1 group", len(eps))
	}
}

func TestRunReloadsOnFileChange(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	dir := t.TempDir()
	f := writeRules(t, dir, "r.yaml", leakRule)
	e, _ := newTestEngine(t, Options{TickInterval: 50 * time.Millisecond, ReloadDebounce: 20 * time.Millisecond}, inv, cat, f)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond) // let the watcher start
	writeRules(t, dir, "r.yaml", leakRule+"  - id: cabinet.door\n    kind: cabinet\n    when: door_open\n    severity: minor\n    case: {service: s, title: t}\n")
	deadline := time.Now().Add(10 * time.Second)
	for len(e.set.Load().rules) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("rule file change not picked up")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNewEngineRejectsBadState(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	p := filepath.Join(t.TempDir(), "state.db")
	if err := os.WriteFile(p, []byte("not a bolt file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewEngine(Options{StatePath: p}, cat, inv, nil, nil); err == nil {
		t.Fatal("corrupt state file accepted")
	}
}

func TestRemovedRuleIsNotResolvedTwiceAcrossRestart(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 1)
	dir := t.TempDir()
	state := filepath.Join(dir, "state.db")
	door := "rules:\n  - id: cabinet.door\n    kind: cabinet\n    when: door_open\n    severity: minor\n    case: {service: s, title: t}\n"
	f := writeRules(t, dir, "r.yaml", leakRule)
	sink := &memSink{}
	e1, err := NewEngine(Options{Sink: sink, StatePath: state}, cat, inv, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e1.Load(f); err != nil {
		t.Fatal(err)
	}
	feedLeak(t, e1, "CAB0", 0, 40, 40, 40)
	writeRules(t, dir, "r.yaml", door)
	if err := e1.Reload(); err != nil {
		t.Fatal(err)
	}
	if ts := sink.take(); len(ts) != 3 || ts[2].Reason != "rule_removed" {
		t.Fatalf("got %+v", ts)
	}
	e1.Close()
	e2, err := NewEngine(Options{Sink: sink, StatePath: state}, cat, inv, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if err := e2.Load(f); err != nil {
		t.Fatal(err)
	}
	if ts := sink.take(); len(ts) != 0 {
		t.Fatalf("the removed rule's episode was resolved again after restart: %+v", ts)
	}
}

// TestCrashKeepsEpisodesWrittenByTransitions: without the closing
// snapshot (a crash), the series each transition wrote are what the next
// process restores.
func TestCrashKeepsEpisodesWrittenByTransitions(t *testing.T) {
	le := newLeakEnv(t)
	sink := &memSink{}
	e1 := le.start(t, le.state, sink)
	defer e1.Close()
	leakEpisodes(t, e1)
	if n := len(sink.take()); n != 3 {
		t.Fatalf("%d transitions, want 3", n)
	}
	// The file as a crash would leave it: e1 still holds it open.
	data, err := os.ReadFile(le.state)
	if err != nil {
		t.Fatal(err)
	}
	crashed := filepath.Join(filepath.Dir(le.state), "crashed.db")
	if err := os.WriteFile(crashed, data, 0o600); err != nil {
		t.Fatal(err)
	}
	e2 := le.start(t, crashed, &memSink{})
	defer e2.Close()
	wantRestored(t, e2)
}

// TestStateFileOlderLayout: a state file written with one JSON record per
// rule (before series were written one by one) is converted and restored.
func TestStateFileOlderLayout(t *testing.T) {
	le := newLeakEnv(t)
	state := le.state
	e1 := le.start(t, state, &memSink{})
	leakEpisodes(t, e1)
	if err := e1.Close(); err != nil {
		t.Fatal(err)
	}
	// Rewrite the file in the older layout.
	db, err := openStateDB(state)
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := db.load()
	if err != nil || len(recs) != 1 {
		t.Fatalf("records %v, %v", recs, err)
	}
	err = db.db.Update(func(tx *bolt.Tx) error {
		rules := tx.Bucket(bucketRules)
		for id, rec := range recs {
			if err := rules.DeleteBucket([]byte(id)); err != nil {
				return err
			}
			data, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := rules.Put([]byte(id), data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db.close()

	e2 := le.start(t, state, &memSink{})
	defer e2.Close()
	wantRestored(t, e2)
}

// TestStateFileEmptyGroupKey: a series whose group key is empty (a group
// label the asset lacks) is kept like any other; bbolt takes no empty key.
func TestStateFileEmptyGroupKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := openStateDB(path)
	if err != nil {
		t.Fatal(err)
	}
	err = db.db.Update(func(tx *bolt.Tx) error {
		return putRule(tx.Bucket(bucketRules), "r", "fp", []seriesRecord{{Key: "", ID: "e1", State: Firing}, {Key: "a", ID: "e2", State: Pending}})
	})
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := db.load()
	db.close()
	if err != nil {
		t.Fatal(err)
	}
	r := recs["r"]
	if r == nil || r.Fingerprint != "fp" || len(r.Series) != 2 || r.Series[0].ID != "e1" || r.Series[1].ID != "e2" {
		t.Fatalf("loaded %+v", r)
	}
}
