package statuspage

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/citygw/citygw/devices"
)

// Tracker records when each asset was last seen, for a gateway that runs
// without a rule engine (the engine already tracks this and implements
// SeenSource itself). Give it to the pipeline as its evaluator (Eval), or
// call Seen for every accepted reading; it is atomic and allocates nothing.
type Tracker struct {
	seen []atomic.Int64
}

// NewTracker returns a tracker for n assets (the inventory's length).
func NewTracker(n int) *Tracker { return &Tracker{seen: make([]atomic.Int64, n)} }

// Seen records that the asset with the given Seq reported at t. Out of
// range sequence numbers are ignored; an earlier time never replaces a
// later one.
func (t *Tracker) Seen(assetSeq int, at time.Time) {
	if assetSeq < 0 || assetSeq >= len(t.seen) {
		return
	}
	ns := at.UnixNano()
	s := &t.seen[assetSeq]
	for {
		old := s.Load()
		if ns <= old || s.CompareAndSwap(old, ns) {
			return
		}
	}
}

// LastSeen implements SeenSource.
func (t *Tracker) LastSeen(dst []int64) []int64 {
	if cap(dst) < len(t.seen) {
		dst = make([]int64, len(t.seen))
	}
	dst = dst[:len(t.seen)]
	for i := range t.seen {
		dst[i] = t.seen[i].Load()
	}
	return dst
}

// Eval records the reading's receive time (its sample time when it has
// none); with it a Tracker is the pipeline's evaluator in a gateway
// without rules.
func (t *Tracker) Eval(_ context.Context, r *devices.Reading) {
	if r == nil || r.Asset == nil {
		return
	}
	at := r.Received
	if at.IsZero() {
		at = r.Time
	}
	if at.IsZero() {
		at = time.Now()
	}
	t.Seen(r.Asset.Seq, at)
}
