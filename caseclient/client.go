package caseclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/rules"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

// deliverer sends one operation to one case system.
type deliverer interface {
	deliver(ctx context.Context, o *op, sc *sinkCase) result
}

// sinkRT is a configured sink at run time.
type sinkRT struct {
	cfg      SinkConfig
	d        deliverer
	o311     *open311Sink // nil for a webhook
	br       *Breaker
	wake     chan struct{}
	disabled atomic.Bool

	// Flood control (used by the sink's delivery goroutine only).
	sent      []time.Time
	ruleSent  map[string][]time.Time
	throttled map[uint64]bool
}

func (s *sinkRT) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

type pendingOp struct {
	sink     string
	enqueued time.Time
}

// Client turns episode transitions into cases; it implements rules.Sink.
type Client struct {
	cfg     Config
	codes   *CodeTable
	log     *slog.Logger
	m       *metrics
	st      *store
	now     func() time.Time
	backoff Backoff
	sinks   []*sinkRT
	byName  map[string]*sinkRT

	mu      sync.Mutex
	b       builder
	exprs   map[string]string
	cases   map[string]*caseState // by episode id
	pending map[uint64]pendingOp
	dead    int

	running   sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

var _ rules.Sink = (*Client)(nil)

// New opens (or creates) the outbox at cfg.Outbox and returns a client. The
// code table and inventory are used to build case content; reg receives the
// client's metrics.
func New(cfg Config, codes *CodeTable, inv *devices.Inventory, reg prometheus.Registerer, log *slog.Logger) (*Client, error) {
	if codes == nil || inv == nil {
		return nil, errors.New("case client: a code table and an inventory are required")
	}
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("case client config: %w", err)
	}
	for _, sc := range cfg.Sinks {
		if sc.Type != SinkOpen311 {
			continue
		}
		for _, name := range sortedKeys(codes.Services) {
			if s := codes.Services[name]; s.ServiceCode(sc.Name) == "" {
				return nil, fmt.Errorf("case client: %s:%d: service %q has no service_code for sink %q (nor a default)", s.File, s.Line, name, sc.Name)
			}
		}
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, codes: codes, log: log, now: time.Now, byName: map[string]*sinkRT{},
		backoff: Backoff{Base: cfg.RetryBase.D(), Max: cfg.RetryMax.D()}, pending: map[uint64]pendingOp{}}
	if cfg.Now != nil {
		c.now = cfg.Now
	}
	c.b = builder{codes: codes, inv: inv, telemetry: cfg.TelemetryURL, exprs: func(r string) string { return c.exprs[r] },
		anomaly: cfg.Replicas}
	st, err := openStore(cfg.Outbox)
	if err != nil {
		return nil, err
	}
	c.st = st
	if c.cases, err = st.cases(); err != nil {
		st.close()
		return nil, fmt.Errorf("reading case state: %w", err)
	}
	ops, err := st.ops("")
	if err != nil {
		st.close()
		return nil, fmt.Errorf("reading the case outbox: %w", err)
	}
	var orphans []*op
	for _, o := range ops {
		if !slices.ContainsFunc(cfg.Sinks, func(s SinkConfig) bool { return s.Name == o.Sink }) {
			orphans = append(orphans, o)
			continue
		}
		c.pending[o.Seq] = pendingOp{sink: o.Sink, enqueued: o.Enqueued}
	}
	if len(orphans) > 0 {
		// Operations for a sink no longer configured would wait forever.
		err := st.db.Update(func(tx *bolt.Tx) error {
			for _, o := range orphans {
				if err := deadOp(tx, o, "sink "+o.Sink+" is no longer configured"); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			st.close()
			return nil, fmt.Errorf("moving operations of removed sinks to the dead letters: %w", err)
		}
		log.Warn("operations for sinks no longer configured moved to the dead letters", "count", len(orphans))
	}
	dead, err := st.dead()
	if err != nil {
		st.close()
		return nil, fmt.Errorf("reading dead letters: %w", err)
	}
	c.dead = len(dead)
	c.m, err = newMetrics(reg, c.depth, c.oldest)
	if err != nil {
		st.close()
		return nil, err
	}
	c.m.dead.Set(float64(c.dead))
	for _, sc := range cfg.Sinks {
		s := &sinkRT{cfg: sc, br: &Breaker{Threshold: cfg.BreakerFailures, Cooldown: cfg.BreakerCooldown.D()},
			wake: make(chan struct{}, 1), ruleSent: map[string][]time.Time{}, throttled: map[uint64]bool{}}
		hc := newHTTPClient(sc.Timeout.D())
		switch sc.Type {
		case SinkOpen311:
			s.o311 = &open311Sink{cfg: sc, codes: codes, hc: hc, now: c.now}
			s.d = s.o311
		case SinkWebhook:
			key, _ := decodeSecret(string(sc.Secret)) // checked by Validate
			s.d = &webhookSink{cfg: sc, key: key, hc: hc, now: c.now}
		}
		if url, _ := st.meta("disabled:" + sc.Name); url != "" && url == sc.URL {
			s.disabled.Store(true)
			log.Warn("case sink stays disabled: it answered 410 Gone at this URL; change the URL to enable it", "sink", sc.Name)
		}
		c.sinks = append(c.sinks, s)
		c.byName[sc.Name] = s
		c.m.sinkUp.WithLabelValues(sc.Name).Set(b2f(!s.disabled.Load()))
	}
	return c, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// SetRuleExpressions gives the client the rules' expressions (rule id ->
// `when`), shown in case content; see RuleExpressions.
func (c *Client) SetRuleExpressions(m map[string]string) {
	c.mu.Lock()
	c.exprs = m
	c.mu.Unlock()
}

func (c *Client) depth() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return float64(len(c.pending))
}

func (c *Client) oldest() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var old time.Time
	for _, p := range c.pending {
		if old.IsZero() || p.enqueued.Before(old) {
			old = p.enqueued
		}
	}
	if old.IsZero() {
		return 0
	}
	return c.now().Sub(old).Seconds()
}

// Transitions records what the transitions mean for cases and persists the
// resulting operations (fsynced) before returning nil: that return is the
// acknowledgement to the rule engine. On error nothing was recorded and the
// engine retries the batch.
func (c *Client) Transitions(ctx context.Context, ts []rules.Transition) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	backup := map[string]*caseState{}
	var added []*op
	err := c.st.db.Update(func(tx *bolt.Tx) error {
		for i := range ts {
			if err := c.apply(tx, &ts[i], now, backup, &added); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		for ep, old := range backup {
			if old == nil {
				delete(c.cases, ep)
			} else {
				c.cases[ep] = old
			}
		}
		return fmt.Errorf("persisting case operations: %w", err)
	}
	c.added(added)
	return nil
}

// added indexes newly persisted ops and wakes their sinks.
func (c *Client) added(ops []*op) {
	for _, o := range ops {
		c.pending[o.Seq] = pendingOp{sink: o.Sink, enqueued: o.Enqueued}
		if s := c.byName[o.Sink]; s != nil {
			s.poke()
		}
	}
}

// keep saves a copy of an episode's state before its first change in a
// transaction, for rollback.
func keep(backup map[string]*caseState, ep string, st *caseState) {
	if _, ok := backup[ep]; ok {
		return
	}
	if st == nil {
		backup[ep] = nil
		return
	}
	backup[ep] = st.clone()
}

func (c *Client) apply(tx *bolt.Tx, t *rules.Transition, now time.Time, backup map[string]*caseState, added *[]*op) error {
	ignore := func(why string) { c.m.ignored.WithLabelValues(why).Inc() }
	switch {
	case t.Shadow:
		ignore("shadow")
		return nil
	case t.To == rules.Pending:
		ignore("pending")
		return nil
	case t.From == rules.Pending && t.To == rules.Inactive:
		ignore("cancelled")
		return nil
	}
	st := c.cases[t.EpisodeID]
	if t.To == rules.Firing {
		if st != nil {
			if !st.Firing || t.Severity == st.Severity {
				ignore("duplicate")
				return nil
			}
			keep(backup, t.EpisodeID, st)
			st.Severity, st.SevChanged = t.Severity, true
			if now.Sub(st.LastUpdate) >= c.cfg.RepeatInterval.D() {
				if err := c.remind(tx, st, now, added); err != nil {
					return err
				}
			}
			return putCase(tx, st)
		}
		cs, err := c.b.build(t)
		if err != nil {
			c.log.Error("cannot open a case", "rule", t.Rule, "episode", t.EpisodeID, "err", err)
			ignore("unknown_service")
			return nil
		}
		keep(backup, t.EpisodeID, nil)
		st = &caseState{Episode: t.EpisodeID, Rule: t.Rule, Firing: true, Severity: t.Severity, Start: t.Start,
			FiredAt: t.Time, LastUpdate: now, Case: cs, Sinks: map[string]*sinkCase{}}
		c.cases[t.EpisodeID] = st
		for _, s := range c.sinks {
			if s.disabled.Load() {
				continue
			}
			sc := &sinkCase{Key: cs.Key, Status: scQueued}
			st.Sinks[s.cfg.Name] = sc
			o := &op{ID: sc.Key + ":open", Sink: s.cfg.Name, Kind: opOpen, Episode: st.Episode, Rule: st.Rule, Anomaly: st.anomaly(),
				CaseKey: sc.Key, Case: cs, Severity: st.Severity, At: t.Time, Enqueued: now}
			if err := putOp(tx, o); err != nil {
				return err
			}
			*added = append(*added, o)
		}
		return putCase(tx, st)
	}
	// Firing -> Inactive.
	if st == nil {
		ignore("unknown_episode")
		return nil
	}
	if !st.Firing {
		ignore("duplicate")
		return nil
	}
	keep(backup, t.EpisodeID, st)
	st.Firing, st.EndedAt = false, t.Time
	kind, text := opCleared, clearedText(st, t)
	if t.Reason != "" && t.Reason != "cleared" {
		kind = opUpdate
		text = fmt.Sprintf("规则已变更，网关停止跟踪本异常 the gateway stopped watching this anomaly (%s) at %s; it has NOT been verified cleared.",
			t.Reason, t.Time.UTC().Format(time.RFC3339))
	}
	for _, s := range c.sinks {
		sc := st.Sinks[s.cfg.Name]
		if sc == nil || (sc.Status != scQueued && sc.Status != scOpen) {
			continue
		}
		sc.ReopenAt = time.Time{}
		id := sc.Key + ":cleared"
		if kind == opUpdate {
			st.Updates++
			id = fmt.Sprintf("%s:u%d", sc.Key, st.Updates)
		}
		o := &op{ID: id, Sink: s.cfg.Name, Kind: kind, Episode: st.Episode, Rule: st.Rule, Anomaly: st.anomaly(), CaseKey: sc.Key,
			Text: text, Severity: st.Severity, At: t.Time, Enqueued: now}
		if err := putOp(tx, o); err != nil {
			return err
		}
		*added = append(*added, o)
	}
	for _, sc := range st.Sinks {
		sc.ReopenAt = time.Time{}
	}
	return putCase(tx, st)
}

func clearedText(st *caseState, t *rules.Transition) string {
	var b strings.Builder
	fmt.Fprintf(&b, "异常已消除，待核查 anomaly cleared, awaiting verification: the condition of rule %s no longer holds since %s (first seen %s, lasted %s).",
		t.Rule, t.Time.UTC().Format(time.RFC3339), st.Start.UTC().Format(time.RFC3339), t.Time.Sub(st.Start).Round(time.Second))
	if len(t.Assets) > 0 {
		fmt.Fprintf(&b, " Assets: %s.", strings.Join(t.Assets, " "))
	}
	if len(t.Values) > 0 {
		fmt.Fprintf(&b, " Last evidence: %s.", kv(jsonSafe(t.Values)))
	}
	if st.Case != nil && st.Case.Telemetry != "" {
		fmt.Fprintf(&b, " Telemetry: %s.", st.Case.Telemetry)
	}
	b.WriteString(" The gateway does not close cases: verify and close on the case system.")
	return b.String()
}

// remind enqueues a "still active" update (with the current severity) to
// each sink whose case is open or queued. Called with c.mu held.
func (c *Client) remind(tx *bolt.Tx, st *caseState, now time.Time, added *[]*op) error {
	text := fmt.Sprintf("异常持续 anomaly persists: rule %s has held since %s (%s); severity %s.",
		st.Rule, st.Start.UTC().Format(time.RFC3339), now.Sub(st.Start).Round(time.Minute), st.Severity)
	if st.SevChanged {
		text = fmt.Sprintf("等级变更 severity changed to %s. ", st.Severity) + text
	}
	for _, s := range c.sinks {
		sc := st.Sinks[s.cfg.Name]
		if sc == nil || (sc.Status != scQueued && sc.Status != scOpen) {
			continue
		}
		st.Updates++
		o := &op{ID: fmt.Sprintf("%s:u%d", sc.Key, st.Updates), Sink: s.cfg.Name, Kind: opUpdate, Episode: st.Episode, Anomaly: st.anomaly(),
			Rule: st.Rule, CaseKey: sc.Key, Text: text, Severity: st.Severity, At: now, Enqueued: now}
		if err := putOp(tx, o); err != nil {
			return err
		}
		*added = append(*added, o)
	}
	st.LastUpdate, st.SevChanged = now, false
	return nil
}

// housekeep sends due reminders and severity changes, re-opens cases the
// case system closed while the anomaly persists, and forgets ended cases
// after the retention.
func (c *Client) housekeep() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	repeat := c.cfg.RepeatInterval.D()
	var due []*caseState
	for _, st := range c.cases {
		if st.Firing && now.Sub(st.LastUpdate) >= repeat && (st.SevChanged || *c.cfg.Remind) {
			due = append(due, st)
			continue
		}
		if st.Firing {
			for _, sc := range st.Sinks {
				if !sc.ReopenAt.IsZero() && !now.Before(sc.ReopenAt) {
					due = append(due, st)
					break
				}
			}
			continue
		}
		if !st.EndedAt.IsZero() && now.Sub(st.EndedAt) > c.cfg.Retention.D() && !c.hasOps(st.Episode) {
			due = append(due, st)
		}
	}
	if len(due) == 0 {
		return nil
	}
	sort.Slice(due, func(i, j int) bool { return due[i].Start.Before(due[j].Start) })
	backup := map[string]*caseState{}
	var added []*op
	var forget []string
	err := c.st.db.Update(func(tx *bolt.Tx) error {
		for _, st := range due {
			keep(backup, st.Episode, st)
			if !st.Firing {
				forget = append(forget, st.Episode)
				if err := tx.Bucket(bCases).Delete([]byte(st.Episode)); err != nil {
					return err
				}
				continue
			}
			if now.Sub(st.LastUpdate) >= repeat && (st.SevChanged || *c.cfg.Remind) {
				if err := c.remind(tx, st, now, &added); err != nil {
					return err
				}
			}
			for _, name := range sortedKeys(st.Sinks) {
				sc := st.Sinks[name]
				if sc.ReopenAt.IsZero() || now.Before(sc.ReopenAt) || c.byName[name] == nil {
					continue
				}
				prev, prevID := sc.target(), sc.ID
				sc.Previous = append(sc.Previous, prev+"="+prevID)
				sc.Gen++
				sc.Key, sc.ID, sc.Token, sc.Status, sc.ReopenAt, sc.Accepted, sc.ClosedAt = caseKey(st.Episode, sc.Gen), "", "", scQueued, time.Time{}, time.Time{}, time.Time{}
				sc.Attached = ""
				cs := *st.Case
				cs.Key, cs.Generation, cs.Reopens, cs.ReopensID, cs.Severity = sc.Key, sc.Gen, prev, prevID, st.Severity
				o := &op{ID: sc.Key + ":open", Sink: name, Kind: opOpen, Episode: st.Episode, Rule: st.Rule, Anomaly: st.anomaly(), CaseKey: sc.Key,
					Case: &cs, Severity: st.Severity, At: now, Enqueued: now}
				if err := putOp(tx, o); err != nil {
					return err
				}
				added = append(added, o)
				c.log.Info("re-opening a case the case system closed while the anomaly persists", "sink", name,
					"rule", st.Rule, "episode", st.Episode, "previous", prev, "previous_id", prevID, "case", sc.Key)
			}
			if err := putCase(tx, st); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		for ep, old := range backup {
			c.cases[ep] = old
		}
		return fmt.Errorf("case housekeeping: %w", err)
	}
	for _, ep := range forget {
		delete(c.cases, ep)
	}
	c.added(added)
	return nil
}

func (c *Client) hasOps(episode string) bool {
	// pending holds no episode; ops of ended cases are few, read them.
	ops, err := c.st.ops("")
	if err != nil {
		return true
	}
	for _, o := range ops {
		if o.Episode == episode {
			return true
		}
	}
	return false
}

// Run delivers the outbox, polls case status and does housekeeping until
// ctx ends.
func (c *Client) Run(ctx context.Context) error {
	c.running.Add(1)
	defer c.running.Done()
	var wg sync.WaitGroup
	for _, s := range c.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.deliverLoop(ctx, s)
		}()
	}
	tick := time.NewTicker(c.cfg.DeliveryInterval.D())
	defer tick.Stop()
	poll := time.NewTicker(c.cfg.PollInterval.D())
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-tick.C:
			if err := c.housekeep(); err != nil {
				c.log.Error("case housekeeping failed", "err", err)
			}
		case <-poll.C:
			c.pollStatus(ctx)
		}
	}
}

// Close closes the outbox. Cancel Run's context first; Close waits for Run
// to return.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.running.Wait()
		c.closeErr = c.st.close()
	})
	return c.closeErr
}
