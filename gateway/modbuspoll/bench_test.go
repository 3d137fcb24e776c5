package modbuspoll

import (
	"log/slog"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/prometheus/client_golang/prometheus"
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
