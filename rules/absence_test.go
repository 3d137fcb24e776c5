package rules

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/citygw/citygw/devices"
)

// storeSeen is the store the replicas share, as SeenElsewhere sees it: the
// newest reading stored per asset by any replica.
type storeSeen struct {
	mu     sync.Mutex
	stored map[string]time.Time
	err    error
	asked  [][]string // the asset ids of each call
	since  []time.Time
}

func (s *storeSeen) LastSeen(_ context.Context, assets []*devices.Asset, since time.Time) (map[string]time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, a := range assets {
		ids = append(ids, a.ID)
	}
	s.asked, s.since = append(s.asked, ids), append(s.since, since)
	if s.err != nil {
		return nil, s.err
	}
	out := map[string]time.Time{}
	for _, a := range assets {
		if t, ok := s.stored[a.ID]; ok && t.After(since) {
			out[a.ID] = t
		}
	}
	return out, nil
}

func (s *storeSeen) calls() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]string(nil), s.asked...)
}

const silentRule = `rules:
  - id: waste_bin.silent
    kind: waste_bin
    absent: 10m
    severity: minor
    case: {service: s, title: t}
`

// TestAbsenceShared: with SeenElsewhere an absence rule calls silent only
// the assets heard from neither here nor in the shared store; it looks an
// asset up when the engine's own reading is older than the absent time,
// not again within the recheck, and leaves an asset's state alone while
// the store cannot be asked.
func TestAbsenceShared(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 3) // bins B0 B1 B2
	start := min_(0)
	store := &storeSeen{stored: map[string]time.Time{}}
	sink := &memSink{}
	e, reg := newTestEngine(t, Options{Sink: sink, SeenElsewhere: store, Now: func() time.Time { return start }},
		inv, cat, writeRules(t, t.TempDir(), "r.yaml", silentRule))
	ctx := context.Background()
	bin := func(id string) *devices.Asset { return inv.Lookup(id) }
	firing := func() map[string]bool {
		out := map[string]bool{}
		for _, tr := range sink.take() {
			if tr.To == Firing {
				out[tr.GroupKey] = true
			}
			if tr.To == Inactive {
				out[tr.GroupKey] = false
			}
		}
		return out
	}

	// B0 reports here; B1 reports to the other replica (stored); B2 nowhere.
	for m := 0; m <= 12; m += 4 {
		e.Eval(ctx, reading(t, bin("B0"), min_(m), map[string]any{"fill_pct": 10}))
		store.stored["B1"] = min_(m)
	}
	e.Tick(ctx, min_(5))
	if n := len(store.calls()); n != 0 {
		t.Fatalf("looked up %d times before any absent time passed", n)
	}
	e.Tick(ctx, min_(12))
	calls := store.calls()
	if len(calls) != 1 || len(calls[0]) != 2 || calls[0][0] != "B1" || calls[0][1] != "B2" {
		t.Fatalf("look-ups %v, want one of B1 and B2 (B0 was heard here)", calls)
	}
	if want := min_(2); !store.since[0].Equal(want) {
		t.Errorf("asked for readings since %v, want %v (now - absent)", store.since[0], want)
	}
	if got := firing(); len(got) != 1 || !got["B2"] {
		t.Fatalf("firing %v, want B2 only", got)
	}
	// Within the recheck (half the absent time, at most a minute) B2 is
	// not asked again; B1, heard at 12, is not due.
	e.Tick(ctx, min_(12).Add(50*time.Second))
	if n := len(store.calls()); n != 1 {
		t.Fatalf("%d look-ups by 12m50s, want still 1: %v", n, store.calls())
	}
	e.Tick(ctx, min_(14))
	if calls := store.calls(); len(calls) != 2 || len(calls[1]) != 1 || calls[1][0] != "B2" {
		t.Fatalf("look-ups by 14m %v, want B2 asked again after the recheck", calls)
	}
	// B2 comes back on the other replica: the next look-up resolves it.
	store.stored["B2"] = min_(15)
	e.Tick(ctx, min_(18))
	if got := firing(); got["B2"] || len(got) != 1 {
		t.Fatalf("after B2 reported elsewhere: %v, want B2 resolved", got)
	}
	// The store is down: B1 (not heard for 10 m now) keeps its state.
	store.err = errors.New("influxdb: connection refused")
	e.Tick(ctx, min_(23))
	if got := firing(); len(got) != 0 {
		t.Fatalf("while the store is down: %v, want no change", got)
	}
	if v := testutil.ToFloat64(e.absence.errors); v != 1 {
		t.Errorf("lookup errors %v, want 1", v)
	}
	// Back: B1 is still stored at 12 only, so now it is silent too.
	store.err = nil
	e.Tick(ctx, min_(24))
	if got := firing(); !got["B1"] {
		t.Fatalf("after the store came back: %v, want B1 firing", got)
	}
	if n, err := testutil.GatherAndCount(reg, "citygw_rule_absence_lookups_total"); err != nil || n != 3 {
		t.Errorf("citygw_rule_absence_lookups_total: %d series, %v; want heard, not_heard and error", n, err)
	}
}

// TestAbsenceLocal: without SeenElsewhere nothing is looked up and an asset
// reported only elsewhere is silent here (the limit rules.absence: shared
// lifts).
func TestAbsenceLocal(t *testing.T) {
	cat := testCatalog(t)
	inv := testInventory(t, cat, 2)
	sink := &memSink{}
	e, _ := newTestEngine(t, Options{Sink: sink, Now: func() time.Time { return min_(0) }}, inv, cat, writeRules(t, t.TempDir(), "r.yaml", silentRule))
	e.Eval(context.Background(), reading(t, inv.Lookup("B0"), min_(8), map[string]any{"fill_pct": 10}))
	e.Tick(context.Background(), min_(12))
	var got []string
	for _, tr := range sink.take() {
		if tr.To == Firing {
			got = append(got, tr.GroupKey)
		}
	}
	if len(got) != 1 || got[0] != "B1" || e.absence != nil {
		t.Fatalf("firing %v, want B1 (never heard here)", got)
	}
}
