package statuspage

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/caseclient"
	"github.com/citygw/citygw/caseclient/casedesk"
	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/rules"
)

// base is the tests' "now": real time, since the case client and desk keep real time.
var base = time.Now().UTC().Truncate(time.Second)

// demo loads the shipped catalog and the demo city's inventory.
func demo(tb testing.TB) (*devices.Catalog, *devices.Inventory) {
	tb.Helper()
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		tb.Fatal(err)
	}
	inv, err := devices.LoadInventory("../../configs/inventory-demo.yaml", cat)
	if err != nil {
		tb.Fatal(err)
	}
	return cat, inv
}

// shippedEngine is a rule engine running the shipped rule set.
func shippedEngine(tb testing.TB, cat *devices.Catalog, inv *devices.Inventory, sink rules.Sink) *rules.Engine {
	tb.Helper()
	e, err := rules.NewEngine(rules.Options{Location: time.UTC, Sink: sink, DisplaySamples: 16}, cat, inv, prometheus.NewRegistry(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	files, err := filepath.Glob("../../configs/rules/*.yaml")
	if err != nil || len(files) == 0 {
		tb.Fatalf("no shipped rules: %v", err)
	}
	if err := e.Load(files...); err != nil {
		tb.Fatal(err)
	}
	return e
}

// feed evaluates one reading of asset id at t with the named values.
func feed(tb testing.TB, e *rules.Engine, inv *devices.Inventory, id string, t time.Time, vals map[string]any) {
	tb.Helper()
	a := inv.Lookup(id)
	if a == nil {
		tb.Fatalf("no asset %s", id)
	}
	r := &devices.Reading{}
	r.Reset(a)
	r.Time, r.Received = t, t
	for k, v := range vals {
		i, ok := a.Schema.Index(k)
		if !ok {
			tb.Fatalf("no field %s in %s", k, a.Kind)
		}
		switch x := v.(type) {
		case bool:
			r.Values[i] = devices.BoolValue(x)
		case int:
			r.Values[i] = devices.IntValue(int64(x))
		case float64:
			r.Values[i] = devices.FloatValue(x)
		case string:
			r.Values[i] = devices.StringValue(x)
		}
	}
	e.Eval(context.Background(), r)
}

// harmless is a reading field per kind that no shipped rule reads alone,
// so a reading carrying only it marks the asset as reporting and nothing
// else.
var harmless = map[string]map[string]any{
	"streetlight": {"voltage_v": 230.0},
	"cabinet":     {"va_v": 230.0},
	"gas_station": {"inlet_pressure_kpa": 300.0},
	"waste_bin":   {"rssi_dbm": -80},
}

// report makes asset id report harmlessly at t.
func report(tb testing.TB, e *rules.Engine, inv *devices.Inventory, id string, t time.Time) {
	tb.Helper()
	feed(tb, e, inv, id, t, harmless[inv.Lookup(id).Kind])
}

// fireGasPressure makes gas station id fire the shipped
// gas_station.outlet_pressure_out_of_band rule (for: 2m) by now: its outlet
// pressure falls from the middle of its band to far below it.
func fireGasPressure(tb testing.TB, e *rules.Engine, inv *devices.Inventory, id string, now time.Time) {
	tb.Helper()
	a := inv.Lookup(id)
	lo, hi := a.AttrFloat("pressure_min_kpa"), a.AttrFloat("pressure_max_kpa")
	feed(tb, e, inv, id, now.Add(-4*time.Minute), map[string]any{"outlet_pressure_kpa": (lo + hi) / 2})
	for t := now.Add(-3 * time.Minute); !t.After(now); t = t.Add(30 * time.Second) {
		feed(tb, e, inv, id, t, map[string]any{"outlet_pressure_kpa": lo / 2})
	}
}

// clock is a settable time source, safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) add(d time.Duration) { c.set(c.now().Add(d)) }

func yamlDur(d time.Duration) yamlconf.Duration { return yamlconf.Duration(d) }

// cases is the real case chain: a case client delivering to the reference
// case desk over loopback HTTP.
type cases struct {
	client *caseclient.Client
	desk   *casedesk.Desk
	url    string
}

func startCases(tb testing.TB, inv *devices.Inventory) *cases {
	tb.Helper()
	d, err := casedesk.New(casedesk.Config{Dir: tb.TempDir(), APIKeys: []string{"test-key"}, TokenDelay: 50 * time.Millisecond}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	codes, err := caseclient.LoadCodeTable("../../configs/citycodes.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	ms := func(n int) yamlconf.Duration { return yamlconf.Duration(time.Duration(n) * time.Millisecond) }
	cfg := caseclient.Config{Outbox: filepath.Join(tb.TempDir(), "outbox.db"),
		Sinks: []caseclient.SinkConfig{{Name: "desk", Type: caseclient.SinkOpen311, URL: srv.URL, APIKey: "test-key",
			CaseURL: srv.URL + "/cases/{id}"}},
		DeliveryInterval: ms(20), RetryBase: ms(20), RetryMax: ms(200), PollInterval: ms(50), Timeout: ms(5000)}
	c, err := caseclient.New(cfg, codes, inv, prometheus.NewRegistry(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
		c.Close()
		srv.CloseClientConnections()
		srv.Close()
		d.Close()
	})
	return &cases{client: c, desk: d, url: srv.URL}
}

// waitCase waits until the case client knows the desk's id for a case of
// the episode and returns it.
func (c *cases) waitCase(tb testing.TB, episode string) caseclient.CaseSinkStatus {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, cs := range c.client.Status().Cases {
			if cs.Episode == episode {
				for _, s := range cs.Sinks {
					if s.ID != "" {
						return s
					}
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("no case for episode %s: %+v", episode, c.client.Status())
	return caseclient.CaseSinkStatus{}
}
