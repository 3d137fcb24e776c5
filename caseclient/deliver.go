package caseclient

import (
	"context"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// deliverLoop delivers a sink's operations, one at a time, until ctx ends.
func (c *Client) deliverLoop(ctx context.Context, s *sinkRT) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-t.C:
		}
		c.deliverPass(ctx, s)
		t.Reset(c.cfg.DeliveryInterval.D())
	}
}

// allowOpen applies the flood caps to a new case at now.
func (c *Client) allowOpen(s *sinkRT, rule string, now time.Time) bool {
	cut := now.Add(-time.Minute)
	prune := func(ts []time.Time) []time.Time {
		i := 0
		for i < len(ts) && !ts[i].After(cut) {
			i++
		}
		return ts[i:]
	}
	s.sent = prune(s.sent)
	s.ruleSent[rule] = prune(s.ruleSent[rule])
	if len(s.ruleSent[rule]) == 0 {
		delete(s.ruleSent, rule)
	}
	if c.cfg.MaxOpensPerSink > 0 && len(s.sent) >= c.cfg.MaxOpensPerSink {
		return false
	}
	return c.cfg.MaxOpensPerRule <= 0 || len(s.ruleSent[rule]) < c.cfg.MaxOpensPerRule
}

// sinkCase returns a copy of an episode's case state at a sink.
func (c *Client) sinkCase(episode, sink string) *sinkCase {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.cases[episode]; st != nil {
		if sc := st.Sinks[sink]; sc != nil {
			cp := *sc
			return &cp
		}
	}
	return nil
}

// deliverPass tries every due operation of a sink once, in outbox order;
// an operation that is not delivered holds back the later operations of
// its episode, so a case's open, updates and cleared arrive in order.
func (c *Client) deliverPass(ctx context.Context, s *sinkRT) {
	ops, err := c.st.ops(s.cfg.Name)
	if err != nil {
		c.log.Error("reading the case outbox", "sink", s.cfg.Name, "err", err)
		return
	}
	held := map[string]bool{}
	for _, o := range ops {
		if ctx.Err() != nil {
			return
		}
		if held[o.Episode] {
			continue
		}
		now := c.now()
		if s.disabled.Load() {
			c.settle(s, o, result{permanent: true, reason: "gone", msg: "the sink is disabled (410 Gone)"}, now)
			continue
		}
		if now.Before(o.NotBefore) {
			held[o.Episode] = true
			continue
		}
		sc := c.sinkCase(o.Episode, s.cfg.Name)
		if o.Kind != opOpen && (sc == nil || sc.Status == scRejected || sc.Status == scGone || sc.Key != o.CaseKey) {
			c.settle(s, o, result{permanent: true, reason: "undeliverable", msg: "the case was never accepted by this sink"}, now)
			continue
		}
		if o.Kind != opOpen && s.o311 != nil {
			switch {
			case sc.ID == "" && sc.Status == scOpen && sc.Token == "":
				c.settle(s, o, result{permanent: true, reason: "undeliverable", msg: "the case system gave the case no id (blackbox service): updates cannot be posted"}, now)
				continue
			case sc.ID == "":
				held[o.Episode] = true // wait for the open, or for the batch token to resolve
				continue
			}
		}
		if o.Kind == opOpen && o.Attempts == 0 && !c.allowOpen(s, o.Rule, now) {
			if !s.throttled[o.Seq] {
				s.throttled[o.Seq] = true
				c.m.throttled.WithLabelValues(o.Rule, s.cfg.Name).Inc()
				c.log.Warn("new case held back by the flood cap; it stays in the outbox", "sink", s.cfg.Name, "rule", o.Rule, "case", o.CaseKey)
			}
			held[o.Episode] = true
			continue
		}
		if !s.br.Allow(now) {
			c.m.sinkUp.WithLabelValues(s.cfg.Name).Set(0)
			return
		}
		if s.o311 != nil && !o.Ambiguous {
			// Mark the attempt on disk first: if the process dies while the
			// request is in flight, the next attempt looks the case up
			// before posting again.
			sent := *o
			sent.Ambiguous = true
			if err := c.st.db.Update(func(tx *bolt.Tx) error { return putOp(tx, &sent) }); err != nil {
				c.log.Error("marking a case operation in flight", "sink", s.cfg.Name, "err", err)
				s.br.Failure(now) // releases a half-open probe
				return
			}
		}
		if s.o311 != nil && o.Kind == opOpen && c.cfg.LookupBeforeOpen {
			o.Ambiguous = true // another replica may have opened it: look before posting
		}
		if o.Kind == opOpen && o.Attempts == 0 {
			// A retry does not count again: the caps are on new cases.
			s.sent = append(s.sent, now)
			s.ruleSent[o.Rule] = append(s.ruleSent[o.Rule], now)
		}
		r := s.d.deliver(ctx, o, sc)
		if ctx.Err() != nil && !r.ok {
			return // shutting down: the op stays as it is on disk
		}
		c.settle(s, o, r, c.now())
		if !r.ok {
			held[o.Episode] = true
		}
	}
}

// settle records the outcome of an attempt.
func (c *Client) settle(s *sinkRT, o *op, r result, now time.Time) {
	name := s.cfg.Name
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.cases[o.Episode]
	var sc *sinkCase
	if st != nil {
		sc = st.Sinks[name]
		if sc != nil && sc.Key != o.CaseKey {
			sc = nil // an op of an earlier generation
		}
	}
	var old sinkCase
	if sc != nil {
		old = *sc
	}
	switch {
	case r.ok:
		if sc != nil && o.Kind == opOpen {
			sc.ID, sc.Token, sc.Status, sc.Accepted, sc.Attached = r.id, r.token, scOpen, now, r.attached
		}
		err := c.st.db.Update(func(tx *bolt.Tx) error {
			if err := tx.Bucket(bOps).Delete(seqKey(o.Seq)); err != nil {
				return err
			}
			if st != nil {
				return putCase(tx, st)
			}
			return nil
		})
		if err != nil {
			if sc != nil {
				*sc = old
			}
			c.log.Error("recording a delivered case operation (it will be sent again and reconciled)", "sink", name, "op", o.ID, "err", err)
			return
		}
		delete(c.pending, o.Seq)
		delete(s.throttled, o.Seq)
		s.br.Success()
		c.m.sinkUp.WithLabelValues(name).Set(1)
		c.m.delivery.WithLabelValues(name).Observe(now.Sub(o.Enqueued).Seconds())
		if r.reason == "reconciled" {
			c.m.reconciled.WithLabelValues(name).Inc()
		}
		if r.duplicate {
			c.m.duplicates.WithLabelValues(name).Inc()
			c.log.Warn("another open case of the same anomaly exists at the case system: a duplicate across replicas (the case system does not keep one open case per anomaly)",
				"sink", name, "rule", o.Rule, "case", o.CaseKey, "id", r.id, "anomaly", o.Anomaly, "other", r.msg)
		}
		switch {
		case o.Kind == opOpen && r.attached != "":
			how := strings.TrimPrefix(r.reason, "attached_")
			c.m.attached.WithLabelValues(name, how).Inc()
			c.log.Info("episode attached to the open case of its anomaly", "sink", name, "rule", o.Rule, "case", o.CaseKey,
				"attached_to", r.attached, "id", r.id, "how", how, "anomaly", o.Anomaly)
		case o.Kind == opOpen:
			c.m.opened.WithLabelValues(name).Inc()
			c.log.Info("case opened", "sink", name, "rule", o.Rule, "case", o.CaseKey, "id", r.id, "token", r.token,
				"how", r.reason, "attempts", o.Attempts+1)
		default:
			c.m.updated.WithLabelValues(name).Inc()
			c.log.Info("case updated", "sink", name, "rule", o.Rule, "case", o.CaseKey, "kind", o.Kind, "op", o.ID,
				"how", r.reason, "attempts", o.Attempts+1)
		}
	case r.permanent || r.gone:
		if r.gone && !s.disabled.Load() {
			s.disabled.Store(true)
			c.m.sinkUp.WithLabelValues(name).Set(0)
			c.log.Error("case sink answered 410 Gone: disabled; its operations go to the dead-letter bucket", "sink", name)
		}
		if sc != nil && o.Kind == opOpen {
			sc.Status, sc.Notes = scRejected, r.String()
			if r.gone {
				sc.Status = scGone
			}
		}
		err := c.st.db.Update(func(tx *bolt.Tx) error {
			if r.gone {
				if err := putMeta(tx, "disabled:"+name, s.cfg.URL); err != nil {
					return err
				}
			}
			if err := deadOp(tx, o, r.String()); err != nil {
				return err
			}
			if st != nil {
				return putCase(tx, st)
			}
			return nil
		})
		if err != nil {
			if sc != nil {
				*sc = old
			}
			c.log.Error("moving a case operation to the dead letters", "sink", name, "op", o.ID, "err", err)
			return
		}
		if !r.gone && r.reason != "gone" && r.reason != "undeliverable" {
			s.br.Success() // the sink answered; it is up
		}
		delete(c.pending, o.Seq)
		delete(s.throttled, o.Seq)
		c.dead++
		c.m.dead.Set(float64(c.dead))
		reason := "rejected"
		if r.gone || r.reason == "gone" || r.reason == "undeliverable" {
			reason = r.reason
		}
		c.m.failed.WithLabelValues(name, reason).Inc()
		c.log.Error("case operation refused; moved to the dead letters", "sink", name, "rule", o.Rule, "case", o.CaseKey,
			"op", o.ID, "kind", o.Kind, "status", r.reason, "message", r.msg)
	default:
		o.Attempts++
		o.Ambiguous = o.Ambiguous || r.ambiguous
		o.LastErr = r.String()
		wait := c.backoff.next(o.Attempts-1, r.retryAfter)
		o.NotBefore = now.Add(wait)
		if err := c.st.db.Update(func(tx *bolt.Tx) error { return putOp(tx, o) }); err != nil {
			c.log.Error("recording a failed case delivery", "sink", name, "op", o.ID, "err", err)
		}
		s.br.Failure(now)
		c.m.sinkUp.WithLabelValues(name).Set(b2f(s.br.State(now) == BreakerClosed))
		c.m.failed.WithLabelValues(name, r.reason).Inc()
		c.log.Warn("case delivery failed; will retry", "sink", name, "case", o.CaseKey, "op", o.ID, "kind", o.Kind,
			"attempt", o.Attempts, "retry_in", wait, "reason", r.reason, "message", r.msg, "breaker", s.br.State(now))
	}
}

// pollStatus resolves batch tokens and reads the status of open Open311
// requests; a request closed while its anomaly persists is re-opened after
// the configured wait (by housekeep).
func (c *Client) pollStatus(ctx context.Context) {
	type job struct {
		episode, sink, id, token, key string
	}
	var jobs []job
	c.mu.Lock()
	for _, st := range c.cases {
		for name, sc := range st.Sinks {
			if s := c.byName[name]; s == nil || s.o311 == nil || sc.Status != scOpen || (sc.ID == "" && sc.Token == "") {
				continue
			}
			jobs = append(jobs, job{st.Episode, name, sc.ID, sc.Token, sc.Key})
		}
	}
	c.mu.Unlock()
	for _, j := range jobs {
		if ctx.Err() != nil {
			return
		}
		s := c.byName[j.sink]
		if s.br.State(c.now()) != BreakerClosed {
			continue // leave the half-open probe to the delivery loop
		}
		if j.id == "" {
			id, r := s.o311.resolveToken(ctx, j.token)
			if !r.ok {
				c.log.Warn("resolving an Open311 token", "sink", j.sink, "token", j.token, "reason", r.reason, "message", r.msg)
				continue
			}
			if id != "" {
				c.updateSinkCase(j.episode, j.sink, j.key, func(sc *sinkCase) { sc.ID, sc.Token = id, "" })
				c.log.Info("Open311 token resolved", "sink", j.sink, "case", j.key, "token", j.token, "id", id)
				s.poke()
			}
			continue
		}
		req, r := s.o311.status(ctx, j.id)
		if !r.ok {
			c.log.Warn("reading an Open311 request's status", "sink", j.sink, "id", j.id, "reason", r.reason, "message", r.msg)
			continue
		}
		if req.Status != "closed" {
			continue
		}
		c.updateSinkCase(j.episode, j.sink, j.key, func(sc *sinkCase) {
			now := c.now()
			sc.Status, sc.ClosedAt, sc.Notes = scClosed, now, req.StatusNotes
			firing := c.cases[j.episode].Firing
			if firing {
				sc.ReopenAt = now.Add(c.cfg.ReopenWait.D())
			}
			c.log.Info("the case system closed a case", "sink", j.sink, "case", j.key, "id", j.id, "notes", req.StatusNotes,
				"anomaly_persists", firing, "reopen_at", sc.ReopenAt)
		})
	}
}

// updateSinkCase changes and persists an episode's case at a sink, if it is
// still the case named key.
func (c *Client) updateSinkCase(episode, sink, key string, f func(*sinkCase)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.cases[episode]
	if st == nil || st.Sinks[sink] == nil || st.Sinks[sink].Key != key {
		return
	}
	sc := st.Sinks[sink]
	old := *sc
	f(sc)
	if err := c.st.db.Update(func(tx *bolt.Tx) error { return putCase(tx, st) }); err != nil {
		*sc = old
		c.log.Error("recording case status", "sink", sink, "case", key, "err", err)
	}
}
