package rules

import (
	"testing"
	"time"
)

func TestStep(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	type ev struct {
		at    int
		cond  bool
		state State
		moved bool
	}
	tests := []struct {
		name       string
		forD, keep time.Duration
		evs        []ev
	}{
		{"pending then firing after for", 5 * time.Minute, 0, []ev{
			{0, true, Pending, true}, {4, true, Pending, false}, {5, true, Firing, true}, {6, true, Firing, false}}},
		{"pending cancelled", 5 * time.Minute, 0, []ev{{0, true, Pending, true}, {3, false, Inactive, true}, {4, false, Inactive, false}}},
		{"for 0 fires at once", 0, 0, []ev{{0, true, Firing, true}}},
		{"resolves at first false without keep", 0, 0, []ev{{0, true, Firing, true}, {1, false, Inactive, true}}},
		{"keep_firing_for holds, then resolves", 0, 3 * time.Minute, []ev{
			{0, true, Firing, true}, {1, false, Firing, false}, {3, false, Firing, false}, {4, false, Inactive, true}}},
		{"true again resets keep_firing_for", 0, 3 * time.Minute, []ev{
			{0, true, Firing, true}, {1, false, Firing, false}, {3, true, Firing, false}, {4, false, Firing, false},
			{6, false, Firing, false}, {7, false, Inactive, true}}},
		{"inactive stays inactive", time.Minute, 0, []ev{{0, false, Inactive, false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cr := &compiledRule{spec: &RuleSpec{ID: "r"}, forD: tc.forD, keep: tc.keep}
			s := &series{key: "k"}
			for _, e := range tc.evs {
				_, moved := step(cr, s, e.cond, m(e.at))
				if s.state != e.state || moved != e.moved {
					t.Fatalf("at %dm cond=%v: state %s moved %v, want %s moved %v", e.at, e.cond, s.state, moved, e.state, e.moved)
				}
			}
		})
	}
}

func TestEpisodeIDIsStableAndValueFree(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 22, 0, 0, 0, time.FixedZone("CST", 8*3600))
	a := episodeID("streetlight.dark_at_night", "L1", t0)
	if b := episodeID("streetlight.dark_at_night", "L1", t0.UTC()); a != b {
		t.Fatalf("same instant in another zone gives another id: %s %s", a, b)
	}
	for _, other := range []string{
		episodeID("streetlight.dark_at_night", "L2", t0),
		episodeID("streetlight.burning_by_day", "L1", t0),
		episodeID("streetlight.dark_at_night", "L1", t0.Add(time.Second)),
	} {
		if other == a {
			t.Fatalf("different episodes share id %s", a)
		}
	}
	// The state machine derives it from the episode start only.
	cr := &compiledRule{spec: &RuleSpec{ID: "streetlight.dark_at_night"}, forD: time.Minute}
	s := &series{key: "L1", values: map[string]any{"current_a": 0.01}}
	step(cr, s, true, t0)
	if s.id != a {
		t.Fatalf("series id %s, want %s", s.id, a)
	}
}

func TestStateText(t *testing.T) {
	for _, s := range []State{Inactive, Pending, Firing} {
		b, _ := s.MarshalText()
		var back State
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Fatalf("%s round-trips to %s (%v)", s, back, err)
		}
	}
}
