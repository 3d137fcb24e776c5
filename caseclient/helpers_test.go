package caseclient

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/citygw/citygw/caseclient/casedesk"
	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/rules"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	testAPIKey = "test-api-key"
	// 32 bytes of key.
	testSecret = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
)

var t0 = time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC)

func testInventory(t testing.TB) *devices.Inventory {
	t.Helper()
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	inv, err := devices.LoadInventory("testdata/inventory.yaml", cat)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func testCodes(t testing.TB) *CodeTable {
	t.Helper()
	ct, err := LoadCodeTable("../configs/citycodes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// desk is the reference case desk served over real loopback HTTP.
type desk struct {
	*casedesk.Desk
	srv *httptest.Server
	dir string
}

func startDesk(t *testing.T, mod func(*casedesk.Config)) *desk {
	t.Helper()
	cfg := casedesk.Config{Dir: t.TempDir(), APIKeys: []string{testAPIKey}, WebhookSecrets: []string{testSecret},
		TokenDelay: 100 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	d, err := casedesk.New(cfg, testLog(t).With("component", "casedesk"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		d.Close()
	})
	return &desk{Desk: d, srv: srv, dir: cfg.Dir}
}

// requestsByKey returns the desk's requests by case_key.
func (d *desk) requestsByKey() map[string][]casedesk.Request {
	out := map[string][]casedesk.Request{}
	for _, r := range d.Requests() {
		out[r.CaseKey()] = append(out[r.CaseKey()], r)
	}
	return out
}

// clientUpdates returns the client's updates on a request.
func clientUpdates(r casedesk.Request) []casedesk.Update {
	var out []casedesk.Update
	for _, u := range r.Updates {
		if u.Source == "client" {
			out = append(out, u)
		}
	}
	return out
}

// fastConfig is a client config with short intervals for tests.
func fastConfig(t *testing.T, sinks ...SinkConfig) Config {
	return Config{Outbox: t.TempDir() + "/outbox.db", Sinks: sinks,
		DeliveryInterval: ms(20), RetryBase: ms(20), RetryMax: ms(200), PollInterval: ms(50), ReopenWait: ms(200),
		Timeout: ms(2000), BreakerFailures: 50, BreakerCooldown: ms(100), MaxOpensPerRule: -1, MaxOpensPerSink: -1,
		TelemetryURL: "http://grafana.local/d/asset?var-asset={asset}&from={from_ms}&to={to_ms}"}
}

func ms(n int) yamlconf.Duration { return yamlconf.Duration(time.Duration(n) * time.Millisecond) }

func deskSink(d *desk) SinkConfig {
	return SinkConfig{Name: "desk", Type: SinkOpen311, URL: d.srv.URL, APIKey: testAPIKey, CaseURL: d.srv.URL + "/cases/{id}"}
}

func hookSink(d *desk) SinkConfig {
	return SinkConfig{Name: "hook", Type: SinkWebhook, URL: d.srv.URL + "/webhook", Secret: testSecret}
}

// running is a client with its delivery loop running.
type running struct {
	*Client
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{}
	closed bool
}

func startClient(t *testing.T, cfg Config) *running {
	t.Helper()
	r := newClient(t, cfg)
	r.start()
	return r
}

func newClient(t *testing.T, cfg Config) *running {
	t.Helper()
	return newClientWithCodes(t, cfg, testCodes(t))
}

func newClientWithCodes(t *testing.T, cfg Config, codes *CodeTable) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New(cfg, codes, testInventory(t), reg, testLog(t).With("component", "caseclient"))
	if err != nil {
		t.Fatal(err)
	}
	r := &running{Client: c, reg: reg}
	t.Cleanup(r.stop)
	return r
}

func (r *running) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go func() {
		defer close(r.done)
		r.Run(ctx)
	}()
}

// stop ends Run and closes the client (idempotent).
func (r *running) stop() {
	if r.closed {
		return
	}
	r.closed = true
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
	r.Close()
}

func (r *running) counter(name string, labels ...string) float64 {
	mfs, err := r.reg.Gather()
	if err != nil {
		panic(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Gauge != nil:
				total += m.Gauge.GetValue()
			case m.Histogram != nil:
				total += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return total
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fire returns a firing transition of an episode.
func fire(rule, service, kind, group string, assets []string, start time.Time, sev string) rules.Transition {
	return rules.Transition{EpisodeID: episode(rule, group, start), Rule: rule, Kind: kind, GroupKey: group, Assets: assets,
		From: rules.Pending, To: rules.Firing, Time: start.Add(10 * time.Minute), Start: start, Severity: sev,
		Values: map[string]any{"current_a": 0.01, "relay_on": true}, Thresholds: map[string]any{"current_a": 0.03},
		Title: "路灯不亮 " + group, Description: "Lamp " + group + " is dark at night.", Service: service}
}

func cleared(f rules.Transition, at time.Time) rules.Transition {
	f.From, f.To, f.Reason, f.Time = rules.Firing, rules.Inactive, "cleared", at
	return f
}

func episode(rule, group string, start time.Time) string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(rule) + "-" + group + "-" + start.Format("150405")
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}
