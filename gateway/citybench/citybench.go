// Package citybench is the city-scale benchmark of issue 6: it drives a real
// Mosquitto and a real InfluxDB 1.8 with firmware-sim's load generator and
// measures, one system after another on a fresh broker and database each,
// citygw (shipped rules, WAL on), Telegraf configured to do the same ingest
// (configs/bench/telegraf.conf) and the broker's ceiling (a subscriber that
// only counts): points/s from the first publish to the last point visible,
// CPU seconds per million points and peak RSS of every process.
//
// A scenario is a Scenario in the map Scenarios returns; each lives in its
// own file and uses the shared helpers: Bench.StartStack (broker, database,
// system under test), Bench.RunLoad, Bench.Measure and the Report types.
// See README.md.
package citybench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/citygw/citygw/gateway/localproc"
)

// Options are the benchmark's settings, shared by every scenario.
type Options struct {
	Repo     string   // repository root: configs/ and the packages to build
	Work     string   // work directory: binaries, inventories, one directory per run
	Systems  []string // systems to measure, in order: ceiling, citygw, telegraf
	Messages int      // burst: messages in all (0: the scenario's default)
	Assets   int      // assets (0: the scenario's default)
	// Steady plan (steady, outage, memory): each asset once per Interval of
	// simulated time for Duration of simulated time, Speed simulated
	// seconds per wall second (0: the scenario's defaults).
	Interval time.Duration
	Duration time.Duration
	Speed    float64
	// Outage is how long InfluxDB stays stopped in the outage scenario (0:
	// 60 s).
	Outage time.Duration
	// GatewayEnv is added to citygw's environment (KEY=VALUE), say
	// GOMEMLIMIT=250MiB; recorded in the reports' parameters.
	GatewayEnv []string
	Conns      int // publisher connections
	InFlight   int // publisher in-flight window per connection
	// BatchSize and FlushInterval are citygw's InfluxDB batching
	// (configs/gateway.yaml) and Telegraf's.
	BatchSize     int
	FlushInterval time.Duration
	// Timeout bounds the wait for the last point after the publisher
	// finished.
	Timeout time.Duration
	// NoBuild reuses the binaries already in Work/bin instead of running go
	// build (which is quick when nothing changed).
	NoBuild  bool
	Progress io.Writer // a line a second while a system runs
	Log      *slog.Logger
}

// citygw's InfluxDB batching in configs/gateway.yaml, which Telegraf is
// given too (a test checks they agree).
const (
	DefaultBatchSize     = 5000
	DefaultFlushInterval = time.Second
)

// Systems that can be measured.
const (
	SysCeiling  = "ceiling"
	SysCitygw   = "citygw"
	SysTelegraf = "telegraf"
)

// AllSystems returns the default -systems list, in the order they run.
func AllSystems() []string { return []string{SysCeiling, SysCitygw, SysTelegraf} }

// Scenario is one benchmark scenario.
type Scenario interface {
	// Describe says what the scenario does with the options given.
	Describe(o *Options) string
	// Run measures every system of b.Opts.Systems.
	Run(ctx context.Context, b *Bench) (*Report, error)
}

// Scenarios returns the scenarios by name. A new scenario goes in its own
// file and gets a line here.
func Scenarios() map[string]Scenario {
	return map[string]Scenario{
		"burst":     burst{},
		"latency":   latency{},
		"modbus":    modbusScale{},
		"steady":    steady{},
		"outage":    outage{},
		"memory":    memory{},
		"inprocess": inprocess{},
	}
}

// Bench holds what the scenarios share: options and built binaries.
type Bench struct {
	Opts     Options
	Gateway  string // gateway binary
	Sim      string // firmware-sim binary
	Telegraf string // telegraf binary ("" when not measured)
	CityFile string // the city config the bins come from
	RulesDir string // the shipped rules
	// Build is the revision of the repository the binaries were built
	// from (git describe --always --dirty), "" when git cannot tell.
	Build string
	Log   *slog.Logger
}

// New checks the tools, builds the binaries and returns a Bench.
func New(ctx context.Context, o Options) (*Bench, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Conns <= 0 {
		o.Conns = 2
	}
	if o.InFlight <= 0 {
		o.InFlight = 1000
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if len(o.Systems) == 0 {
		o.Systems = AllSystems()
	}
	for _, s := range o.Systems {
		if !slices.Contains(AllSystems(), s) {
			return nil, fmt.Errorf("unknown system %q (want %s)", s, strings.Join(AllSystems(), ", "))
		}
	}
	var err error
	if o.Repo, err = filepath.Abs(o.Repo); err != nil {
		return nil, err
	}
	if o.Work, err = filepath.Abs(o.Work); err != nil {
		return nil, err
	}
	b := &Bench{Opts: o, Log: o.Log,
		CityFile: filepath.Join(o.Repo, "configs", "city-demo.yaml"),
		RulesDir: filepath.Join(o.Repo, "configs", "rules")}
	if _, err := os.Stat(filepath.Join(o.Repo, "go.mod")); err != nil {
		return nil, fmt.Errorf("%s is not the repository root: %w", o.Repo, err)
	}
	if _, err := localproc.RequireTool("mosquitto", localproc.MosquittoInstall); err != nil {
		return nil, err
	}
	if o.has(SysCitygw) || o.has(SysTelegraf) {
		if _, err := localproc.RequireTool("influxd", InfluxDBInstall); err != nil {
			return nil, err
		}
	}
	if o.has(SysTelegraf) {
		if b.Telegraf, err = localproc.RequireTool("telegraf", "CITYGW_TOOLS_BENCH=1 bash scripts/tools.sh (builds telegraf v1.37.2 from its Go module), or leave telegraf out of -systems"); err != nil {
			return nil, err
		}
	}
	if out, err := exec.CommandContext(ctx, "git", "-C", o.Repo, "describe", "--always", "--dirty", "--abbrev=10").Output(); err == nil {
		b.Build = strings.TrimSpace(string(out))
	}
	bin := filepath.Join(o.Work, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	b.Gateway = filepath.Join(bin, "gateway")
	b.Sim = filepath.Join(bin, "firmware-sim")
	for _, p := range []struct{ out, pkg string }{{b.Gateway, "./gateway/cmd/gateway"}, {b.Sim, "./firmware-sim/cmd/firmware-sim"}} {
		if _, err := os.Stat(p.out); err == nil && o.NoBuild {
			continue
		}
		fmt.Fprintf(o.Progress, "citybench: go build -o %s %s\n", p.out, p.pkg)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", p.out, p.pkg)
		cmd.Dir = o.Repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", p.pkg, err, out)
		}
	}
	return b, nil
}

func (o *Options) has(system string) bool { return slices.Contains(o.Systems, system) }

// Report is a scenario's result: the machine, the parameters and each
// system's figures. Its JSON form is the -out file.
type Report struct {
	Scenario string             `json:"scenario"`
	Command  string             `json:"command,omitempty"` // the command line that produced it
	Build    string             `json:"build,omitempty"`   // the revision measured (git describe)
	Date     time.Time          `json:"date"`
	Machine  Machine            `json:"machine"`
	Params   map[string]any     `json:"params"`
	Systems  []*SystemResult    `json:"systems"`
	Ratios   map[string]float64 `json:"ratios"`
	Notes    []string           `json:"notes,omitempty"`
}

// Machine describes where the benchmark ran.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	LoadAvg   string `json:"loadavg_before"` // /proc/loadavg when the scenario started
	LoadAfter string `json:"loadavg_after"`
	Kernel    string `json:"kernel"`
	MemoryMB  int64  `json:"memory_mb"` // MemTotal
	GoVersion string `json:"go"`
}

// SystemResult is one system's run.
type SystemResult struct {
	System       string         `json:"system"`
	Messages     int64          `json:"messages"` // acknowledged by the broker
	Points       int64          `json:"points"`   // visible in InfluxDB (ceiling: messages counted)
	FirstPublish time.Time      `json:"first_publish"`
	LastVisible  time.Time      `json:"last_visible"`
	Seconds      float64        `json:"seconds"`
	PointsPerS   float64        `json:"points_per_s"`
	Publisher    LoadSummary    `json:"publisher"`
	Procs        []ProcResult   `json:"processes"`
	Error        string         `json:"error,omitempty"`
	Extra        map[string]any `json:"extra,omitempty"`
}

// ProcResult is one process's resource use during a run.
type ProcResult struct {
	Role          string  `json:"role"` // system, broker, database, publisher
	Name          string  `json:"name"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	CPUPerMillion float64 `json:"cpu_s_per_million_points"`
	PeakRSSMB     float64 `json:"peak_rss_mb"`
	// Whole says the figures cover the process's whole life (it exited;
	// from rusage) rather than the measured interval (from /proc).
	Whole bool `json:"whole_life,omitempty"`
}

// LoadSummary is the JSON line `firmware-sim load` prints.
type LoadSummary struct {
	Assets       int       `json:"assets"`
	Messages     int64     `json:"messages"`
	Acked        int64     `json:"acked"`
	Failed       int64     `json:"failed"`
	FirstPublish time.Time `json:"first_publish"`
	LastAck      time.Time `json:"last_ack"`
	Duration     float64   `json:"duration"`
	MsgsPerS     float64   `json:"msgs_per_s"`
}

// CounterSummary is the JSON line `firmware-sim load -count` prints.
type CounterSummary struct {
	Messages int64     `json:"messages"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
}

// Proc returns the named role's figures, or nil.
func (r *SystemResult) Proc(role string) *ProcResult {
	for i := range r.Procs {
		if r.Procs[i].Role == role {
			return &r.Procs[i]
		}
	}
	return nil
}

// System returns the named system's result, or nil.
func (r *Report) System(name string) *SystemResult {
	for _, s := range r.Systems {
		if s.System == name {
			return s
		}
	}
	return nil
}

// ComputeRatios fills Ratios: citygw against Telegraf and the ceiling, for
// throughput, the system's CPU per million points and its peak RSS.
func (r *Report) ComputeRatios() {
	r.Ratios = map[string]float64{}
	gw := r.System(SysCitygw)
	if gw == nil || gw.Error != "" {
		return
	}
	if tg := r.System(SysTelegraf); tg != nil && tg.Error == "" {
		if tg.PointsPerS > 0 {
			r.Ratios["citygw/telegraf points_per_s"] = gw.PointsPerS / tg.PointsPerS
		}
		g, t := gw.Proc("system"), tg.Proc("system")
		if g != nil && t != nil && t.CPUPerMillion > 0 {
			r.Ratios["citygw/telegraf cpu_per_million"] = g.CPUPerMillion / t.CPUPerMillion
		}
		if g != nil && t != nil && t.PeakRSSMB > 0 {
			r.Ratios["citygw/telegraf peak_rss"] = g.PeakRSSMB / t.PeakRSSMB
		}
	}
	if c := r.System(SysCeiling); c != nil && c.Error == "" && c.PointsPerS > 0 {
		r.Ratios["citygw/ceiling points_per_s"] = gw.PointsPerS / c.PointsPerS
	}
}

// WriteJSON writes the report, indented, to file.
func (r *Report) WriteJSON(file string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}

// Markdown renders the report as Markdown tables.
func (r *Report) Markdown(w io.Writer) {
	fmt.Fprintf(w, "### %s — %s\n\n", r.Scenario, r.Date.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "%d CPUs (%s), load average before %s, after %s; %s; %s",
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.LoadAvg, r.Machine.LoadAfter, r.Machine.Kernel, r.Machine.GoVersion)
	if r.Build != "" {
		fmt.Fprintf(w, "; revision %s", r.Build)
	}
	fmt.Fprint(w, "\n\n")
	keys := make([]string, 0, len(r.Params))
	for k := range r.Params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var ps []string
	for _, k := range keys {
		ps = append(ps, fmt.Sprintf("%s=%v", k, r.Params[k]))
	}
	fmt.Fprintf(w, "Parameters: %s\n\n", strings.Join(ps, ", "))
	loadRun := false // the scenario ran a load (not only Go benchmarks)
	for _, s := range r.Systems {
		loadRun = loadRun || s.Points > 0 || len(s.Procs) > 0
	}
	if loadRun {
		fmt.Fprintln(w, "| system | points | seconds | points/s | system CPU s | CPU s / M points | peak RSS MB | broker CPU s / M | influxd CPU s / M | publisher CPU s / M |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	}
	for _, s := range r.Systems {
		if !loadRun {
			break
		}
		if s.Error != "" {
			fmt.Fprintf(w, "| %s | %d | FAILED: %s | | | | | | | |\n", s.System, s.Points, strings.ReplaceAll(s.Error, "|", "/"))
			continue
		}
		cell := func(role string, f func(*ProcResult) string) string {
			if p := s.Proc(role); p != nil {
				return f(p)
			}
			return "–"
		}
		perM := func(p *ProcResult) string { return fmt.Sprintf("%.1f", p.CPUPerMillion) }
		fmt.Fprintf(w, "| %s | %d | %.1f | %.0f | %s | %s | %s | %s | %s | %s |\n", s.System, s.Points, s.Seconds, s.PointsPerS,
			cell("system", func(p *ProcResult) string { return fmt.Sprintf("%.1f", p.CPUSeconds) }),
			cell("system", perM),
			cell("system", func(p *ProcResult) string { return fmt.Sprintf("%.0f", p.PeakRSSMB) }),
			cell("broker", perM), cell("database", perM), cell("publisher", perM))
	}
	r.markdownExtra(w)
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w)
		keys := make([]string, 0, len(r.Ratios))
		for k := range r.Ratios {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		fmt.Fprintln(w, "| ratio | value |")
		fmt.Fprintln(w, "| --- | ---: |")
		for _, k := range keys {
			fmt.Fprintf(w, "| %s | %.2f |\n", k, r.Ratios[k])
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\n- %s", n)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w)
	}
}

// machine describes this machine now.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvg: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb int64
				fmt.Sscan(strings.TrimSpace(v), &kb)
				m.MemoryMB = kb / 1024
				break
			}
		}
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// markdownExtra renders the systems' Extra figures (scenario-specific, such
// as lag or backlog) as one table: a row per system that has any, a column
// per key.
func (r *Report) markdownExtra(w io.Writer) {
	var keys []string
	for _, s := range r.Systems {
		for k := range s.Extra {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	if len(keys) == 0 {
		return
	}
	slices.Sort(keys)
	fmt.Fprintf(w, "\n| system | %s |\n", strings.Join(keys, " | "))
	fmt.Fprintf(w, "| --- |%s\n", strings.Repeat(" ---: |", len(keys)))
	for _, s := range r.Systems {
		if len(s.Extra) == 0 {
			continue
		}
		cells := make([]string, len(keys))
		for i, k := range keys {
			switch v := s.Extra[k].(type) {
			case nil:
				cells[i] = "–"
			case []any: // a latency scenario read back from JSON
				if rs := latencyOf(s); k == "latency" && rs != nil {
					cells[i] = rs.String()
				} else {
					cells[i] = strings.ReplaceAll(fmt.Sprint(v), "|", "/")
				}
			case float64:
				cells[i] = fmt.Sprintf("%.1f", v)
			default:
				cells[i] = strings.ReplaceAll(fmt.Sprint(v), "|", "/")
			}
		}
		fmt.Fprintf(w, "| %s | %s |\n", s.System, strings.Join(cells, " | "))
	}
}
