package mqttpub_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/firmware-sim/city"
	"github.com/citygw/citygw/firmware-sim/faults"
	"github.com/citygw/citygw/firmware-sim/mqttpub"
	"github.com/citygw/citygw/firmware-sim/sim"
	"github.com/citygw/citygw/gateway/testenv"
)

type received struct {
	mu   sync.Mutex
	msgs map[string][][]byte // by topic
}

func (r *received) count(topic string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs[topic])
}

func (r *received) all(topic string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.msgs[topic]...)
}

func subscribe(t *testing.T, url string) *received {
	t.Helper()
	r := &received{msgs: map[string][][]byte{}}
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID("test-sub").SetAutoReconnect(true).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(500 * time.Millisecond).
		SetOnConnectHandler(func(c mqtt.Client) {
			c.Subscribe("city/bins/#", 1, func(_ mqtt.Client, m mqtt.Message) {
				r.mu.Lock()
				r.msgs[m.Topic()] = append(r.msgs[m.Topic()], append([]byte(nil), m.Payload()...))
				r.mu.Unlock()
			})
		})
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return r
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPublishToMosquitto(t *testing.T) {
	broker := testenv.StartMosquitto(t)
	conf, err := city.LoadConfig("../../configs/city-small.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cat, _ := devices.LoadBuiltinCatalog()
	c, err := city.Generate(conf, cat)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const interval = time.Second
	e := sim.New(c, sim.Options{Speed: 60, History: time.Minute, MessageInterval: interval, Log: log})
	sub := subscribe(t, broker.URL())

	p := mqttpub.New(e, mqttpub.Options{Broker: broker.URL(), ClientID: "sim-test", QoS: 1, Interval: interval, Log: log})
	if err := p.Connect(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	n := e.Len()
	acked := func(i int) int64 { _, a, _ := p.Counts(i); return a }
	waitFor(t, "every bin to publish 3 acknowledged messages", 10*time.Second, func() bool {
		for i := 0; i < n; i++ {
			if acked(i) < 3 {
				return false
			}
		}
		return true
	})

	// Every message received is one the simulator recorded as its ground
	// truth, byte for byte, and decodes to the same values.
	for i, b := range c.Bins {
		id, topic := b.Asset.ID, b.Asset.MQTT.Topic
		h, err := e.History(id, 0)
		if err != nil {
			t.Fatal(err)
		}
		truth := map[int64]map[string]any{}
		for _, s := range h.Samples {
			truth[s.UnixMs] = s.Values
		}
		msgs := sub.all(topic)
		if len(msgs) < 2 {
			t.Errorf("%s: received %d messages", id, len(msgs))
		}
		for _, m := range msgs {
			var r devices.Reading
			r.Reset(b.Asset)
			ts, err := b.Asset.Profile.DecodeJSON(m, &r)
			if err != nil {
				t.Fatalf("%s: %v in %s", id, err, m)
			}
			want, ok := truth[ts.UnixMilli()]
			if !ok {
				t.Errorf("%s: received a message at %v the simulator has no truth for", id, ts)
				continue
			}
			for j, f := range r.Asset.Schema.Fields {
				if got := r.Values[j].Any(); got != want[f.Name] {
					t.Errorf("%s %s: received %v, truth %v", id, f.Name, got, want[f.Name])
				}
			}
		}
		if a, ak, f := p.Counts(i); f != 0 || ak > a {
			t.Errorf("%s: attempted %d acked %d failed %d", id, a, ak, f)
		}
	}

	// Publishes are spread across the interval, not sent in a burst: the
	// bins' latest messages have distinct timestamps covering most of it.
	var first, last int64
	for _, b := range c.Bins {
		h, _ := e.History(b.Asset.ID, 0)
		ts := h.Samples[len(h.Samples)-1].UnixMs % int64(interval/time.Millisecond)
		if first == 0 || ts < first {
			first = ts
		}
		if ts > last {
			last = ts
		}
	}
	if spread := time.Duration(last-first) * time.Millisecond; spread < interval/2 {
		t.Errorf("publishes spread over %v of a %v interval", spread, interval)
	}

	// A silent bin stops publishing; the others go on.
	f, err := e.AddFault(faults.Spec{Kind: faults.Silent, Asset: c.Bins[0].Asset.ID})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	before, _, _ := p.Counts(0)
	other, _, _ := p.Counts(1)
	time.Sleep(2 * interval)
	if after, _, _ := p.Counts(0); after != before {
		t.Errorf("silent bin published %d messages", after-before)
	}
	if now, _, _ := p.Counts(1); now <= other {
		t.Error("neighbour of a silent bin stopped publishing")
	}
	e.RemoveFault(f.ID)

	// The broker restarts: the publisher reconnects by itself and every
	// message attempted meanwhile is acknowledged in the end.
	broker.Stop()
	attemptedAtStop := make([]int64, n)
	for i := range attemptedAtStop {
		attemptedAtStop[i], _, _ = p.Counts(i)
	}
	time.Sleep(2 * interval)
	broker.Start()
	waitFor(t, "publishing to resume after the broker restart", 15*time.Second, func() bool {
		for i := 0; i < n; i++ {
			a, ak, _ := p.Counts(i)
			if a < attemptedAtStop[i]+3 || ak < a-1 {
				return false
			}
		}
		return true
	})
	if p.Connects() < 2 {
		t.Errorf("connected %d times, want a reconnection", p.Connects())
	}
	topic := c.Bins[3].Asset.MQTT.Topic
	got := sub.count(topic)
	waitFor(t, "the subscriber to receive messages after the restart", 10*time.Second, func() bool { return sub.count(topic) > got })
	var failed int64
	for i := 0; i < n; i++ {
		_, _, f := p.Counts(i)
		failed += f
	}
	if failed != 0 {
		t.Errorf("%d messages failed across the restart", failed)
	}
}
