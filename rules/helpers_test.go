package rules

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/prometheus/client_golang/prometheus"
)

// testCatalog is the shipped catalog.
func testCatalog(tb testing.TB) *devices.Catalog {
	tb.Helper()
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		tb.Fatal(err)
	}
	return cat
}

// testInventory makes n assets of each kind, lamps on circuits of 4.
func testInventory(tb testing.TB, cat *devices.Catalog, n int) *devices.Inventory {
	tb.Helper()
	var as []*devices.Asset
	for i := 0; i < n; i++ {
		host := fmt.Sprintf("10.0.%d.%d:502", i/200, i%200)
		as = append(as,
			&devices.Asset{ID: fmt.Sprintf("L%d", i), Model: "citylight-slc200", Lat: 31.23, Lon: 121.47, District: "310101",
				Modbus: &devices.ModbusAddr{Host: host, Unit: 1},
				Attrs:  map[string]any{"rated_power_w": 100.0, "circuit": fmt.Sprintf("C%d", i/4), "cabinet": fmt.Sprintf("CAB%d", i/4)}},
			&devices.Asset{ID: fmt.Sprintf("CAB%d", i), Model: "citylight-ccu300", Lat: 31.23, Lon: 121.47,
				Modbus: &devices.ModbusAddr{Host: host, Unit: 2}},
			&devices.Asset{ID: fmt.Sprintf("G%d", i), Model: "gasreg-rtu500", Lat: 31.2, Lon: 121.5,
				Modbus: &devices.ModbusAddr{Host: host, Unit: 3},
				Attrs:  map[string]any{"pressure_min_kpa": 250.0, "pressure_max_kpa": 350.0}},
			&devices.Asset{ID: fmt.Sprintf("B%d", i), Model: "binsense-ws3", Lat: 31.2, Lon: 121.5,
				MQTT: &devices.MQTTAddr{Topic: fmt.Sprintf("bins/B%d", i)}, Attrs: map[string]any{"capacity_l": 240.0}},
		)
	}
	inv, err := devices.NewInventory(cat, as)
	if err != nil {
		tb.Fatal(err)
	}
	return inv
}

// writeRules writes a rule file and returns its path.
func writeRules(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// memSink records transitions.
type memSink struct {
	mu  sync.Mutex
	ts  []Transition
	err error
}

func (s *memSink) Transitions(_ context.Context, ts []Transition) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.ts = append(s.ts, ts...)
	return nil
}

func (s *memSink) take() []Transition {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.ts
	s.ts = nil
	return ts
}

// reading builds a reading of asset a at t with the named values.
func reading(tb testing.TB, a *devices.Asset, t time.Time, vals map[string]any) *devices.Reading {
	tb.Helper()
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
			if a.Schema.Fields[i].Type == devices.Float {
				r.Values[i] = devices.FloatValue(float64(x))
			} else {
				r.Values[i] = devices.IntValue(int64(x))
			}
		case float64:
			r.Values[i] = devices.FloatValue(x)
		case string:
			r.Values[i] = devices.StringValue(x)
		}
	}
	return r
}

func newTestEngine(tb testing.TB, opts Options, inv *devices.Inventory, cat *devices.Catalog, files ...string) (*Engine, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	e, err := NewEngine(opts, cat, inv, reg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	if len(files) > 0 {
		if err := e.Load(files...); err != nil {
			tb.Fatal(err)
		}
	}
	return e, reg
}

// shippedRules returns configs/rules/*.yaml.
func shippedRules(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob("../configs/rules/*.yaml")
	if err != nil || len(files) == 0 {
		tb.Fatalf("no shipped rules found: %v", err)
	}
	return files
}
