package citybench

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readRepoFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestModbusCounts(t *testing.T) {
	for _, tc := range []struct {
		assets               int
		cabinets, lamps, gas int
		atLeast, atMost      int
	}{
		{0, modbusCabinets, modbusLamps, modbusGas, 2000, 1 << 30}, // the "at least 2,000"
		{210, 9, modbusLamps, 5, 190, 210},
		{1, 1, modbusLamps, 1, 1, 22},
	} {
		c, l, g := modbusScale{}.counts(&Options{Assets: tc.assets})
		n := c*(l+1) + g
		if c != tc.cabinets || l != tc.lamps || g != tc.gas || n < tc.atLeast || n > tc.atMost {
			t.Errorf("-assets %d: %d cabinets × %d lamps + %d gas = %d devices, want %d × %d + %d in [%d, %d]",
				tc.assets, c, l, g, n, tc.cabinets, tc.lamps, tc.gas, tc.atLeast, tc.atMost)
		}
	}
}

const scrape = `# HELP citygw_modbus_polls_total Device polls by result.
# TYPE citygw_modbus_polls_total counter
citygw_modbus_polls_total{result="ok"} 90
citygw_modbus_polls_total{result="partial"} 7
citygw_modbus_polls_total{result="failed"} 3
citygw_modbus_devices_up 12
citygw_modbus_poll_lag_seconds_bucket{le="0.001"} 50
citygw_modbus_poll_lag_seconds_bucket{le="0.005"} 90
citygw_modbus_poll_lag_seconds_bucket{le="0.01"} 100
citygw_modbus_poll_lag_seconds_bucket{le="+Inf"} 100
citygw_modbus_poll_lag_seconds_sum 0.3
citygw_modbus_poll_lag_seconds_count 100
citygw_modbus_request_duration_seconds_bucket{endpoint="a",le="0.01"} 3
citygw_modbus_request_duration_seconds_bucket{endpoint="a",le="+Inf"} 4
citygw_modbus_request_duration_seconds_bucket{endpoint="b",le="0.01"} 1
citygw_modbus_request_duration_seconds_bucket{endpoint="b",le="+Inf"} 4
`

func TestPromParsing(t *testing.T) {
	p, err := parseProm(strings.NewReader(scrape))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.sum("citygw_modbus_polls_total"); got != 100 {
		t.Errorf("sum of polls = %v", got)
	}
	if got := p.sum("citygw_modbus_polls_total", `result="ok"`); got != 90 {
		t.Errorf("ok polls = %v", got)
	}
	if got := p.sum("citygw_modbus_devices_up"); got != 12 {
		t.Errorf("devices up = %v", got)
	}
	if got := p.sum("citygw_nothing"); got != 0 {
		t.Errorf("absent metric = %v", got)
	}
	h := p.histogram("citygw_modbus_poll_lag_seconds")
	if len(h) != 4 || !math.IsInf(h[3].le, 1) {
		t.Fatalf("buckets %v", h)
	}
	for _, tc := range []struct{ q, want float64 }{
		{0.25, 0.0005}, // halfway through the first bucket
		{0.5, 0.001},   // its upper bound
		{0.7, 0.003},   // halfway through the second
		{0.99, 0.0095}, // nine tenths through the third
	} {
		if got := h.quantile(tc.q); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	// A later scrape minus this one: only what happened in between.
	later := hist{{0.001, 50}, {0.005, 90}, {0.01, 100}, {math.Inf(1), 200}}
	d := later.minus(h)
	if d[0].count != 0 || d[2].count != 0 || d[3].count != 100 {
		t.Errorf("difference %v", d)
	}
	// Everything beyond the last finite bound: that bound, not +Inf.
	if got := d.quantile(0.99); got != 0.01 {
		t.Errorf("quantile in +Inf = %v, want 0.01", got)
	}
	// Summed over endpoints.
	if got := p.histogram("citygw_modbus_request_duration_seconds"); len(got) != 2 || got[0] != (bucket{0.01, 4}) || got[1].count != 8 {
		t.Errorf("request durations summed over endpoints: %v", got)
	}
	if got := (hist{}).quantile(0.5); !math.IsNaN(got) {
		t.Errorf("empty histogram quantile = %v", got)
	}
}

// A small Modbus run with real processes: every device up and polled about
// once a second, and the figures filled in.
func TestModbusSmall(t *testing.T) {
	b := newBench(t, SysCitygw)
	b.Opts.Assets = 50
	rep, err := modbusScale{window: 10 * time.Second, warmup: 3 * time.Second}.Run(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := rep.Systems[0].Extra["modbus"].(*ModbusScale)
	if r == nil {
		t.Fatalf("no modbus figures: %#v", rep.Systems[0].Extra)
	}
	c, l, g := modbusScale{}.counts(&b.Opts)
	if r.Devices != c*(l+1)+g || r.DevicesUp != float64(r.Devices) || r.Ports != c+(g+1)/2 || r.DevicesPerPort != l+1 {
		t.Errorf("devices %d up %v ports %d", r.Devices, r.DevicesUp, r.Ports)
	}
	// Load-tolerant bounds: polled at all, at most about once an interval.
	if r.Polls <= 0 || r.MeanInterval < 0.9 || r.PerCycle < float64(r.Devices) || r.PerDevicePoll < 1 || r.PointsPerS <= 0 ||
		r.StoredInterval.N == 0 || r.Completeness <= 0 || r.GatewayCPUPerS <= 0 || r.GatewayRSSMB <= 0 || math.IsNaN(r.LagP99) || !(r.RequestP99 > 0) {
		t.Errorf("implausible figures %+v", r)
	}
}
