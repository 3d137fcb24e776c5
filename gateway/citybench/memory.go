package citybench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// memory is the scenario "RSS with 126,000 assets tracked and the shipped
// rules' windows full": citygw alone under the steady plan, run in
// simulated time until the longest window the shipped waste-bin rules use
// and the status page's display history (display_samples readings per
// field, default 8) are full, then its VmRSS and VmHWM, Go's heap in use
// (go_memstats_heap_inuse_bytes) and a heap profile (pprof) from the admin
// listener, whose top entries go into the report. Other systems are
// skipped: the goal (under 300 MB) is citygw's.
type memory struct{}

// Memory defaults: the display history is the longest thing to fill at one
// reading a minute.
const (
	memorySpeed          = 10
	memoryDisplaySamples = 8 // rules.display_samples default; configs/bench/gateway.yaml sets none
	memoryKind           = "waste_bin"
)

// fill returns the simulated duration that fills the windows at interval,
// and what decided it.
func (memory) fill(rulesDir string, interval time.Duration) (time.Duration, string, error) {
	w, where, err := longestWindow(rulesDir, memoryKind)
	if err != nil {
		return 0, "", err
	}
	disp := memoryDisplaySamples * interval
	d := max(w, disp) + 2*interval
	why := fmt.Sprintf("longest %s rule window %v (%s); display history %d readings × %v = %v; plus two intervals: %v",
		memoryKind, w, where, memoryDisplaySamples, interval, disp, d)
	return d, why, nil
}

func (s memory) Describe(o *Options) string {
	p := plan(o, 0, memorySpeed)
	if p.Duration <= 0 {
		d, why, err := s.fill(filepath.Join(o.Repo, "configs", "rules"), p.Interval)
		if err != nil {
			return "memory: " + err.Error()
		}
		p.Duration = d
		return fmt.Sprintf("memory: citygw under %s (%s)", p, why)
	}
	return fmt.Sprintf("memory: citygw under %s", p)
}

func (s memory) Run(ctx context.Context, b *Bench) (*Report, error) {
	o := &b.Opts
	p := plan(o, 0, memorySpeed)
	why := "set by -duration"
	if p.Duration <= 0 {
		d, w, err := s.fill(b.RulesDir, p.Interval)
		if err != nil {
			return nil, err
		}
		p.Duration, why = d, w
	}
	params := p.params(o)
	params["windows_full"] = why
	rep := &Report{Scenario: "memory", Date: time.Now().UTC(), Machine: machine(), Params: params,
		Notes: []string{
			"citygw alone (shipped rules, WAL on) on a fresh Mosquitto and InfluxDB, under the steady plan for long enough in simulated time that every asset's rule windows and display history are full (windows_full); the figures are read after every point is visible, with the gateway still running.",
			"rss_mb and hwm_mb: VmRSS and VmHWM from /proc/PID/status (VmHWM includes start-up: loading the inventory); heap_inuse_mb: go_memstats_heap_inuse_bytes from /metrics; heap profile: /debug/pprof/heap on the admin listener (inuse_space, top entries flat).",
			primeNote,
		}}
	inv, err := b.Inventory(ctx, p.Assets)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(o.Work, "memory-"+SysCitygw)
	res, runErr := b.runSteady(ctx, "memory", SysCitygw, inv, p, func(st *Stack, res *SystemResult) error {
		return b.inspectMemory(ctx, st, res, dir)
	})
	rep.Systems = append(rep.Systems, res)
	if top, ok := res.Extra["heap_top"].(string); ok {
		rep.Notes = append(rep.Notes, "Heap profile top entries (go tool pprof -top -sample_index=inuse_space):\n\n```\n"+top+"```")
		delete(res.Extra, "heap_top")
	}
	rep.Machine.LoadAfter = loadavg()
	if runErr != nil {
		return rep, runErr
	}
	return rep, nil
}

// inspectMemory reads the gateway's memory figures and takes a heap
// profile into dir.
func (b *Bench) inspectMemory(ctx context.Context, st *Stack, res *SystemResult, dir string) error {
	rss, hwm, err := procMemory(st.SUT.Pid())
	if err != nil {
		return fmt.Errorf("reading the gateway's memory: %w", err)
	}
	res.Extra["rss_mb"] = round1(mb(rss))
	res.Extra["hwm_mb"] = round1(mb(hwm))
	if v, err := scrapeGauge(st.Admin+"/metrics", "go_memstats_heap_inuse_bytes"); err == nil {
		res.Extra["heap_inuse_mb"] = round1(v / (1 << 20))
	} else {
		return fmt.Errorf("scraping go_memstats_heap_inuse_bytes: %w", err)
	}
	if v, err := scrapeGauge(st.Admin+"/metrics", "go_memstats_sys_bytes"); err == nil {
		res.Extra["go_sys_mb"] = round1(v / (1 << 20))
	}
	prof := filepath.Join(dir, "heap.pb.gz")
	if err := fetch(ctx, st.Admin+"/debug/pprof/heap", prof); err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	res.Extra["heap_profile"] = prof
	top, err := b.pprofTop(ctx, b.Gateway, prof, "inuse_space", filepath.Join(dir, "heap-top.txt"))
	if err != nil {
		return err
	}
	res.Extra["heap_top"] = top
	return nil
}

// pprofTop renders a profile's top entries (flat) with go tool pprof
// (binary: the profiled executable for its symbols, or "" to use the
// names the profile carries), writes pprof's whole output to file, and
// returns the summary lines and the table without pprof's file header.
func (b *Bench) pprofTop(ctx context.Context, binary, prof, sampleIndex, file string) (string, error) {
	args := []string{"tool", "pprof", "-top", "-nodecount=12"}
	if sampleIndex != "" {
		args = append(args, "-sample_index="+sampleIndex)
	}
	if binary != "" {
		args = append(args, binary)
	}
	out, err := exec.CommandContext(ctx, "go", append(args, prof)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w\n%s", err, out)
	}
	if err := os.WriteFile(file, out, 0o644); err != nil {
		return "", err
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") || l == "" {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n") + "\n", nil
}

func fetch(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// procMemory returns VmRSS and VmHWM of a process in bytes.
func procMemory(pid int) (rss, hwm int64, err error) {
	if rss, err = procStatus(pid, "VmRSS"); err != nil {
		return 0, 0, err
	}
	if hwm, err = procStatus(pid, "VmHWM"); err != nil {
		return 0, 0, err
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status: no VmRSS or VmHWM", pid)
	}
	return rss, hwm, nil
}

// windowArg matches a window function's duration argument in a rule
// condition, as in delta(temperature_c, "10m").
var windowArg = regexp.MustCompile(`\b[a-z_]+\(\s*[a-z_][a-z0-9_]*\s*,\s*"([0-9][0-9.]*(?:ns|us|µs|ms|s|m|h))"\s*\)`)

// longestWindow returns the longest window a window function takes in the
// rule files of dir whose rules are of kind (one kind per file, as
// configs/rules has them), and the file and condition text it is in.
func longestWindow(dir, kind string) (time.Duration, string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return 0, "", err
	}
	var (
		longest time.Duration
		where   string
	)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, "", err
		}
		if !regexp.MustCompile(`(?m)^\s*kind:\s*` + regexp.QuoteMeta(kind) + `\s*$`).Match(b) {
			continue
		}
		for _, m := range windowArg.FindAllSubmatch(b, -1) {
			d, err := time.ParseDuration(string(m[1]))
			if err != nil {
				return 0, "", fmt.Errorf("%s: window %q: %w", f, m[1], err)
			}
			if d > longest {
				longest, where = d, fmt.Sprintf("%s: %s", filepath.Base(f), m[0])
			}
		}
	}
	if longest == 0 {
		return 0, "no window functions", nil
	}
	return longest, where, nil
}
