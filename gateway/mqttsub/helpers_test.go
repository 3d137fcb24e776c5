package mqttsub

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/testenv"
)

// testInventory returns n waste bins bin-0000.. (binsense-ws3, published on
// city/bins/<id>/telemetry by convention of the templates used in tests), a
// bin that publishes on a fixed legacy topic, and a streetlight read over
// Modbus.
func testInventory(t testing.TB, n int) *devices.Inventory {
	t.Helper()
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatalf("loading the built-in profiles: %v", err)
	}
	var assets []*devices.Asset
	for i := range n {
		assets = append(assets, &devices.Asset{
			ID: fmt.Sprintf("bin-%04d", i), Model: "binsense-ws3",
			Lat: 31.2 + float64(i)*1e-4, Lon: 121.4, District: "310101",
		})
	}
	assets = append(assets,
		&devices.Asset{ID: "legacy-bin", Model: "binsense-ws3", MQTT: &devices.MQTTAddr{Topic: "legacy/bin9/data"}, Lat: 31.3, Lon: 121.5},
		&devices.Asset{ID: "lamp-1", Model: "citylight-slc200", Modbus: &devices.ModbusAddr{Host: "127.0.0.1:1502", Unit: 1}, Lat: 31.3, Lon: 121.5},
	)
	inv, err := devices.NewInventory(cat, assets)
	if err != nil {
		t.Fatalf("building the test inventory: %v", err)
	}
	return inv
}

// got is one reading as the handler saw it (copied: the subscriber reuses it).
type got struct {
	asset    string
	time     time.Time
	received time.Time
	values   map[string]devices.Value
}

// recorder is a Handler that keeps what it accepted. refuse, when set,
// decides per reading whether to refuse it.
type recorder struct {
	mu     sync.Mutex
	got    []got
	calls  int
	refuse func(r *devices.Reading) error
}

func (h *recorder) Handle(_ context.Context, r *devices.Reading) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.refuse != nil {
		if err := h.refuse(r); err != nil {
			return err
		}
	}
	g := got{asset: r.Asset.ID, time: r.Time, received: r.Received, values: map[string]devices.Value{}}
	for i, v := range r.Values {
		if v.Valid() {
			g.values[r.Asset.Schema.Fields[i].Name] = v
		}
	}
	h.got = append(h.got, g)
	return nil
}

func (h *recorder) snapshot() []got {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]got(nil), h.got...)
}

func (h *recorder) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

func testLogger(t testing.TB) (*slog.Logger, *testenv.SyncBuffer) {
	buf := &testenv.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("subscriber log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// running is a Subscriber whose Run goroutine is stopped at the end of the test.
type running struct {
	*Subscriber
	reg    *prometheus.Registry
	log    *testenv.SyncBuffer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// stop cancels Run and waits for it to return.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return within 15s of cancellation")
		}
	})
}

func startSub(t testing.TB, cfg Config, inv *devices.Inventory, h Handler) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	log, buf := testLogger(t)
	s, err := New(cfg, inv, h, reg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Subscriber: s, reg: reg, log: buf, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// publisher is a plain paho client on the broker's plain listener.
func publisher(t testing.TB, m *testenv.Mosquitto, id string) mqtt.Client {
	t.Helper()
	// discardStore: paho's resume of in-flight publishes after a
	// reconnect races with its own writer (Dup set while the packet is
	// written; seen under -race in TestResumesAfterBrokerRestart). A
	// publish in flight when the broker goes away fails its token instead.
	o := mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID(id).SetAutoReconnect(true).SetStore(discardStore{}).
		SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).SetMaxReconnectInterval(time.Second)
	if u, p := m.Credentials(); u != "" {
		o.SetUsername(u).SetPassword(p)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publish(t testing.TB, c mqtt.Client, topic string, payload any) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish to %s: %v", topic, tok.Error())
	}
}

// metric returns the value of a counter or gauge child.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

func binPayload(ts time.Time, fill float64, dist int) string {
	return fmt.Sprintf(`{"ts":%d,"fill":{"pct":%g,"dist_cm":%d},"temp_c":21.5,"tilt_deg":2.0,"lid_open":false,`+
		`"battery":{"pct":88,"v":3.61},"radio":{"rssi":-87,"snr":7.5},"fw":"3.1.4"}`, ts.UnixMilli(), fill, dist)
}
