package modbuspoll

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// responses returns, for each request of d's plan, the response payload a
// device serving u sends: packed bits for bit tables, big-endian registers
// otherwise.
func responses(d *device, u *unitState) [][]byte {
	out := make([][]byte, len(d.reqs))
	for i, r := range d.reqs {
		var b []byte
		switch r.Table {
		case devices.Coil, devices.Discrete:
			src := &u.coils
			if r.Table == devices.Discrete {
				src = &u.discrete
			}
			b = make([]byte, (int(r.Count)+7)/8)
			for j := 0; j < int(r.Count); j++ {
				if src[int(r.Start)+j] {
					b[j/8] |= 1 << (j % 8)
				}
			}
		default:
			src := &u.holding
			if r.Table == devices.Input {
				src = &u.input
			}
			for j := 0; j < int(r.Count); j++ {
				w := src[int(r.Start)+j]
				b = append(b, byte(w>>8), byte(w))
			}
		}
		out[i] = b
	}
	return out
}

func benchDevice(b testing.TB, model string) (*device, [][]byte, []devices.Value) {
	cat := builtin(b)
	p := cat.Profile(model)
	a := tcpAsset(b, cat, "bench", model, "127.0.0.1:502", 1, 0, 0)
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	cfg, _ := Config{}.withDefaults()
	d, err := newDevice(&cfg, a, m)
	if err != nil {
		b.Fatal(err)
	}
	var u unitState
	want := encodeUnit(b, &u, p, sampleValues(b, p, 1, time.Now()))
	return d, responses(d, &u), want
}

// BenchmarkDecodePoll decodes one poll's responses into the device's Reading,
// as the poller does after the requests return: the per-poll work of our
// code, without the transport. It must not allocate.
func BenchmarkDecodePoll(b *testing.B) {
	for _, model := range []string{"citylight-slc200", "citylight-ccu300", "gasreg-rtu500"} {
		b.Run(model, func(b *testing.B) {
			d, resp, want := benchDevice(b, model)
			log := slog.New(slog.DiscardHandler)
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				d.reading.Reset(d.asset)
				for i := range d.reqs {
					d.decode(i, resp[i], now, log)
				}
			}
			b.StopTimer()
			for i := range d.prof.Fields {
				f := &d.prof.Fields[i]
				if got := d.reading.Values[f.Index]; !got.Equal(want[i]) {
					b.Fatalf("%s = %v, want %v", f.Name, got, want[i])
				}
			}
			b.ReportMetric(float64(len(d.prof.Fields)), "fields/poll")
		})
	}
}

// TestDecodePollAllocs pins the benchmark's promise: a steady poll's decode
// allocates nothing (strings are decoded once, then reused while their
// bytes do not change).
func TestDecodePollAllocs(t *testing.T) {
	d, resp, _ := benchDevice(t, "citylight-slc200")
	log := slog.New(slog.DiscardHandler)
	now := time.Now()
	for i := range d.reqs { // the first poll decodes the firmware string
		d.decode(i, resp[i], now, log)
	}
	allocs := testing.AllocsPerRun(100, func() {
		d.reading.Reset(d.asset)
		for i := range d.reqs {
			d.decode(i, resp[i], now, log)
		}
	})
	if allocs != 0 {
		t.Errorf("decoding a poll allocates %v times, want 0", allocs)
	}
}

// recordLog keeps the records logged through it.
type recordLog struct {
	mu   *sync.Mutex
	recs *[]slog.Record
}

func (h recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (h recordLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	*h.recs = append(*h.recs, r)
	h.mu.Unlock()
	return nil
}
func (h recordLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordLog) WithGroup(string) slog.Handler      { return h }

// TestDecodeErrorsRateLimited: a device sending an undecodable field every
// second for 100 s is counted 100 times but logged twice (at 0 s and 60 s),
// the second line carrying the number suppressed, the asset, unit and register.
func TestDecodeErrorsRateLimited(t *testing.T) {
	d, resp, _ := benchDevice(t, "citylight-slc200")
	f := d.prof.Field("fault")
	for i, r := range d.reqs {
		if r.Table == devices.Input {
			off := 2 * int(f.Address-r.Start)
			resp[i][off], resp[i][off+1] = 0, 99 // not in the enum
		}
	}
	var recs []slog.Record
	log := slog.New(recordLog{&sync.Mutex{}, &recs})
	t0 := time.Unix(1_800_000_000, 0)
	for s := range 100 {
		d.reading.Reset(d.asset)
		for i := range d.reqs {
			d.decode(i, resp[i], t0.Add(time.Duration(s)*time.Second), log)
		}
		if d.reading.Values[f.Index].Valid() || d.reading.NumValid() != len(d.prof.Fields)-1 {
			t.Fatalf("poll %d: fault %v, %d valid fields; want all but fault", s, d.reading.Values[f.Index], d.reading.NumValid())
		}
	}
	if n := testutil.ToFloat64(d.decErrs); n != 100 {
		t.Errorf("decode errors counted %v, want 100", n)
	}
	if len(recs) != 2 {
		t.Fatalf("%d log lines, want 2", len(recs))
	}
	attrs := map[string]string{}
	recs[1].Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
	if attrs["suppressed"] != "59" || attrs["asset"] != "bench" || attrs["unit"] != "1" || attrs["register"] != "9" || attrs["table"] != "input" {
		t.Errorf("second line %q %v", recs[1].Message, attrs)
	}
}

// TestShortResponse: a device that answers with fewer registers than asked
// (it happens) yields the fields the response does cover; the rest are
// counted as decode errors.
func TestShortResponse(t *testing.T) {
	d, resp, want := benchDevice(t, "citylight-slc200")
	log := slog.New(slog.DiscardHandler)
	var short int
	for i, r := range d.reqs {
		if r.Table == devices.Input {
			resp[i] = resp[i][:2*5] // registers 0..4 of 0..21
			short = i
		}
	}
	d.reading.Reset(d.asset)
	for i := range d.reqs {
		d.decode(i, resp[i], time.Now(), log)
	}
	missing := 0
	for _, fi := range d.reqs[short].Fields {
		f := &d.prof.Fields[fi]
		v := d.reading.Values[f.Index]
		covered := int(f.Address)+f.Registers <= 5
		switch {
		case covered && !v.Equal(want[fi]):
			t.Errorf("%s = %v, want %v", f.Name, v, want[fi])
		case !covered && v.Valid():
			t.Errorf("%s = %v from a response that does not cover it", f.Name, v)
		case !covered:
			missing++
		}
	}
	// voltage 0, current 1, power 2 are covered; energy 3..4 too; the other 7 are not.
	if missing != 7 || testutil.ToFloat64(d.decErrs) != 7 {
		t.Errorf("%d fields missing, %v decode errors; want 7 and 7", missing, testutil.ToFloat64(d.decErrs))
	}
}

type discard struct{}

func (discard) Handle(context.Context, *devices.Reading) error { return nil }

// BenchmarkPollTCP is one whole poll of a lamp controller (4 requests) over
// loopback TCP against the in-process server: goburrow's framing and the
// round trips included. Its allocations are goburrow's request and response
// frames and the in-process server's work, not the decoder's (see
// BenchmarkDecodePoll).
func BenchmarkPollTCP(b *testing.B) {
	cat := builtin(b)
	s := newTestServer(b)
	p := cat.Profile("citylight-slc200")
	s.serve(b, 1, p, sampleValues(b, p, 1, time.Now()))
	pl, err := New(Config{}, []*devices.Asset{tcpAsset(b, cat, "x", p.Model, s.addr, 1, 0, 0)}, discard{}, prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	e := pl.endpoints[0]
	ctx := context.Background()
	if err := e.connect(ctx); err != nil {
		b.Fatal(err)
	}
	defer e.close()
	d := e.devs[0]
	d.next = time.Now()
	b.ReportAllocs()
	for b.Loop() {
		e.poll(ctx, d)
	}
	b.StopTimer()
	if st := pl.Status()[0]; !st.Up || st.Failures != 0 {
		b.Fatalf("status %+v", st)
	}
}
