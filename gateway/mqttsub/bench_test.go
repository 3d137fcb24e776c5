package mqttsub

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/influx"
	"github.com/citygw/citygw/gateway/pipeline"
	"github.com/citygw/citygw/gateway/testenv"
	"github.com/citygw/citygw/gateway/wal"
	"github.com/citygw/citygw/rules"
)

// inMsg is a received message as paho hands it over, for in-process tests
// and benchmarks without a broker.
type inMsg struct {
	topic   string
	payload []byte
	acks    atomic.Int32
}

func (m *inMsg) Duplicate() bool   { return false }
func (m *inMsg) Qos() byte         { return 1 }
func (m *inMsg) Retained() bool    { return false }
func (m *inMsg) Topic() string     { return m.topic }
func (m *inMsg) MessageID() uint16 { return 1 }
func (m *inMsg) Payload() []byte   { return m.payload }
func (m *inMsg) Ack()              { m.acks.Add(1) }

type countingHandler struct{ n atomic.Int64 }

func (h *countingHandler) Handle(_ context.Context, r *devices.Reading) error {
	if r.NumValid() == 0 {
		panic("empty reading")
	}
	h.n.Add(1)
	return nil
}

func benchSetup(b *testing.B, assets, workers int, h Handler) (*Subscriber, []*inMsg) {
	inv := testInventory(b, assets)
	s, err := New(Config{Broker: "tcp://127.0.0.1:1", ClientID: "bench", Workers: workers, MaxMessagesPerAsset: -1,
		Subscriptions: []Subscription{{Topic: "city/bins/{asset}/telemetry"}}}, inv, h, prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	msgs := make([]*inMsg, assets)
	for i := range msgs {
		msgs[i] = &inMsg{topic: fmt.Sprintf("city/bins/bin-%04d/telemetry", i), payload: []byte(binPayload(now, 73.5, i))}
	}
	return s, msgs
}

// BenchmarkDecodeHandle is one message through match, lookup, decode,
// timestamp check and the handler on the calling goroutine: the per-message
// cost of a worker.
func BenchmarkDecodeHandle(b *testing.B) {
	h := &countingHandler{}
	s, msgs := benchSetup(b, 1000, 1, h)
	w := newWorker(time.Minute)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(msgs[0].payload)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := msgs[i%len(msgs)]
		it, _ := s.admit(m)
		s.process(ctx, w, it)
	}
	b.StopTimer()
	if h.n.Load() != int64(b.N) {
		b.Fatalf("handled %d of %d", h.n.Load(), b.N)
	}
}

// BenchmarkPipeline is the subscriber's whole in-process path: paho's router
// callback (onMessage) on one goroutine, the per-asset shards, GOMAXPROCS
// workers decoding and handing to the handler, and the ack.
func BenchmarkPipeline(b *testing.B) {
	h := &countingHandler{}
	s, msgs := benchSetup(b, 1000, 0, h)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	s.startWorkers(ctx, &wg)
	b.ReportAllocs()
	b.SetBytes(int64(len(msgs[0].payload)))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		s.onMessage(nil, msgs[i%len(msgs)])
	}
	for h.n.Load() < int64(b.N) {
		time.Sleep(50 * time.Microsecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	cancel()
	close(s.quit)
	wg.Wait()
}

// The in-process path acknowledges accepted and useless messages and leaves
// refused ones unacknowledged.
func TestAckDecisions(t *testing.T) {
	inv := testInventory(t, 2)
	refuse := &recorder{refuse: func(r *devices.Reading) error {
		if r.Asset.ID == "bin-0001" {
			return fmt.Errorf("refused")
		}
		return nil
	}}
	s, err := New(Config{Broker: "tcp://127.0.0.1:1", ClientID: "t", Workers: 1, MaxPayloadBytes: 200, MaxMessagesPerAsset: -1,
		Subscriptions: []Subscription{{Topic: "city/bins/{asset}/telemetry"}}}, inv, refuse, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorker(time.Minute)
	cases := []struct {
		topic, payload string
		acked          bool
		res            result
	}{
		{"city/bins/bin-0000/telemetry", `{"fill":{"pct":5}}`, true, resultOK},
		{"city/bins/bin-0001/telemetry", `{"fill":{"pct":5}}`, false, resultRejected},
		{"city/bins/bin-9999/telemetry", `{"fill":{"pct":5}}`, true, resultUnknownAsset},
		{"city/bins/bin-0000/telemetry", `{"fill":{"pct":5},"x":"` + string(make([]byte, 300)) + `"}`, true, resultOversize},
		{"city/bins/bin-0000/telemetry", `nope`, true, resultDecodeError},
		{"city/bins/bin-0000/telemetry", `{"other":1,"ts":1764130000123}`, true, resultDecodeError}, // none of the fields
		{"city/bins/bin-0000/telemetry", `{"fill":{"pct":true},"temp_c":3}`, true, resultDecodeError},
		{"city/bins/bin-0000/telemetry", `{"fill":{"pct":true}}`, true, resultDecodeError}, // nothing to refuse: not handed on
		// Behind bin-0001's refused message, its next ones wait too (even a bad one).
		{"city/bins/bin-0001/telemetry", `{"fill":{"pct":6}}`, false, resultRejected},
		{"city/bins/bin-0001/telemetry", `nope`, false, resultRejected},
	}
	for _, c := range cases {
		calls := refuse.calls
		before := s.counts[c.res].Load()
		m := &inMsg{topic: c.topic, payload: []byte(c.payload)}
		it, _ := s.admit(m)
		s.process(context.Background(), w, it)
		if got := m.acks.Load() == 1; got != c.acked {
			t.Errorf("%s %q: acked %v, want %v", c.topic, c.payload[:min(len(c.payload), 30)], got, c.acked)
		}
		if s.counts[c.res].Load() != before+1 {
			t.Errorf("%s %q: not counted as %s", c.topic, c.payload[:min(len(c.payload), 30)], resultNames[c.res])
		}
		handed := refuse.calls > calls
		if wantHanded := c.res == resultOK || c.res == resultRejected && c.payload == `{"fill":{"pct":5}}` ||
			c.res == resultDecodeError && strings.Contains(c.payload, "temp_c"); handed != wantHanded {
			t.Errorf("%s %q: handed on %v, want %v", c.topic, c.payload[:min(len(c.payload), 30)], handed, wantHanded)
		}
	}
	// On a new connection (the redelivery) bin-0001 is handed on again.
	s.gen.Add(1)
	m0 := &inMsg{topic: "city/bins/bin-0001/telemetry", payload: []byte(`{"fill":{"pct":5}}`)}
	calls0 := refuse.calls
	it, _ := s.admit(m0)
	s.process(context.Background(), w, it)
	if refuse.calls != calls0+1 {
		t.Error("bin-0001 still held back on a new connection")
	}
	// A message from a connection that is gone is neither handled nor acked.
	m := &inMsg{topic: "city/bins/bin-0000/telemetry", payload: []byte(`{"fill":{"pct":5}}`)}
	calls := refuse.calls
	it, _ = s.admit(m)
	it.gen++ // as if the connection went away after admit
	s.process(context.Background(), w, it)
	if m.acks.Load() != 0 || refuse.calls != calls || s.Status().Stale != 1 {
		t.Errorf("stale message: acks %d, handler calls %d→%d, stale %d", m.acks.Load(), calls, refuse.calls, s.Status().Stale)
	}
	if s.Status().Inflight != 0 {
		t.Errorf("inflight = %d after all settled", s.Status().Inflight)
	}
}

// BenchmarkThroughMosquitto is the end-to-end path through a real broker:
// mosquitto_pub processes (QoS 1, one per topic, fed lines on stdin) →
// mosquitto → subscriber → handler, with manual acks. It reports the rate and
// the subscriber's own CPU time per message (this process only: the
// publishers and the broker are other processes). The broker's in-flight
// window is raised as the README advises for high rates.
func BenchmarkThroughMosquitto(b *testing.B) {
	m := testenv.StartMosquitto(b, testenv.WithConfigLines("max_inflight_messages 1000", "max_queued_messages 0"))
	pubTool := testenv.RequireTool(b, "mosquitto_pub", "apt-get install -y mosquitto-clients")
	h := &countingHandler{}
	const publishers = 8
	inv := testInventory(b, publishers)
	log, _ := testLogger(b)
	s, err := New(Config{Broker: m.URL(), ClientID: "bench-sub", MaxMessagesPerAsset: -1, Subscriptions: []Subscription{{Topic: "city/bins/{asset}/telemetry"}}},
		inv, h, prometheus.NewRegistry(), log)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(b, 10*time.Second, "subscribed", s.Connected)

	// Prepare the publishers' input before timing.
	_, port, _ := strings.Cut(m.Addr(), ":")
	var cmds []*exec.Cmd
	for p := range publishers {
		var in bytes.Buffer
		line := binPayload(time.Now(), 50, p) + "\n"
		for i := p; i < b.N; i += publishers {
			in.WriteString(line)
		}
		cmd := exec.Command(pubTool, "-h", "127.0.0.1", "-p", port, "-q", "1", "-l", "-M", "1000",
			"-i", fmt.Sprintf("bench-pub-%d", p), "-t", fmt.Sprintf("city/bins/bin-%04d/telemetry", p))
		cmd.Stdin = &in
		cmds = append(cmds, cmd)
	}
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	start := time.Now()
	for _, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			b.Fatalf("mosquitto_pub: %v", err)
		}
	}
	waitFor(b, time.Minute, "every message handled", func() bool { return h.n.Load() >= int64(b.N) })
	b.StopTimer()
	elapsed := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "sub-cpu-µs/msg")
}

// BenchmarkIngest is a point's whole in-process path in the gateway, on the
// calling goroutine (one core): topic match, asset lookup, JSON decode, the
// line-protocol encoding, the append to a real write-ahead log (sync
// interval, the default) and the shipped rule set (configs/rules) over the
// reading, then the ack. No broker and no InfluxDB: this is the gateway's
// own cost per point (issue 6 asks for at least 500,000 points/s on one
// core). The WAL is drained and acknowledged by a goroutine as the writer
// would, so it does not fill.
func BenchmarkIngest(b *testing.B) {
	for _, batch := range []int{1, MaxBatch} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchIngest(b, batch) })
	}
}

func benchIngest(b *testing.B, batch int) {
	const assets = 10000
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		b.Fatal(err)
	}
	list := make([]*devices.Asset, assets)
	for i := range list {
		list[i] = &devices.Asset{ID: fmt.Sprintf("bin-%04d", i), Model: "binsense-ws3",
			Lat: 31.2 + float64(i)*1e-5, Lon: 121.4, District: "310101", Grid: "31010100701"}
	}
	inv, err := devices.NewInventory(cat, list)
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.DiscardHandler)
	w, err := wal.Open(wal.Config{Dir: b.TempDir()}, reg, log)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	files, err := filepath.Glob("../../configs/rules/*.yaml")
	if err != nil || len(files) == 0 {
		b.Fatalf("the shipped rules: %v %v", files, err)
	}
	eng, err := rules.NewEngine(rules.Options{}, cat, inv, reg, log)
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	if err := eng.Load(files...); err != nil {
		b.Fatal(err)
	}
	enc := influx.NewEncoder("gw-bench")
	enc.Prepare(inv)
	pipe, err := pipeline.New(enc, w, eng, reg)
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Broker: "tcp://127.0.0.1:1", ClientID: "bench", Workers: 1, MaxMessagesPerAsset: -1,
		Subscriptions: []Subscription{{Topic: "city/bins/{asset}/telemetry"}}}, inv, pipe, reg, nil)
	if err != nil {
		b.Fatal(err)
	}
	// One message per asset, its "ts" rewritten in place before each use:
	// each message of an asset one second after its previous one, as a
	// real series would be (the rules' windows see advancing time), with
	// no per-message setup to count.
	base := time.Now().Add(-time.Duration(b.N/assets+2) * time.Second).UnixMilli()
	msgs := make([]*inMsg, assets)
	tsAt := make([]int, assets)
	for a := range msgs {
		p := []byte(binPayload(time.UnixMilli(base), float64(a%90), a%200))
		msgs[a] = &inMsg{topic: fmt.Sprintf("city/bins/bin-%04d/telemetry", a), payload: p}
		tsAt[a] = bytes.Index(p, []byte(`"ts":`)) + len(`"ts":`)
	}
	setTS := func(a int, ms int64) { // same digit count: 13 until 2286
		strconv.AppendInt(msgs[a].payload[tsAt[a]:tsAt[a]], ms, 10)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	drained := make(chan struct{})
	go func() { // the writer's side: take batches and acknowledge them
		defer close(drained)
		for {
			bt, err := w.Next(ctx, false)
			if err != nil {
				return
			}
			w.Done(bt, true)
		}
	}()
	wk := newWorker(time.Minute)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		// A worker takes what its queue holds, up to MaxBatch: batch=1 is
		// a trickle, batch=64 a busy gateway.
		wk.items = wk.items[:0]
		for ; i < b.N && len(wk.items) < batch; i++ {
			m := msgs[i%assets]
			setTS(i%assets, base+int64(i/assets)*1000)
			it, _ := s.admit(m)
			wk.items = append(wk.items, it)
		}
		s.processBatch(ctx, wk)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "points/s")
	if ok := s.counts[resultOK].Load(); ok != uint64(b.N) {
		b.Fatalf("%d of %d messages accepted", ok, b.N)
	}
	cancel()
	<-drained
}
