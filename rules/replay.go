package rules

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/citygw/citygw/devices"
)

// Errors Explain and Backtest wrap, so a command can tell its callers what
// went wrong (see rules/cmd/rules' exit codes).
var (
	// ErrInvalidRules: the rule files do not compile.
	ErrInvalidRules = errors.New("invalid rule files")
	// ErrSource: the telemetry could not be read (unreachable InfluxDB,
	// unreadable input file).
	ErrSource = errors.New("reading telemetry")
	// ErrArgs: the request names something that does not exist (an
	// unknown rule or asset, an empty time range).
	ErrArgs = errors.New("bad arguments")
)

// Query says which past readings a Source should deliver.
type Query struct {
	// Inventory resolves asset ids; readings of assets it does not hold
	// are skipped (and counted) by the source.
	Inventory *devices.Inventory
	Kinds     []string // measurements to read; never empty
	Assets    []string // asset ids; empty means every asset of the kinds
	From, To  time.Time
}

// Source delivers past readings for Explain and Backtest: those of the
// query's kinds and assets with From <= Time < To, in time order (ties in
// any order, but the readings of one asset in their order), each with its
// Asset taken from q.Inventory. fn must not retain the reading; a source may
// reuse it. An error from fn stops the source, which returns it.
type Source interface {
	Readings(ctx context.Context, q Query, fn func(*devices.Reading) error) error
}

// Readings is an in-memory Source: a list of readings, for input files
// and tests. Readings of assets q.Inventory does not hold (by id) are
// skipped; the others are handed over with the inventory's asset.
type Readings []*devices.Reading

// Readings implements Source.
func (rs Readings) Readings(ctx context.Context, q Query, fn func(*devices.Reading) error) error {
	sorted := append(Readings(nil), rs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Time.Before(sorted[j].Time) })
	kinds := map[string]bool{}
	for _, k := range q.Kinds {
		kinds[k] = true
	}
	assets := map[string]bool{}
	for _, a := range q.Assets {
		assets[a] = true
	}
	r := &devices.Reading{}
	for _, in := range sorted {
		if err := ctx.Err(); err != nil {
			return err
		}
		if in.Asset == nil || in.Time.Before(q.From) || !in.Time.Before(q.To) || !kinds[in.Asset.Kind] || len(assets) > 0 && !assets[in.Asset.ID] {
			continue
		}
		a := q.Inventory.Lookup(in.Asset.ID)
		if a == nil || a.Kind != in.Asset.Kind {
			continue
		}
		r.Reset(a)
		r.Time, r.Received = in.Time, in.Received
		copy(r.Values, in.Values)
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// subInventory copies the assets of inv that match kinds and ids (empty:
// any) into a new inventory, so that an engine replaying part of the city
// neither waits for the others' readings (absence rules) nor counts them in
// group sizes.
func subInventory(cat *devices.Catalog, inv *devices.Inventory, kinds, ids []string) (*devices.Inventory, error) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	kind := map[string]bool{}
	for _, k := range kinds {
		kind[k] = true
	}
	var out []*devices.Asset
	for _, a := range inv.Assets {
		if (len(kind) == 0 || kind[a.Kind]) && (len(want) == 0 || want[a.ID]) {
			c := *a
			out = append(out, &c)
		}
	}
	for id := range want {
		if inv.Lookup(id) == nil {
			return nil, fmt.Errorf("%w: asset %s is not in the inventory", ErrArgs, id)
		}
	}
	return devices.NewInventory(cat, out)
}

// replay feeds a source's readings through the engine, ticking every tick
// of reading time (ticks at a reading's time come after its readings) and
// calling after following each evaluation or tick. It returns how many
// readings were evaluated.
func (e *Engine) replay(ctx context.Context, src Source, q Query, tick time.Duration, after func(time.Time), progress func(n int, t time.Time)) (int, error) {
	if tick <= 0 {
		tick = 10 * time.Second
	}
	// Times are shown in the city's zone: the engine keeps the readings'.
	loc := e.opts.Location
	next := q.From.In(loc).Add(tick)
	n := 0
	tickUntil := func(t time.Time, inclusive bool) {
		for next.Before(t) || inclusive && next.Equal(t) {
			e.Tick(ctx, next)
			if after != nil {
				after(next)
			}
			next = next.Add(tick)
		}
	}
	err := src.Readings(ctx, q, func(r *devices.Reading) error {
		if r.Asset == nil || r.Asset.Seq >= len(q.Inventory.Assets) || q.Inventory.Assets[r.Asset.Seq] != r.Asset {
			return nil
		}
		r.Time = r.Time.In(loc)
		tickUntil(r.Time, false)
		if r.Received.IsZero() {
			r.Received = r.Time
		}
		e.Eval(ctx, r)
		n++
		if after != nil {
			after(r.Time)
		}
		if progress != nil {
			progress(n, r.Time)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		return n, fmt.Errorf("%w: %w", ErrSource, err)
	}
	tickUntil(q.To.In(loc), true)
	return n, nil
}

// newReplayEngine loads the rule files into an engine over inv whose clock
// starts at start.
func newReplayEngine(cat *devices.Catalog, inv *devices.Inventory, files []string, loc *time.Location, silences []Silence, sink Sink, start time.Time) (*Engine, error) {
	e, err := NewEngine(Options{Location: loc, Sink: sink, Silences: silences, Now: func() time.Time { return start }}, cat, inv, nil, nil)
	if err != nil {
		return nil, err
	}
	if err := e.Load(files...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRules, err)
	}
	return e, nil
}
