package pipeline

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/influx"
)

// lines records what the pipeline wrote; err, when set, refuses.
type lines struct {
	got []string
	err error
}

func (l *lines) Add(_ context.Context, line []byte) error {
	if l.err != nil {
		return l.err
	}
	l.got = append(l.got, string(line))
	return nil
}

// evals records which assets the rules saw.
type evals struct{ assets []string }

func (e *evals) Eval(_ context.Context, r *devices.Reading) { e.assets = append(e.assets, r.Asset.ID) }

func binReading(t testing.TB) *devices.Reading {
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	inv, err := devices.NewInventory(cat, []*devices.Asset{{ID: "BIN-1", Model: "binsense-ws3", Lat: 31.2, Lon: 121.5, District: "310101"}})
	if err != nil {
		t.Fatal(err)
	}
	r := &devices.Reading{}
	r.Reset(inv.Assets[0])
	r.Time = time.Unix(1_764_130_000, 0)
	i, _ := r.Asset.Schema.Index("fill_pct")
	r.Values[i] = devices.FloatValue(42.5)
	return r
}

func TestHandle(t *testing.T) {
	w, ev := &lines{}, &evals{}
	p, err := New(influx.NewEncoder("gw1"), w, ev, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r := binReading(t)
	if err := p.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	want := "waste_bin,asset=BIN-1,district=310101,gateway=gw1 fill_pct=42.5 1764130000000000000\n"
	if len(w.got) != 1 || w.got[0] != want {
		t.Errorf("wrote %q, want %q", w.got, want)
	}
	if len(ev.assets) != 1 {
		t.Errorf("rules saw %v", ev.assets)
	}

	// A refused reading is reported to the source and not shown to the rules.
	w.err = errors.New("queue full")
	if err := p.Handle(context.Background(), r); err == nil || !strings.Contains(err.Error(), "BIN-1: queue full") {
		t.Errorf("refused reading: err %v", err)
	}
	if len(ev.assets) != 1 {
		t.Errorf("the rules saw a refused reading")
	}
	if v := testutil.ToFloat64(p.refused); v != 1 {
		t.Errorf("refused = %v", v)
	}

	// An empty reading writes nothing but the rules still see it (age(), absence).
	w.err = nil
	r.Reset(r.Asset)
	if err := p.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if len(w.got) != 1 || len(ev.assets) != 2 || testutil.ToFloat64(p.empty) != 1 {
		t.Errorf("empty reading: wrote %d, evaluated %d", len(w.got), len(ev.assets))
	}
}

type discard struct{}

func (discard) Add(context.Context, []byte) error { return nil }

func TestHandleAllocs(t *testing.T) {
	p, err := New(influx.NewEncoder("gw1"), discard{}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r := binReading(t)
	ctx := context.Background()
	p.Handle(ctx, r)
	if n := testing.AllocsPerRun(200, func() { p.Handle(ctx, r) }); n != 0 {
		t.Errorf("Handle allocates %v times per reading", n)
	}
}

// batchLines records the batches; err, when set, refuses.
type batchLines struct {
	lines
	batches [][]string
}

func (l *batchLines) AddBatch(_ context.Context, ls [][]byte) error {
	if l.err != nil {
		return l.err
	}
	var b []string
	for _, x := range ls {
		b = append(b, string(x))
	}
	l.batches = append(l.batches, b)
	return nil
}

func TestHandleBatch(t *testing.T) {
	ctx := context.Background()
	w, ev := &batchLines{}, &evals{}
	p, err := New(influx.NewEncoder("gw1"), w, ev, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r1, r2, empty := binReading(t), binReading(t), binReading(t)
	r2.Time = r2.Time.Add(time.Second)
	empty.Reset(empty.Asset)
	if err := p.HandleBatch(ctx, []*devices.Reading{r1, empty, r2}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"waste_bin,asset=BIN-1,district=310101,gateway=gw1 fill_pct=42.5 1764130000000000000\n",
		"waste_bin,asset=BIN-1,district=310101,gateway=gw1 fill_pct=42.5 1764130001000000000\n",
	}
	if len(w.batches) != 1 || strings.Join(w.batches[0], "") != strings.Join(want, "") || len(w.got) != 0 {
		t.Fatalf("batches %q, single adds %q; want one batch %q", w.batches, w.got, want)
	}
	if len(ev.assets) != 3 || testutil.ToFloat64(p.points) != 2 || testutil.ToFloat64(p.empty) != 1 {
		t.Errorf("rules saw %d readings, points %v, empty %v", len(ev.assets), testutil.ToFloat64(p.points), testutil.ToFloat64(p.empty))
	}

	// A refused batch is reported whole and not shown to the rules.
	w.err = errors.New("disk full")
	if err := p.HandleBatch(ctx, []*devices.Reading{r1, r2}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("refused batch: err %v", err)
	}
	if len(ev.assets) != 3 || testutil.ToFloat64(p.refused) != 2 {
		t.Errorf("after a refused batch the rules saw %d readings, refused %v", len(ev.assets), testutil.ToFloat64(p.refused))
	}

	// A writer without AddBatch gets the lines one by one.
	single := &lines{}
	p2, err := New(influx.NewEncoder("gw1"), single, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.HandleBatch(ctx, []*devices.Reading{r1, r2}); err != nil || strings.Join(single.got, "") != strings.Join(want, "") {
		t.Errorf("line by line: %q, %v", single.got, err)
	}
}

type discardBatch struct{ discard }

func (discardBatch) AddBatch(context.Context, [][]byte) error { return nil }

func TestHandleBatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts through sync.Pool are not meaningful under -race; run without it")
	}
	p, err := New(influx.NewEncoder("gw1"), discardBatch{}, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r := binReading(t) // one asset: each binReading builds its own inventory
	rs := []*devices.Reading{r, r, r}
	ctx := context.Background()
	p.HandleBatch(ctx, rs)
	if n := testing.AllocsPerRun(200, func() { p.HandleBatch(ctx, rs) }); n != 0 {
		t.Errorf("HandleBatch allocates %v times per batch", n)
	}
}
