package citybench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/localproc"
)

// latency is the scenario "detection latency: a fault injected in
// firmware-sim to the case on the case desk, p50/p99 over at least 100
// injected faults, for MQTT assets and for Modbus assets". One stack runs
// throughout: Mosquitto, InfluxDB, the reference case desk, `firmware-sim
// run` (bins over MQTT publishing every second, gas stations over Modbus)
// and the gateway with the shipped rules and cases delivered to the desk.
// Faults are injected one MQTT and one Modbus at a time, each on its own
// asset: a bin fire (rule waste_bin.fire, for 0s) and a gas leak (rule
// gas_station.methane_alarm, for 0s), both ramped so steeply that the
// simulator's next tick shows them in full.
type latency struct {
	warmup time.Duration // 0: latencyWarmup (tests shorten it)
}

// Latency defaults.
const (
	latencyFaults      = 120 // per transport class
	latencySpacing     = 500 * time.Millisecond
	latencyMQTTEvery   = time.Second // the bins' publish interval
	latencyPollEvery   = time.Second // the gateway's Modbus poll interval
	latencyDeskPoll    = 50 * time.Millisecond
	latencyWarmup      = 15 * time.Second
	latencyCaseTimeout = 2 * time.Minute
	deskAPIKey         = "citybench-desk-key"
)

// faultClass is one transport class of the latency scenario.
type faultClass struct {
	Transport string         `json:"transport"` // mqtt or modbus
	Kind      string         `json:"kind"`
	Fault     string         `json:"fault"`
	Params    map[string]any `json:"params"`
	Rule      string         `json:"rule"`
	RuleFor   string         `json:"rule_for"`
	Service   string         `json:"service_code"`
	Field     string         `json:"field"`     // the value that shows the fault in the simulator's truth
	Threshold float64        `json:"threshold"` // the fault shows once Field >= Threshold
	Interval  string         `json:"interval"`  // publish (MQTT) or poll (Modbus) interval
}

var latencyClasses = []faultClass{
	{Transport: "mqtt", Kind: "waste_bin", Fault: "bin_fire", Params: map[string]any{"rate_per_min": 1e7},
		Rule: "waste_bin.fire", RuleFor: "0s", Service: "BIN-FIRE", Field: "temperature_c", Threshold: 70.01,
		Interval: latencyMQTTEvery.String()},
	{Transport: "modbus", Kind: "gas_station", Fault: "gas_leak", Params: map[string]any{"rate_per_min": 1e7},
		Rule: "gas_station.methane_alarm", RuleFor: "0s", Service: "GAS-LEAK", Field: "methane_lel_pct", Threshold: 20,
		Interval: latencyPollEvery.String()},
}

// Quantiles are the usual figures of a sample, in seconds.
type Quantiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
	Min float64 `json:"min"`
}

// quantiles returns nearest-rank quantiles of xs (sorted in place).
func quantiles(xs []float64) Quantiles {
	if len(xs) == 0 {
		return Quantiles{}
	}
	slices.Sort(xs)
	rank := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(xs)))) - 1
		return xs[min(max(i, 0), len(xs)-1)]
	}
	return Quantiles{N: len(xs), P50: rank(0.5), P99: rank(0.99), Max: xs[len(xs)-1], Min: xs[0]}
}

// LatencyClass is the latency scenario's result for one transport class.
type LatencyClass struct {
	faultClass
	Injected int `json:"injected"`
	Cases    int `json:"cases"` // faults whose case reached the desk
	// Total: the first 50 ms poll of the desk's request listing that showed
	// the case, minus the moment the control API answered the injection.
	// (The desk stamps requested_datetime to the whole second, too coarse.)
	Total Quantiles `json:"total_s"`
	// Device: the first message (MQTT) or tick (Modbus) in the simulator's
	// ground truth showing the fault, minus the injection: the simulator's
	// tick (up to 1 s) and, for MQTT, the wait for the bin's next publish.
	Device Quantiles `json:"device_s"`
	// Gateway: the case on the desk minus that first faulty message or
	// tick: broker, gateway, rules and case delivery; for Modbus it
	// includes the wait for the next poll (up to one interval).
	Gateway Quantiles `json:"gateway_s"`
}

func (s latency) faults(o *Options) int {
	if o.Messages > 0 {
		return o.Messages
	}
	return latencyFaults
}

func (s latency) Describe(o *Options) string {
	return fmt.Sprintf("latency: %d bin fires (MQTT, published every %v) and %d gas leaks (Modbus, polled every %v), each on its own asset, one of each every %v, to their cases on the reference case desk",
		s.faults(o), latencyMQTTEvery, s.faults(o), latencyPollEvery, latencySpacing)
}

// injection is one injected fault.
type injection struct {
	class *faultClass
	asset string
	at    time.Time // when the control API answered
}

func (s latency) Run(ctx context.Context, b *Bench) (*Report, error) {
	o := &b.Opts
	n := s.faults(o)
	rep := &Report{Scenario: "latency", Date: time.Now().UTC(), Machine: machine(),
		Params: map[string]any{"faults_per_class": n, "mqtt_interval": latencyMQTTEvery.String(), "modbus_interval": latencyPollEvery.String(),
			"spacing": latencySpacing.String(), "desk_poll": latencyDeskPoll.String()}}
	dir := filepath.Join(o.Work, "latency")
	// A few spare assets of each class beyond the faulted ones.
	cs, err := b.startCityStack(ctx, dir, cityStackOptions{
		simArgs: []string{"-cabinets", "0", "-gas", strconv.Itoa(n + 10), "-bins", strconv.Itoa(n + 10),
			"-mqtt-interval", latencyMQTTEvery.String(), "-history", "5m"},
		desk: true, pollInterval: latencyPollEvery})
	if err != nil {
		return nil, err
	}
	defer cs.Stop()
	byKind := map[string][]string{}
	for _, a := range cs.Inv.Assets {
		byKind[a.Kind] = append(byKind[a.Kind], a.ID)
	}
	for _, c := range latencyClasses {
		if len(byKind[c.Kind]) < n {
			return nil, fmt.Errorf("the simulated city has %d %s assets, %d needed", len(byKind[c.Kind]), c.Kind, n)
		}
	}
	warmup := cmp.Or(s.warmup, latencyWarmup)
	fmt.Fprintf(o.Progress, "citybench: latency: letting the gateway see a healthy city for %v\n", warmup)
	if err := sleepCtx(ctx, warmup); err != nil {
		return nil, err
	}
	before, err := cs.deskRequests()
	if err != nil {
		return nil, err
	}
	ignore := map[string]bool{}
	for _, r := range before {
		ignore[r.ID] = true
	}
	if len(ignore) > 0 {
		fmt.Fprintf(o.Progress, "citybench: latency: %d case(s) on the desk before any fault, ignored\n", len(ignore))
	}

	// Watch the desk: the first poll that shows each request.
	w := &deskWatch{seen: map[string]seenCase{}, ignore: ignore}
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.run(wctx, cs) }()
	defer func() { stopWatch(); wg.Wait() }()

	mark0, err := cs.mark()
	if err != nil {
		return nil, err
	}
	t0 := mark0.at
	var injs []injection
	for i := 0; i < n; i++ {
		for ci := range latencyClasses {
			c := &latencyClasses[ci]
			asset := byKind[c.Kind][i]
			if err := cs.inject(c.Fault, asset, c.Params); err != nil {
				return nil, err
			}
			injs = append(injs, injection{class: c, asset: asset, at: time.Now()})
		}
		if (i+1)%10 == 0 {
			fmt.Fprintf(o.Progress, "citybench: latency %5.0fs injected %d/%d per class, cases on the desk %d\n",
				time.Since(t0).Seconds(), i+1, n, w.count())
		}
		if err := sleepCtx(ctx, latencySpacing); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(latencyCaseTimeout)
	for w.count() < len(injs) && time.Now().Before(deadline) {
		fmt.Fprintf(o.Progress, "citybench: latency %5.0fs all injected, cases on the desk %d/%d\n", time.Since(t0).Seconds(), w.count(), len(injs))
		if err := sleepCtx(ctx, time.Second); err != nil {
			return nil, err
		}
	}
	stopWatch()
	wg.Wait()
	mark1, err := cs.mark()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "citybench: latency %5.0fs cases on the desk %d/%d; reading the simulator's ground truth\n", time.Since(t0).Seconds(), w.count(), len(injs))

	var missing []string
	var results latencyResults
	for ci := range latencyClasses {
		c := &latencyClasses[ci]
		lc := &LatencyClass{faultClass: *c}
		var total, dev, gw []float64
		for _, in := range injs {
			if in.class != c {
				continue
			}
			lc.Injected++
			sc, ok := w.get(c.Service, in.asset)
			if !ok {
				missing = append(missing, c.Fault+" "+in.asset)
				continue
			}
			lc.Cases++
			total = append(total, sc.seen.Sub(in.at).Seconds())
			first, err := cs.firstFaulty(in.asset, c.Field, c.Threshold, in.at)
			if err != nil {
				return nil, err
			}
			if !first.IsZero() {
				dev = append(dev, first.Sub(in.at).Seconds())
				gw = append(gw, sc.seen.Sub(first).Seconds())
			}
		}
		lc.Total, lc.Device, lc.Gateway = quantiles(total), quantiles(dev), quantiles(gw)
		results = append(results, lc)
	}

	rep.Systems = []*SystemResult{cs.result(mark0, mark1, map[string]any{"latency": results})}
	rep.Notes = append(rep.Notes, latencyNotes(results)...)
	rep.Notes = append(rep.Notes,
		"One stack: Mosquitto, InfluxDB 1.8.10, the reference case desk (caseclient/cmd/casedesk, Open311), `firmware-sim run` and the gateway (shipped rules, WAL on, cases to the desk; flood caps max_opens_per_rule/per_sink off, since 240 cases in two minutes is the point here, not a flood). Points (accepted by InfluxDB's HTTP API), CPU and RSS in the table cover the injection phase until the last case arrived; \"publisher\" is `firmware-sim run` (all the simulated devices).",
		"total = the first poll of the desk's /_control/requests (every 50 ms, so up to 50 ms plus one listing late) that listed the case, minus the moment the simulator's control API answered the injection. The desk's own requested_datetime is stamped to the whole second, too coarse to use.",
		"device = the first bin message (MQTT, by its ts) or gas-station tick (Modbus, by its device time) in the simulator's ground truth that shows the fault, minus the injection: the simulator applies value faults at its next tick (up to 1 s) and a bin shows it in its next message (up to one publish interval, 1 s). gateway = case on the desk minus that first faulty message/tick: broker, gateway, rule and case delivery, and for Modbus the wait for the next poll (up to one poll interval, 1 s). The simulator ticks on whole wall seconds, so a Modbus tick's time (device_time, a register with 1 s resolution) is the tick's own time.",
		"Both rules have `for: 0s`; subtract a rule's `for` from latencies measured with other rules.",
	)
	rep.Machine.LoadAfter = loadavg()
	if len(missing) > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d fault(s) opened no case within %v of the last injection: %s", len(missing), latencyCaseTimeout, strings.Join(missing, ", ")))
		return rep, fmt.Errorf("%d fault(s) opened no case", len(missing))
	}
	return rep, nil
}

// latencyNotes renders the latency results as report notes (Markdown).
func latencyNotes(rs []*LatencyClass) []string {
	var b strings.Builder
	b.WriteString("Detection latency, seconds (p50 / p99 / max):\n\n")
	b.WriteString("| transport | fault → rule (for) | interval | cases | total | device (sim tick + publish wait) | gateway (+ poll wait for Modbus) | total − rule's for |\n")
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	q := func(x Quantiles) string { return fmt.Sprintf("%.2f / %.2f / %.2f", x.P50, x.P99, x.Max) }
	for _, r := range rs {
		forD, _ := time.ParseDuration(r.RuleFor)
		minus := Quantiles{N: r.Total.N, P50: r.Total.P50 - forD.Seconds(), P99: r.Total.P99 - forD.Seconds(), Max: r.Total.Max - forD.Seconds()}
		fmt.Fprintf(&b, "| %s | %s → %s (%s) | %s | %d/%d | %s | %s | %s | %s |\n", r.Transport, r.Fault, r.Rule, r.RuleFor, r.Interval,
			r.Cases, r.Injected, q(r.Total), q(r.Device), q(r.Gateway), q(minus))
	}
	return []string{b.String()}
}

// seenCase is a case the desk listed.
type seenCase struct {
	seen time.Time // the poll that first listed it
}

// deskWatch polls the desk's request listing and remembers when each case
// first appeared, by service code and asset.
type deskWatch struct {
	mu     sync.Mutex
	seen   map[string]seenCase // service code + " " + asset
	ignore map[string]bool     // request ids there before the faults
}

func (w *deskWatch) run(ctx context.Context, cs *cityStack) {
	t := time.NewTicker(latencyDeskPoll)
	defer t.Stop()
	for {
		rs, err := cs.deskRequests()
		now := time.Now()
		if err == nil {
			w.mu.Lock()
			for _, r := range rs {
				if w.ignore[r.ID] || r.DeviceID == "" {
					continue
				}
				k := r.ServiceCode + " " + r.DeviceID
				if _, ok := w.seen[k]; !ok {
					w.seen[k] = seenCase{seen: now}
				}
			}
			w.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *deskWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen)
}

func (w *deskWatch) get(service, asset string) (seenCase, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.seen[service+" "+asset]
	return s, ok
}

// deskRequest is what the desk lists of one Open311 request.
type deskRequest struct {
	ID          string `json:"service_request_id"`
	ServiceCode string `json:"service_code"`
	DeviceID    string `json:"device_id"`
}

// cityStackOptions shape a cityStack.
type cityStackOptions struct {
	simArgs      []string // firmware-sim run flags besides ports, broker and control
	desk         bool     // start the case desk and give the gateway a cases section
	pollInterval time.Duration
}

// cityStack is a whole simulated city under one gateway: Mosquitto,
// InfluxDB, `firmware-sim run`, optionally the case desk, and the gateway.
type cityStack struct {
	Dir     string
	Broker  *Mosquitto
	DB      *InfluxDB
	Sim     *Process
	Control string // the simulator's control API base URL
	Inv     *devices.Inventory
	Desk    *Process
	DeskURL string
	GW      *Process
	Admin   string
	http    *http.Client
}

// Stop stops the gateway first, then the rest.
func (cs *cityStack) Stop() {
	for _, p := range []*Process{cs.GW, cs.Sim, cs.Desk} {
		if p != nil {
			p.Stop()
		}
	}
	if cs.DB != nil {
		cs.DB.Stop()
	}
	if cs.Broker != nil {
		cs.Broker.Stop()
	}
}

// buildExtra builds a binary the scenarios need beyond New's, into Work/bin.
func (b *Bench) buildExtra(ctx context.Context, name, pkg string) (string, error) {
	out := filepath.Join(b.Opts.Work, "bin", name)
	if _, err := os.Stat(out); err == nil && b.Opts.NoBuild {
		return out, nil
	}
	fmt.Fprintf(b.Opts.Progress, "citybench: go build -o %s %s\n", out, pkg)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = b.Opts.Repo
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, msg)
	}
	return out, nil
}

// waitOutput waits until p's stdout contains s, failing early when p exits.
func waitOutput(ctx context.Context, p *Process, s string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Stdout(), s) {
		if p.Exited() {
			return fmt.Errorf("%s exited before printing %q (log %s)", p.Name, s, p.LogFile)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not print %q within %v (log %s)", p.Name, s, timeout, p.LogFile)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

var controlAddr = regexp.MustCompile(`control http://(\S+),`)

// startCityStack starts everything in dir (emptied first) and waits until
// the gateway is ready.
func (b *Bench) startCityStack(ctx context.Context, dir string, so cityStackOptions) (cs *cityStack, err error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := mkdir(dir); err != nil {
		return nil, err
	}
	cs = &cityStack{Dir: dir, http: &http.Client{Timeout: 30 * time.Second}}
	defer func() {
		if err != nil {
			cs.Stop()
		}
	}()
	p := b.Opts.Progress
	if cs.Broker, err = StartMosquitto(b.Opts.Repo, dir); err != nil {
		return cs, err
	}
	if cs.DB, err = StartInfluxDB(dir); err != nil {
		return cs, err
	}
	if err = cs.DB.CreateDB("citygw"); err != nil {
		return cs, err
	}
	invFile := filepath.Join(dir, "inventory.yaml")
	args := append([]string{"run", "-city", filepath.Join(b.Opts.Repo, "configs", "city-small.yaml"), "-modbus-base-port", "0",
		"-mqtt", cs.Broker.URL(), "-control", "127.0.0.1:0", "-inventory-out", invFile, "-speed", "1", "-start", "now", "-log-level", "warn"}, so.simArgs...)
	cs.Sim = child(&Process{Name: "firmware-sim", Path: b.Sim, Args: args, LogFile: filepath.Join(dir, "firmware-sim.log")})
	fmt.Fprintf(p, "citybench: starting firmware-sim %s\n", strings.Join(so.simArgs, " "))
	if err = cs.Sim.Start(); err != nil {
		return cs, err
	}
	if err = waitOutput(ctx, cs.Sim, "firmware-sim ready", 10*time.Minute); err != nil {
		return cs, err
	}
	m := controlAddr.FindStringSubmatch(cs.Sim.Stdout())
	if m == nil {
		return cs, fmt.Errorf("no control address in firmware-sim's ready line: %q", cs.Sim.Stdout())
	}
	cs.Control = "http://" + m[1]
	fmt.Fprintf(p, "citybench: %s", lastLine2(cs.Sim.Stdout()))
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		return cs, err
	}
	if cs.Inv, err = devices.LoadInventory(invFile, cat); err != nil {
		return cs, fmt.Errorf("loading the simulator's inventory: %w", err)
	}
	casesCfg := ""
	var env []string
	if so.desk {
		deskBin, err := b.buildExtra(ctx, "casedesk", "./caseclient/cmd/casedesk")
		if err != nil {
			return cs, err
		}
		port, err := localproc.FreePort()
		if err != nil {
			return cs, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		codes := filepath.Join(b.Opts.Repo, "configs", "citycodes.yaml")
		cs.Desk = child(&Process{Name: "casedesk", Path: deskBin, LogFile: filepath.Join(dir, "casedesk.log"),
			Args: []string{"-listen", addr, "-dir", filepath.Join(dir, "desk"), "-api-key", deskAPIKey, "-citycodes", codes}})
		if err = cs.Desk.Start(); err != nil {
			return cs, err
		}
		if err = waitOutput(ctx, cs.Desk, "casedesk ready", time.Minute); err != nil {
			return cs, err
		}
		cs.DeskURL = "http://" + addr
		env = append(env, "CITYBENCH_DESK_API_KEY="+deskAPIKey)
		casesCfg = fmt.Sprintf(`cases:
  codes: %q
  max_opens_per_rule: -1
  max_opens_per_sink: -1
  sinks:
    - {name: desk, type: open311, url: %q}
  secrets:
    desk: {api_key: {env: CITYBENCH_DESK_API_KEY}}
`, codes, cs.DeskURL)
	}
	port, err := localproc.FreePort()
	if err != nil {
		return cs, err
	}
	admin := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`gateway: {id: %s, timezone: Asia/Shanghai, data_dir: %q}
inventory: %q
admin: {listen: %q}
log: {level: info, format: text}
influxdb:
  url: %s
  bucket: citygw/autogen
  batch_size: %d
  flush_interval: %s
mqtt:
  broker: %s
  client_id: %s
  subscriptions: [{topic: "city/bins/{asset}/telemetry", qos: 1}]
modbus:
  interval: %s
  timeout: 1s
  offline_after: 2
  backoff_min: 2s
  backoff_max: 10s
timestamps:
  max_clock_skew: 5m
  max_clock_age: 24h
rules:
  files: [%q]
%s`, gatewayID, filepath.Join(dir, "gateway-data"), invFile, admin, cs.DB.URL(), b.Opts.BatchSize, b.Opts.FlushInterval,
		cs.Broker.URL(), citygwClientID, so.pollInterval, filepath.Join(b.RulesDir, "*.yaml"), casesCfg)
	cfgFile := filepath.Join(dir, "gateway.yaml")
	if err = os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return cs, err
	}
	cs.GW = child(&Process{Name: "gateway", Path: b.Gateway, Args: []string{"run", "-config", cfgFile}, Env: append(env, b.Opts.GatewayEnv...),
		LogFile: filepath.Join(dir, "gateway.log")})
	fmt.Fprintf(p, "citybench: starting the gateway (%d assets)\n", cs.Inv.Len())
	if err = cs.GW.Start(); err != nil {
		return cs, err
	}
	cs.Admin = "http://" + admin
	if err = waitReady(ctx, cs.Admin+"/readyz", 10*time.Minute); err != nil {
		return cs, fmt.Errorf("%w (log %s)", err, cs.GW.LogFile)
	}
	return cs, nil
}

func lastLine2(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s + "\n"
}

func (cs *cityStack) getJSON(url string, v any) error {
	resp, err := cs.http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s %s", url, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (cs *cityStack) deskRequests() ([]deskRequest, error) {
	var rs []deskRequest
	err := cs.getJSON(cs.DeskURL+"/_control/requests", &rs)
	return rs, err
}

// inject injects a fault for 30 minutes (longer than any run).
func (cs *cityStack) inject(fault, asset string, params map[string]any) error {
	body, _ := json.Marshal(map[string]any{"fault": fault, "asset": asset, "for": "30m", "params": params})
	resp, err := cs.http.Post(cs.Control+"/faults", "application/json", strings.NewReader(string(body)))
	if err != nil {
		return fmt.Errorf("injecting %s on %s: %w", fault, asset, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("injecting %s on %s: %s %s", fault, asset, resp.Status, msg)
	}
	return nil
}

// firstFaulty returns the time of the first sample in the simulator's
// ground truth for asset, at or after since (less one second, the Modbus
// device time's resolution), whose field is at least threshold; zero when
// none.
func (cs *cityStack) firstFaulty(asset, field string, threshold float64, since time.Time) (time.Time, error) {
	var h struct {
		Samples []struct {
			UnixMs int64          `json:"unix_ms"`
			Values map[string]any `json:"values"`
		} `json:"samples"`
	}
	if err := cs.getJSON(cs.Control+"/truth/history?asset="+asset+"&window=5m", &h); err != nil {
		return time.Time{}, err
	}
	from := since.Add(-time.Second).UnixMilli()
	for _, s := range h.Samples {
		if s.UnixMs < from {
			continue
		}
		if v, ok := s.Values[field].(float64); ok && v >= threshold {
			return time.UnixMilli(s.UnixMs), nil
		}
	}
	return time.Time{}, nil
}

// stackSample is the CPU and RSS of every long-running process at a moment.
type stackSample map[string]CPUSample // role -> sample

var stackRoles = []string{"system", "broker", "database", "publisher", "desk"}

func (cs *cityStack) proc(role string) *Process {
	switch role {
	case "system":
		return cs.GW
	case "broker":
		return cs.Broker.Process
	case "database":
		return cs.DB.Process
	case "publisher":
		return cs.Sim
	case "desk":
		return cs.Desk
	}
	return nil
}

func (cs *cityStack) sample() (stackSample, error) {
	s := stackSample{}
	for _, role := range stackRoles {
		p := cs.proc(role)
		if p == nil {
			continue
		}
		x, err := SampleProc(p.Pid())
		if err != nil {
			return nil, fmt.Errorf("sampling %s: %w", p.Name, err)
		}
		s[role] = x
	}
	return s, nil
}

// stackMark is an edge of a measured window on a cityStack: every
// long-running process's CPU and peak RSS, InfluxDB's write counter, and
// the moment after they were read.
type stackMark struct {
	at      time.Time
	procs   stackSample
	written int64
}

func (cs *cityStack) mark() (stackMark, error) {
	procs, err := cs.sample()
	if err != nil {
		return stackMark{}, err
	}
	written, err := cs.DB.PointsWritten()
	if err != nil {
		return stackMark{}, err
	}
	return stackMark{at: time.Now(), procs: procs, written: written}, nil
}

// result is the gateway's figures over the window from a to b: the points
// InfluxDB accepted in it, their rate, and each process's CPU (per million
// points too) and peak RSS.
func (cs *cityStack) result(a, b stackMark, extra map[string]any) *SystemResult {
	res := &SystemResult{System: SysCitygw, Points: b.written - a.written, FirstPublish: a.at, LastVisible: b.at,
		Seconds: b.at.Sub(a.at).Seconds(), Procs: cs.procResults(a.procs, b.procs), Extra: extra}
	res.PointsPerS = float64(res.Points) / res.Seconds
	for i := range res.Procs {
		if res.Points > 0 {
			res.Procs[i].CPUPerMillion = res.Procs[i].CPUSeconds / float64(res.Points) * 1e6
		}
	}
	return res
}

// procResults turns two samples into the table's process figures (CPU per
// million points is filled in by the caller that knows the points).
func (cs *cityStack) procResults(a, b stackSample) []ProcResult {
	var out []ProcResult
	for _, role := range stackRoles {
		x, ok1 := a[role]
		y, ok2 := b[role]
		if !ok1 || !ok2 {
			continue
		}
		name := cs.proc(role).Name
		if role == "publisher" {
			name = "firmware-sim run"
		}
		out = append(out, ProcResult{Role: role, Name: name, CPUSeconds: y.CPU - x.CPU, PeakRSSMB: float64(y.PeakRSS) / (1 << 20)})
	}
	return out
}

// latencyResults are the latency scenario's figures in SystemResult.Extra;
// String is their cell in the report's Extra table.
type latencyResults []*LatencyClass

// latencyOf returns a system's latency figures, from a run (the results
// themselves) or from a report read back from JSON (maps); nil without.
func latencyOf(s *SystemResult) latencyResults {
	switch v := s.Extra["latency"].(type) {
	case latencyResults:
		return v
	case nil:
		return nil
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil
		}
		var rs latencyResults
		if json.Unmarshal(b, &rs) != nil {
			return nil
		}
		return rs
	}
}

func (rs latencyResults) String() string {
	var parts []string
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%s %d/%d cases, total p50 %.2f s p99 %.2f s max %.2f s", r.Transport, r.Cases, r.Injected, r.Total.P50, r.Total.P99, r.Total.Max))
	}
	return strings.Join(parts, "; ")
}
