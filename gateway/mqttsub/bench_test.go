package mqttsub

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/testenv"
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
	s, err := New(Config{Broker: "tcp://127.0.0.1:1", ClientID: "bench", Workers: workers,
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
	w := &worker{logs: newRateLog(time.Minute)}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(msgs[0].payload)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := msgs[i%len(msgs)]
		it := item{msg: m, recv: time.Now(), tmpl: -1}
		if a, ok := s.tmpls[0].Match(m.topic); ok {
			it.tmpl, it.asset = 0, a
		}
		s.inflight.Add(1)
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
	s, err := New(Config{Broker: "tcp://127.0.0.1:1", ClientID: "t", Workers: 1, MaxPayloadBytes: 200,
		Subscriptions: []Subscription{{Topic: "city/bins/{asset}/telemetry"}}}, inv, refuse, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &worker{logs: newRateLog(time.Minute)}
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
		{"city/bins/bin-0000/telemetry", `{"fill":{"pct":true},"temp_c":3}`, true, resultDecodeError},
		{"city/bins/bin-0001/telemetry", `{"fill":{"pct":true}}`, true, resultDecodeError}, // nothing to refuse: not handed on
	}
	for _, c := range cases {
		before := s.counts[c.res].Load()
		m := &inMsg{topic: c.topic, payload: []byte(c.payload)}
		s.inflight.Add(1)
		it := item{msg: m, recv: time.Now(), tmpl: -1}
		if a, ok := s.tmpls[0].Match(m.topic); ok {
			it.tmpl, it.asset = 0, a
		}
		s.process(context.Background(), w, it)
		if got := m.acks.Load() == 1; got != c.acked {
			t.Errorf("%s %q: acked %v, want %v", c.topic, c.payload[:min(len(c.payload), 30)], got, c.acked)
		}
		if s.counts[c.res].Load() != before+1 {
			t.Errorf("%s %q: not counted as %s", c.topic, c.payload[:min(len(c.payload), 30)], resultNames[c.res])
		}
	}
	// A message from a connection that is gone is neither handled nor acked.
	m := &inMsg{topic: "city/bins/bin-0000/telemetry", payload: []byte(`{"fill":{"pct":5}}`)}
	calls := refuse.calls
	s.inflight.Add(1)
	s.process(context.Background(), w, item{msg: m, recv: time.Now(), tmpl: 0, asset: "bin-0000", gen: s.gen.Load() + 1})
	if m.acks.Load() != 0 || refuse.calls != calls || s.Status().Stale != 1 {
		t.Errorf("stale message: acks %d, handler calls %d→%d, stale %d", m.acks.Load(), calls, refuse.calls, s.Status().Stale)
	}
	if s.Status().Inflight != 0 {
		t.Errorf("inflight = %d after all settled", s.Status().Inflight)
	}
}

// BenchmarkThroughMosquitto is the end-to-end rate through a real broker:
// a paho publisher (QoS 1, on the same machine, so it competes for the CPU)
// → mosquitto → subscriber → handler, with manual acks. The broker's
// in-flight window is raised as the README advises for high rates.
func BenchmarkThroughMosquitto(b *testing.B) {
	m := testenv.StartMosquitto(b, testenv.WithConfigLines("max_inflight_messages 1000", "max_queued_messages 0"))
	h := &countingHandler{}
	inv := testInventory(b, 1000)
	log, _ := testLogger(b)
	s, err := New(Config{Broker: m.URL(), ClientID: "bench-sub", Subscriptions: []Subscription{{Topic: "city/bins/{asset}/telemetry"}}},
		inv, h, prometheus.NewRegistry(), log)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(b, 10*time.Second, "subscribed", s.Connected)
	pub := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID("bench-pub").SetMaxResumePubInFlight(1000))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	defer pub.Disconnect(100)
	payloads := make([][]byte, 1000)
	topics := make([]string, 1000)
	for i := range payloads {
		topics[i] = fmt.Sprintf("city/bins/bin-%04d/telemetry", i)
		payloads[i] = []byte(binPayload(time.Now(), 50, i))
	}
	b.ResetTimer()
	start := time.Now()
	window := make(chan mqtt.Token, 2000) // bound the publisher's outstanding messages
	var pw sync.WaitGroup
	pw.Add(1)
	go func() {
		defer pw.Done()
		for tok := range window {
			tok.Wait()
		}
	}()
	for i := 0; i < b.N; i++ {
		window <- pub.Publish(topics[i%1000], 1, false, payloads[i%1000])
	}
	close(window)
	pw.Wait()
	for h.n.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
