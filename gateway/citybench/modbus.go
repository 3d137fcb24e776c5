package citybench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// modbusScale is the scenario "at least 2,000 simulated Modbus devices
// polled every second by one gateway, with the requests per poll, achieved
// poll interval (p99) and CPU reported": `firmware-sim run` serves
// streetlight cabinets with their lamps and gas stations over Modbus TCP
// (one port per cabinet, gas stations two per port), the gateway polls them
// every second with the shipped rules loaded, and the run is measured for
// a minute once every device is up.
type modbusScale struct {
	window, warmup time.Duration // 0: modbusWindow, modbusWarmup (tests shorten them)
}

// Modbus scale defaults: 100 cabinets × (1 + 20 lamps) + 60 gas stations.
const (
	modbusCabinets = 100
	modbusLamps    = 20
	modbusGas      = 60
	modbusInterval = time.Second
	modbusWindow   = 60 * time.Second
	modbusWarmup   = 10 * time.Second
)

// modbusCounts returns cabinets, lamps per cabinet and gas stations: the
// defaults, or for -assets N about N devices in the same proportions.
func (modbusScale) counts(o *Options) (cabinets, lamps, gas int) {
	if o.Assets <= 0 {
		return modbusCabinets, modbusLamps, modbusGas
	}
	per := 1 + modbusLamps
	gas = max(o.Assets*modbusGas/(modbusCabinets*per+modbusGas), 1)
	cabinets = max((o.Assets-gas)/per, 1)
	return cabinets, modbusLamps, gas
}

func (s modbusScale) Describe(o *Options) string {
	c, l, g := s.counts(o)
	return fmt.Sprintf("modbus: %d Modbus devices (%d cabinets × %d lamps + the cabinets, %d gas stations) polled every %v by one gateway, measured for %v",
		c*(l+1)+g, c, l, g, modbusInterval, cmp.Or(s.window, modbusWindow))
}

// ModbusScale is the modbus scenario's result.
type ModbusScale struct {
	Devices       int     `json:"devices"`
	Ports         int     `json:"ports"`
	Interval      string  `json:"interval"`
	WindowS       float64 `json:"window_s"`
	DevicesUp     float64 `json:"devices_up"`
	Polls         float64 `json:"polls"`              // device polls in the window
	PollsOK       float64 `json:"polls_ok"`           // of which every request answered
	Requests      float64 `json:"requests"`           // Modbus requests in the window
	RequestErrors float64 `json:"request_errors"`     // requests not answered ok
	PerCycle      float64 `json:"requests_per_cycle"` // sum over devices of citygw_modbus_requests_per_poll
	PerDevicePoll float64 `json:"requests_per_device_poll"`
	PollsPerS     float64 `json:"polls_per_s"`
	// MeanInterval is window × devices / polls: the achieved mean interval.
	MeanInterval float64 `json:"mean_interval_s"`
	// Lag: how late polls started versus their schedule
	// (citygw_modbus_poll_lag_seconds, interpolated in its buckets).
	LagP50 float64 `json:"lag_p50_s"`
	LagP99 float64 `json:"lag_p99_s"`
	// Request round trips (citygw_modbus_request_duration_seconds over all
	// endpoints, interpolated in its buckets). A port's devices are polled
	// one request at a time, as on the serial bus behind a converter.
	RequestP50 float64 `json:"request_p50_s"`
	RequestP99 float64 `json:"request_p99_s"`
	// DevicesPerPort is the most devices behind one port.
	DevicesPerPort int `json:"devices_per_port"`
	// Interval between consecutive stored points of each device, from
	// InfluxDB (timestamps are the devices' clocks, 1 s resolution).
	StoredInterval Quantiles `json:"stored_interval_s"`
	// Completeness: points stored in the window / (devices × window / interval).
	Completeness   float64 `json:"completeness"`
	PointsPerS     float64 `json:"points_per_s"`
	GatewayCPUPerS float64 `json:"gateway_cpu_s_per_s"`
	GatewayCPUPerM float64 `json:"gateway_cpu_s_per_million_points"`
	GatewayRSSMB   float64 `json:"gateway_rss_mb"`
	GatewayPeakMB  float64 `json:"gateway_peak_rss_mb"`
	SimCPUPerS     float64 `json:"sim_cpu_s_per_s"`
	SimRSSMB       float64 `json:"sim_rss_mb"`
}

func (s modbusScale) Run(ctx context.Context, b *Bench) (*Report, error) {
	o := &b.Opts
	cab, lamps, gas := s.counts(o)
	devs := cab*(lamps+1) + gas
	window, warmup := cmp.Or(s.window, modbusWindow), cmp.Or(s.warmup, modbusWarmup)
	rep := &Report{Scenario: "modbus", Date: time.Now().UTC(), Machine: machine(),
		Params: map[string]any{"devices": devs, "cabinets": cab, "lamps_per_cabinet": lamps, "gas_stations": gas,
			"interval": modbusInterval.String(), "window": window.String(), "batch_size": o.BatchSize, "flush_interval": o.FlushInterval.String()}}
	dir := filepath.Join(o.Work, "modbus")
	cs, err := b.startCityStack(ctx, dir, cityStackOptions{
		simArgs: []string{"-cabinets", strconv.Itoa(cab), "-lamps", strconv.Itoa(lamps), "-gas", strconv.Itoa(gas), "-bins", "0",
			"-history", "0s"},
		pollInterval: modbusInterval})
	if err != nil {
		return nil, err
	}
	defer cs.Stop()
	t0 := time.Now()
	// Every device up, then a warm-up.
	for {
		m, err := cs.metrics()
		if err != nil {
			return nil, err
		}
		up, n := m.sum("citygw_modbus_devices_up"), m.sum("citygw_modbus_devices")
		fmt.Fprintf(o.Progress, "citybench: modbus %5.0fs devices up %.0f/%.0f (of %d simulated)\n", time.Since(t0).Seconds(), up, n, devs)
		if n == float64(devs) && up == n {
			break
		}
		if time.Since(t0) > 5*time.Minute {
			return nil, fmt.Errorf("only %.0f of %d Modbus devices up after 5 minutes (log %s)", up, devs, cs.GW.LogFile)
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(o.Progress, "citybench: modbus: all %d devices up; warming up for %v\n", devs, warmup)
	if err := sleepCtx(ctx, warmup); err != nil {
		return nil, err
	}
	m0, err := cs.metrics()
	if err != nil {
		return nil, err
	}
	mark0, err := cs.mark()
	if err != nil {
		return nil, err
	}
	start, pw0 := mark0.at, mark0.written
	for time.Since(start) < window {
		if err := sleepCtx(ctx, 5*time.Second); err != nil {
			return nil, err
		}
		m, err := cs.metrics()
		if err != nil {
			return nil, err
		}
		pw, _ := cs.DB.PointsWritten()
		el := time.Since(start).Seconds()
		fmt.Fprintf(o.Progress, "citybench: modbus %5.0fs devices up %.0f, polls/s %.0f, requests/s %.0f, points/s into InfluxDB %.0f\n",
			el, m.sum("citygw_modbus_devices_up"), (m.sum("citygw_modbus_polls_total")-m0.sum("citygw_modbus_polls_total"))/el,
			(m.sum("citygw_modbus_requests_total")-m0.sum("citygw_modbus_requests_total"))/el, float64(pw-pw0)/el)
		if cs.GW.Exited() {
			return nil, fmt.Errorf("the gateway exited (log %s)", cs.GW.LogFile)
		}
	}
	m1, err := cs.metrics()
	if err != nil {
		return nil, err
	}
	mark1, err := cs.mark()
	if err != nil {
		return nil, err
	}
	end, s0, s1 := mark1.at, mark0.procs, mark1.procs
	win := end.Sub(start).Seconds()
	r := &ModbusScale{Devices: devs, Interval: modbusInterval.String(), WindowS: win,
		DevicesUp:     m1.sum("citygw_modbus_devices_up"),
		Polls:         m1.sum("citygw_modbus_polls_total") - m0.sum("citygw_modbus_polls_total"),
		PollsOK:       m1.sum("citygw_modbus_polls_total", `result="ok"`) - m0.sum("citygw_modbus_polls_total", `result="ok"`),
		Requests:      m1.sum("citygw_modbus_requests_total") - m0.sum("citygw_modbus_requests_total"),
		RequestErrors: (m1.sum("citygw_modbus_requests_total") - m1.sum("citygw_modbus_requests_total", `result="ok"`)) - (m0.sum("citygw_modbus_requests_total") - m0.sum("citygw_modbus_requests_total", `result="ok"`)),
		PerCycle:      m1.sum("citygw_modbus_requests_per_poll"),
	}
	ports := map[string]int{}
	for _, a := range cs.Inv.Assets {
		if a.Modbus != nil {
			ports[a.Modbus.Host]++
			r.DevicesPerPort = max(r.DevicesPerPort, ports[a.Modbus.Host])
		}
	}
	r.Ports = len(ports)
	if r.Polls > 0 {
		r.PerDevicePoll = r.Requests / r.Polls
		r.PollsPerS = r.Polls / win
		r.MeanInterval = win * float64(devs) / r.Polls
	}
	lag := m1.histogram("citygw_modbus_poll_lag_seconds").minus(m0.histogram("citygw_modbus_poll_lag_seconds"))
	r.LagP50, r.LagP99 = lag.quantile(0.5), lag.quantile(0.99)
	rd := m1.histogram("citygw_modbus_request_duration_seconds").minus(m0.histogram("citygw_modbus_request_duration_seconds"))
	r.RequestP50, r.RequestP99 = rd.quantile(0.5), rd.quantile(0.99)
	points := float64(mark1.written - mark0.written)
	r.PointsPerS = points / win
	gw0, gw1 := s0["system"], s1["system"]
	r.GatewayCPUPerS = (gw1.CPU - gw0.CPU) / win
	if points > 0 {
		r.GatewayCPUPerM = (gw1.CPU - gw0.CPU) / points * 1e6
	}
	r.GatewayPeakMB = float64(gw1.PeakRSS) / (1 << 20)
	r.GatewayRSSMB = float64(currentRSS(cs.GW.Pid())) / (1 << 20)
	r.SimCPUPerS = (s1["publisher"].CPU - s0["publisher"].CPU) / win
	r.SimRSSMB = float64(currentRSS(cs.Sim.Pid())) / (1 << 20)
	fmt.Fprintf(o.Progress, "citybench: modbus: reading the stored points' intervals from InfluxDB\n")
	gaps, stored, err := cs.storedIntervals(start, end)
	if err != nil {
		return nil, err
	}
	r.StoredInterval = quantiles(gaps)
	r.Completeness = float64(stored) / (float64(devs) * win / modbusInterval.Seconds())

	res := cs.result(mark0, mark1, map[string]any{"modbus": r})
	rep.Systems = []*SystemResult{res}
	rep.Notes = append(rep.Notes, modbusNotes(r),
		"One stack: Mosquitto (unused but for the gateway's subscription), InfluxDB 1.8.10, `firmware-sim run` serving every device over Modbus TCP (\"publisher\" in the table), and the gateway (shipped rules, WAL on, no case sink). Figures cover the measured window, after every device was up and a warm-up; points = points InfluxDB's HTTP API accepted in the window.",
		"achieved interval: the gateway keeps each device on its interval grid (the next poll is due one interval after the last was due) and skips a slot it has missed entirely, so an achieved interval is the interval plus the difference of two polls' lag, or whole intervals more when slots were skipped; mean = window × devices / polls. stored interval: consecutive points of each device in InfluxDB, whose timestamps are the devices' own clocks (1 s register resolution), so it shows skipped slots, not sub-second jitter; completeness = points stored / (devices × window / interval): two polls of a device that read the same device second carry the same timestamp and InfluxDB keeps one, so completeness can fall short while polls/s equals the devices. A port's devices are polled one request at a time (the serial bus behind a converter), so a port's requests per second × round trip bounds its cycle.",
	)
	rep.Machine.LoadAfter = loadavg()
	return rep, nil
}

func modbusNotes(r *ModbusScale) string {
	var b strings.Builder
	b.WriteString("Modbus scale:\n\n")
	b.WriteString("| devices | ports (most devices on one) | interval | requests per cycle | requests per device poll | polls/s | polls ok | request errors | request p50 / p99 ms | mean interval s | poll lag p50 / p99 s | stored interval p50 / p99 / max s | completeness | points/s | gateway CPU s/s | gateway CPU s / M points | gateway RSS / peak MB | firmware-sim CPU s/s | firmware-sim RSS MB |\n")
	b.WriteString("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	okPct := 0.0
	if r.Polls > 0 {
		okPct = 100 * r.PollsOK / r.Polls
	}
	fmt.Fprintf(&b, "| %d | %d (%d) | %s | %.0f | %.2f | %.0f | %.2f %% | %.0f | %.1f / %.1f | %.3f | %.3f / %.3f | %.0f / %.0f / %.0f | %.3f | %.0f | %.3f | %.1f | %.0f / %.0f | %.3f | %.0f |\n",
		r.Devices, r.Ports, r.DevicesPerPort, r.Interval, r.PerCycle, r.PerDevicePoll, r.PollsPerS, okPct, r.RequestErrors, 1000*r.RequestP50, 1000*r.RequestP99, r.MeanInterval, r.LagP50, r.LagP99,
		r.StoredInterval.P50, r.StoredInterval.P99, r.StoredInterval.Max, r.Completeness, r.PointsPerS,
		r.GatewayCPUPerS, r.GatewayCPUPerM, r.GatewayRSSMB, r.GatewayPeakMB, r.SimCPUPerS, r.SimRSSMB)
	return b.String()
}

// storedIntervals returns the intervals between consecutive points of each
// Modbus device stored in [from, to], and the number of points.
func (cs *cityStack) storedIntervals(from, to time.Time) ([]float64, int, error) {
	var gaps []float64
	n := 0
	for _, mf := range []struct{ m, f string }{{"streetlight", "voltage_v"}, {"cabinet", "va_v"}, {"gas_station", "outlet_pressure_kpa"}} {
		q := fmt.Sprintf("SELECT %s FROM %s WHERE time >= %d AND time <= %d GROUP BY \"asset\"",
			quoteIdent(mf.f), quoteIdent(mf.m), from.UnixNano(), to.UnixNano())
		series, err := cs.DB.Query("citygw", q)
		if err != nil {
			return nil, 0, err
		}
		for _, s := range series {
			var prev int64
			for i, row := range s.Values {
				if len(row) == 0 {
					continue
				}
				num, ok := row[0].(json.Number)
				if !ok {
					continue
				}
				t, err := num.Int64()
				if err != nil {
					return nil, 0, err
				}
				n++
				if i > 0 {
					gaps = append(gaps, float64(t-prev)/1e9)
				}
				prev = t
			}
		}
	}
	return gaps, n, nil
}

// currentRSS returns VmRSS of pid in bytes (0 when unreadable).
func currentRSS(pid int) int64 {
	rss, _ := procStatus(pid, "VmRSS")
	return rss
}

// promText is a scrape of the gateway's /metrics.
type promText []promSample

type promSample struct {
	name, labels string
	value        float64
}

var promLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)`)

func parseProm(r io.Reader) (promText, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var out promText
	for _, line := range strings.Split(string(b), "\n") {
		m := promLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		out = append(out, promSample{name: m[1], labels: m[2], value: v})
	}
	return out, nil
}

// sum adds the samples of name whose labels contain every label given.
func (p promText) sum(name string, labels ...string) float64 {
	total := 0.0
next:
	for _, s := range p {
		if s.name != name {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(s.labels, l) {
				continue next
			}
		}
		total += s.value
	}
	return total
}

// histogram returns the cumulative buckets of a histogram, summed over its
// labels besides le.
func (p promText) histogram(name string) hist {
	sums := map[float64]float64{}
	le := regexp.MustCompile(`le="([^"]+)"`)
	for _, s := range p {
		if s.name != name+"_bucket" {
			continue
		}
		m := le.FindStringSubmatch(s.labels)
		if m == nil {
			continue
		}
		ub, err := strconv.ParseFloat(m[1], 64) // "+Inf" parses
		if err != nil {
			continue
		}
		sums[ub] += s.value
	}
	h := make(hist, 0, len(sums))
	for le, c := range sums {
		h = append(h, bucket{le: le, count: c})
	}
	slices.SortFunc(h, func(a, b bucket) int {
		switch {
		case a.le < b.le:
			return -1
		case a.le > b.le:
			return 1
		}
		return 0
	})
	return h
}

type bucket struct{ le, count float64 }

// hist is a cumulative histogram, sorted by upper bound.
type hist []bucket

// minus returns h - o bucket by bucket (o an earlier scrape of the same
// histogram).
func (h hist) minus(o hist) hist {
	out := slices.Clone(h)
	for i := range out {
		for _, b := range o {
			if b.le == out[i].le {
				out[i].count -= b.count
			}
		}
	}
	return out
}

// quantile interpolates linearly within the bucket holding q, as
// Prometheus's histogram_quantile does; the +Inf bucket answers the
// largest finite bound.
func (h hist) quantile(q float64) float64 {
	if len(h) == 0 || h[len(h)-1].count <= 0 {
		return math.NaN()
	}
	rank := q * h[len(h)-1].count
	lower, below := 0.0, 0.0
	for _, b := range h {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return lower
			}
			if b.count == below {
				return b.le
			}
			return lower + (b.le-lower)*(rank-below)/(b.count-below)
		}
		lower, below = b.le, b.count
	}
	return lower
}

func (cs *cityStack) metrics() (promText, error) {
	resp, err := cs.http.Get(cs.Admin + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scraping the gateway: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("scraping the gateway: %s", resp.Status)
	}
	return parseProm(resp.Body)
}

// String is the figures' cell in the report's Extra table.
func (r *ModbusScale) String() string {
	return fmt.Sprintf("%d devices, %.0f requests per cycle, mean interval %.3f s, lag p99 %.3f s, gateway %.3f CPU s/s", r.Devices, r.PerCycle, r.MeanInterval, r.LagP99, r.GatewayCPUPerS)
}
