package rules

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/citygw/citygw/devices"
)

// BacktestOptions say what to replay.
type BacktestOptions struct {
	From, To time.Time
	Kinds    []string // only these kinds' rules and assets; empty: every kind the rules watch
	Assets   []string // only these assets; empty: all of the kinds
	Rules    []string // report only these rule ids; empty: all
	Location *time.Location
	Tick     time.Duration // engine tick in reading time; default 10s
	Silences []Silence
	// Progress, when set, is called every ProgressEvery readings (default
	// 10000), at least once a second while readings arrive, and once at the
	// end.
	Progress      func(BacktestProgress)
	ProgressEvery int
}

// BacktestProgress is how far a backtest has come.
type BacktestProgress struct {
	Points   int       `json:"points"`
	Time     time.Time `json:"time"`     // reading time reached
	Fraction float64   `json:"fraction"` // of the time range, 0..1
}

// BacktestEpisode is an episode the rules would have opened a case for:
// one that fired and was not muted.
type BacktestEpisode struct {
	ID        string        `json:"id"`
	Rule      string        `json:"rule"`
	Group     string        `json:"group"`
	Assets    []string      `json:"assets"`
	Severity  string        `json:"severity"`
	Shadow    bool          `json:"shadow,omitempty"`
	Start     time.Time     `json:"start"`
	FiredAt   time.Time     `json:"fired_at"`
	ClearedAt time.Time     `json:"cleared_at,omitzero"` // zero: still firing at the end of the range
	Duration  time.Duration `json:"duration_ns"`         // start to cleared (or to the end of the range)
	Title     string        `json:"title"`
}

// RuleSummary counts a rule's episodes over the range.
type RuleSummary struct {
	Rule     string `json:"rule"`
	Episodes int    `json:"episodes"` // fired
	Ongoing  int    `json:"ongoing"`  // of those, still firing at the end
	// Cancelled counts pending episodes that ended before `for` passed:
	// near misses, useful when tuning `for`.
	Cancelled int `json:"cancelled"`
}

// BacktestReport is what Backtest found.
type BacktestReport struct {
	From     time.Time         `json:"from"`
	To       time.Time         `json:"to"`
	Points   int               `json:"points"`
	Episodes []BacktestEpisode `json:"episodes"`
	Rules    []RuleSummary     `json:"rules"`
}

// backtestSink collects the transitions a real case sink would have seen.
type backtestSink struct {
	mu        sync.Mutex
	open      map[string]*BacktestEpisode
	done      []*BacktestEpisode
	cancelled map[string]int
}

func (s *backtestSink) Transitions(_ context.Context, ts []Transition) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range ts {
		switch {
		case t.To == Firing:
			if ep := s.open[t.EpisodeID]; ep != nil {
				continue
			}
			s.open[t.EpisodeID] = &BacktestEpisode{ID: t.EpisodeID, Rule: t.Rule, Group: t.GroupKey,
				Assets: append([]string(nil), t.Assets...), Severity: t.Severity, Shadow: t.Shadow,
				Start: t.Start, FiredAt: t.Time, Title: t.Title}
		case t.To == Inactive && t.From == Firing:
			if ep := s.open[t.EpisodeID]; ep != nil {
				ep.ClearedAt, ep.Duration = t.Time, t.Time.Sub(ep.Start)
				s.done = append(s.done, ep)
				delete(s.open, t.EpisodeID)
			}
		case t.To == Inactive && t.From == Pending:
			s.cancelled[t.Rule]++
		}
	}
	return nil
}

// Backtest runs the rule files over past telemetry from src, as a gateway
// would have run them (readings in time order, the engine ticking as
// reading time passes so absence rules and keep_firing_for work), and
// reports the episodes that would have opened cases. Assets outside the
// kinds and assets selected are left out of the engine's inventory, so
// they neither count as silent nor in group sizes.
func Backtest(ctx context.Context, cat *devices.Catalog, inv *devices.Inventory, files []string, src Source, opts BacktestOptions) (*BacktestReport, error) {
	if !opts.To.After(opts.From) {
		return nil, fmt.Errorf("%w: the range ends (%s) before it starts (%s)", ErrArgs, ts(opts.To), ts(opts.From))
	}
	set, err := compileFiles(cat, inv, files)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRules, err)
	}
	known := map[string]bool{}
	for _, cr := range set.rules {
		known[cr.id()] = true
	}
	for _, id := range opts.Rules {
		if !known[id] {
			return nil, fmt.Errorf("%w: no rule %q in the rule files", ErrArgs, id)
		}
	}
	kinds := opts.Kinds
	if len(kinds) == 0 {
		// The kinds the rules watch that the inventory has.
		for _, k := range inv.Kinds() {
			if set.kinds[k] != nil {
				kinds = append(kinds, k)
			}
		}
	}
	for _, k := range kinds {
		if cat.Kinds[k] == nil {
			return nil, fmt.Errorf("%w: unknown kind %q (known: %s)", ErrArgs, k, strings.Join(cat.KindNames(), ", "))
		}
	}
	sub, err := subInventory(cat, inv, kinds, opts.Assets)
	if err != nil {
		return nil, err
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	opts.From, opts.To = opts.From.In(opts.Location), opts.To.In(opts.Location)
	sink := &backtestSink{open: map[string]*BacktestEpisode{}, cancelled: map[string]int{}}
	e, err := newReplayEngine(cat, sub, files, opts.Location, opts.Silences, sink, opts.From)
	if err != nil {
		return nil, err
	}
	every := opts.ProgressEvery
	if every <= 0 {
		every = 10000
	}
	span := opts.To.Sub(opts.From).Seconds()
	var progress func(int, time.Time)
	if opts.Progress != nil {
		last := time.Now()
		progress = func(n int, t time.Time) {
			// Every `every` points, and at least each second on a slow source.
			if n%every == 0 || n%100 == 0 && time.Since(last) >= time.Second {
				last = time.Now()
				opts.Progress(BacktestProgress{Points: n, Time: t, Fraction: t.Sub(opts.From).Seconds() / span})
			}
		}
	}
	q := Query{Inventory: sub, Kinds: kinds, Assets: opts.Assets, From: opts.From, To: opts.To}
	n, err := e.replay(ctx, src, q, opts.Tick, nil, progress)
	if err != nil {
		return nil, err
	}
	if opts.Progress != nil {
		opts.Progress(BacktestProgress{Points: n, Time: opts.To, Fraction: 1})
	}
	rep := &BacktestReport{From: opts.From, To: opts.To, Points: n, Episodes: []BacktestEpisode{}}
	want := map[string]bool{}
	for _, id := range opts.Rules {
		want[id] = true
	}
	selected := func(rule string) bool { return len(want) == 0 || want[rule] }
	for _, ep := range sink.done {
		if selected(ep.Rule) {
			rep.Episodes = append(rep.Episodes, *ep)
		}
	}
	for _, ep := range sink.open {
		if selected(ep.Rule) {
			ep.Duration = opts.To.Sub(ep.Start)
			rep.Episodes = append(rep.Episodes, *ep)
		}
	}
	sort.Slice(rep.Episodes, func(i, j int) bool {
		a, b := rep.Episodes[i], rep.Episodes[j]
		if !a.Start.Equal(b.Start) {
			return a.Start.Before(b.Start)
		}
		if a.Rule != b.Rule {
			return a.Rule < b.Rule
		}
		return a.Group < b.Group
	})
	counts := map[string]*RuleSummary{}
	for _, cr := range e.set.Load().rules {
		if selected(cr.id()) && containsString(kinds, cr.kind) {
			counts[cr.id()] = &RuleSummary{Rule: cr.id(), Cancelled: sink.cancelled[cr.id()]}
		}
	}
	for _, ep := range rep.Episodes {
		c := counts[ep.Rule]
		if c == nil {
			c = &RuleSummary{Rule: ep.Rule}
			counts[ep.Rule] = c
		}
		c.Episodes++
		if ep.ClearedAt.IsZero() {
			c.Ongoing++
		}
	}
	for _, id := range sortedKeys(counts) {
		rep.Rules = append(rep.Rules, *counts[id])
	}
	return rep, nil
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// WriteBacktest prints a backtest report for a person.
func WriteBacktest(w io.Writer, rep *BacktestReport) {
	fmt.Fprintf(w, "backtest %s .. %s: %d reading(s) replayed\n\n", ts(rep.From), ts(rep.To), rep.Points)
	if len(rep.Episodes) == 0 {
		fmt.Fprintf(w, "no episodes would have fired\n")
	} else {
		fmt.Fprintf(w, "EPISODES (would have opened a case unless shadow):\n")
		for _, ep := range rep.Episodes {
			cleared := "still firing at the end"
			if !ep.ClearedAt.IsZero() {
				cleared = "cleared " + ts(ep.ClearedAt)
			}
			shadow := ""
			if ep.Shadow {
				shadow = " [shadow]"
			}
			fmt.Fprintf(w, "  %s  group %s  assets [%s]  %s%s\n", ep.Rule, ep.Group, strings.Join(ep.Assets, ","), ep.Severity, shadow)
			fmt.Fprintf(w, "      start %s  fired %s  %s  duration %s\n", ts(ep.Start), ts(ep.FiredAt), cleared, ep.Duration.Round(time.Second))
		}
	}
	fmt.Fprintf(w, "\nPER RULE:\n")
	width := 4
	for _, r := range rep.Rules {
		width = max(width, len(r.Rule))
	}
	fmt.Fprintf(w, "  %-*s  %8s  %8s  %9s\n", width, "rule", "episodes", "ongoing", "cancelled")
	for _, r := range rep.Rules {
		fmt.Fprintf(w, "  %-*s  %8d  %8d  %9d\n", width, r.Rule, r.Episodes, r.Ongoing, r.Cancelled)
	}
}
