package rules

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices"
)

// SeenElsewhere tells the engine when readings of assets reached other
// gateways: the replicas of a gateway that share an MQTT subscription
// under a sticky broker policy, each receiving only its share of the
// assets, through the store they all write to (gateway/lastseen asks
// InfluxDB).
type SeenElsewhere interface {
	// LastSeen returns, for those of assets with a reading stored after
	// since, the newest reading's time, by asset id.
	LastSeen(ctx context.Context, assets []*devices.Asset, since time.Time) (map[string]time.Time, error)
}

// absenceCheck is how an engine with Options.SeenElsewhere confirms an
// absence before it counts it: an asset the engine has not heard from
// within a rule's absent time is looked up elsewhere, and a reading stored
// there since counts as heard. An asset looked up and not found is looked
// up again after recheck (so that one that comes back on another replica
// resolves), not on every tick.
type absenceCheck struct {
	src     SeenElsewhere
	recheck time.Duration
	lookups *prometheus.CounterVec // assets looked up, by result
	errors  prometheus.Counter
	log     *slog.Logger

	mu     sync.Mutex
	asked  []int64 // by asset Seq: when it was last looked up (unix ns)
	failed []bool  // by asset Seq: the last lookup failed; its absence is not judged
	cands  []*devices.Asset
	logged time.Time
}

// maxAbsenceRecheck bounds how long an asset found nowhere waits before it
// is looked up again.
const maxAbsenceRecheck = time.Minute

func newAbsenceCheck(src SeenElsewhere, assets int, tick time.Duration, reg prometheus.Registerer, log *slog.Logger) *absenceCheck {
	c := &absenceCheck{src: src, recheck: tick, asked: make([]int64, assets), failed: make([]bool, assets), log: log,
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_rule_absence_lookups_total",
			Help: "Assets an absence rule would call silent, looked up in the store the gateway's replicas share (rules.absence: shared), by result: heard (a newer reading was stored there), not_heard, error."}, []string{"result"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "citygw_rule_absence_lookup_errors_total",
			Help: "Look-ups of the shared store for absence rules that failed; the assets' absence was not judged on that tick."}),
	}
	if reg != nil {
		reg.MustRegister(c.lookups, c.errors)
	}
	return c
}

// confirm looks up, among the assets of ks, those the kind's absence rules
// would call silent at now and that were not looked up within recheck,
// and records a reading stored elsewhere since as heard. It reports, by
// asset Seq, which assets' absence cannot be judged this tick (their look-up
// failed); their rules' state is left as it is.
func (c *absenceCheck) confirm(ctx context.Context, e *Engine, ks *kindSet, now time.Time) (skip []bool) {
	var shortest, longest time.Duration
	for i, cr := range ks.absence {
		if i == 0 || cr.absent < shortest {
			shortest = cr.absent
		}
		longest = max(longest, cr.absent)
	}
	recheck := min(max(shortest/2, c.recheck), maxAbsenceRecheck)
	nowNs := now.UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cands = c.cands[:0]
	for _, a := range ks.assets {
		if nowNs-e.assets[a.Seq].seenNs() < int64(shortest) {
			c.failed[a.Seq] = false // heard: judged as usual
			continue
		}
		if nowNs-c.asked[a.Seq] < int64(recheck) {
			continue
		}
		c.cands = append(c.cands, a)
	}
	if len(c.cands) == 0 {
		return c.failed
	}
	seen, err := c.src.LastSeen(ctx, c.cands, now.Add(-longest))
	if err != nil {
		c.errors.Inc()
		c.lookups.WithLabelValues("error").Add(float64(len(c.cands)))
		if now.Sub(c.logged) >= time.Minute {
			c.logged = now
			c.log.Warn("absence rules: the shared store could not be asked; these assets' absence is not judged until it answers",
				"kind", ks.schema.Kind, "assets", len(c.cands), "err", err)
		}
		for _, a := range c.cands {
			c.failed[a.Seq] = true // looked up again on the next tick
		}
		return c.failed
	}
	heard := 0
	for _, a := range c.cands {
		c.asked[a.Seq], c.failed[a.Seq] = nowNs, false
		t, ok := seen[a.ID]
		if !ok {
			continue
		}
		st := &e.assets[a.Seq]
		for ns := t.UnixNano(); ; {
			old := st.seen.Load()
			if ns <= old || st.seen.CompareAndSwap(old, ns) {
				break
			}
		}
		heard++
	}
	c.lookups.WithLabelValues("heard").Add(float64(heard))
	c.lookups.WithLabelValues("not_heard").Add(float64(len(c.cands) - heard))
	return c.failed
}
