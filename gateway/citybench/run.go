package citybench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/citygw/citygw/firmware-sim/loadgen"
	"github.com/citygw/citygw/gateway/localproc"
)

// The identities the systems run under.
const (
	gatewayID       = "gw-bench"
	citygwClientID  = "citybench-citygw"
	telegrafClient  = "citybench-telegraf"
	counterClientID = "citybench-counter"
	binFilter       = "city/bins/+/telemetry"
	measurement     = "waste_bin"
	countField      = "fill_pct"
)

// Inventory is the bench city's inventory for a number of bins, generated
// once per work directory: the YAML the gateway loads (written by
// `firmware-sim inventory`) and the JSON lookup table Telegraf enriches with.
type Inventory struct {
	Assets int
	File   string // inventory YAML
	Lookup string // asset id -> {"district", "grid"} JSON
}

// Inventory returns the inventory of n bins, generating it when missing.
func (b *Bench) Inventory(ctx context.Context, n int) (*Inventory, error) {
	dir := filepath.Join(b.Opts.Work, fmt.Sprintf("inventory-%d", n))
	inv := &Inventory{Assets: n, File: filepath.Join(dir, "inventory.yaml"), Lookup: filepath.Join(dir, "lookup.json")}
	_, err1 := os.Stat(inv.File)
	_, err2 := os.Stat(inv.Lookup)
	if err1 == nil && err2 == nil {
		return inv, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	fmt.Fprintf(b.Opts.Progress, "citybench: generating the inventory of %d bins\n", n)
	p := child(&Process{Name: "firmware-sim inventory", Path: b.Sim, LogFile: filepath.Join(dir, "inventory.log"),
		Args: []string{"inventory", "-city", b.CityFile, "-bins", strconv.Itoa(n), "-cabinets", "0", "-gas", "0", "-o", inv.File}})
	if err := p.Start(); err != nil {
		return nil, err
	}
	if err := p.Wait(30 * time.Minute); err != nil {
		p.Stop()
		return nil, fmt.Errorf("generating the inventory: %w", err)
	}
	// The lookup table comes from the same generator (loadgen.BinsCity is
	// the city `firmware-sim inventory` writes), which is much faster than
	// parsing the YAML back.
	c, err := loadgen.BinsCity(b.CityFile, n, "")
	if err != nil {
		return nil, err
	}
	lut := make(map[string]map[string]string, n)
	for _, bin := range c.Bins {
		a := bin.Asset
		lut[a.ID] = map[string]string{"district": a.District, "grid": a.Grid}
	}
	data, err := json.Marshal(lut)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(inv.Lookup, data, 0o644); err != nil {
		return nil, err
	}
	return inv, nil
}

// Stack is one system's run: a fresh broker, a fresh database (not for the
// ceiling) and the system under test.
type Stack struct {
	System string
	Dir    string
	Broker *Mosquitto
	DB     *InfluxDB // nil for the ceiling
	DBName string
	SUT    *Process
	Admin  string // citygw's admin base URL
}

// Stop stops every process of the stack, the system under test first.
func (s *Stack) Stop() {
	if s.SUT != nil {
		s.SUT.Stop()
	}
	if s.DB != nil {
		s.DB.Stop()
	}
	if s.Broker != nil {
		s.Broker.Stop()
	}
}

// StartStack starts a fresh broker and database in dir (emptied first) and
// the system under test, and waits until it is subscribed. expect is the
// number of messages the ceiling's counter waits for.
func (b *Bench) StartStack(ctx context.Context, system, dir string, inv *Inventory, expect int64) (st *Stack, err error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	st = &Stack{System: system, Dir: dir}
	defer func() {
		if err != nil {
			st.Stop()
		}
	}()
	if st.Broker, err = StartMosquitto(b.Opts.Repo, dir); err != nil {
		return st, err
	}
	clientID := ""
	switch system {
	case SysCeiling:
		clientID = counterClientID
		st.SUT = child(&Process{Name: "counter", Path: b.Sim, LogFile: filepath.Join(dir, "counter.log"),
			Args: []string{"load", "-count", "-messages", strconv.FormatInt(expect, 10), "-mqtt", st.Broker.URL(),
				"-client-id", clientID, "-filter", binFilter}})
	case SysCitygw, SysTelegraf:
		if st.DB, err = StartInfluxDB(dir); err != nil {
			return st, err
		}
		st.DBName = system
		if err = st.DB.CreateDB(st.DBName); err != nil {
			return st, err
		}
		if system == SysCitygw {
			clientID = citygwClientID
			if st.SUT, st.Admin, err = b.citygw(st, inv); err != nil {
				return st, err
			}
		} else {
			clientID = telegrafClient
			st.SUT = b.telegraf(st, inv)
		}
	default:
		return st, fmt.Errorf("unknown system %q", system)
	}
	if err = st.SUT.Start(); err != nil {
		return st, err
	}
	// Startup includes loading the inventory: generous.
	if err = st.Broker.WaitSubscribed(ctx, clientID, binFilter, st.SUT, 10*time.Minute); err != nil {
		return st, err
	}
	if st.Admin != "" {
		if err = waitReady(ctx, st.Admin+"/readyz", 10*time.Minute); err != nil {
			return st, err
		}
	}
	return st, nil
}

// citygw writes the gateway's configuration from configs/bench/gateway.yaml
// and returns its process (not started) and admin URL.
func (b *Bench) citygw(st *Stack, inv *Inventory) (*Process, string, error) {
	port, err := localproc.FreePort()
	if err != nil {
		return nil, "", err
	}
	admin := fmt.Sprintf("127.0.0.1:%d", port)
	file := filepath.Join(st.Dir, "gateway.yaml")
	err = renderTemplate(filepath.Join(b.Opts.Repo, "configs", "bench", "gateway.yaml"), file, map[string]any{
		"GatewayID":     gatewayID,
		"DataDir":       filepath.Join(st.Dir, "gateway-data"),
		"Inventory":     inv.File,
		"Admin":         admin,
		"InfluxURL":     st.DB.URL(),
		"Bucket":        st.DBName + "/autogen",
		"BatchSize":     b.Opts.BatchSize,
		"FlushInterval": b.Opts.FlushInterval.String(),
		"Broker":        st.Broker.URL(),
		"ClientID":      citygwClientID,
		"Rules":         filepath.Join(b.RulesDir, "*.yaml"),
	})
	if err != nil {
		return nil, "", err
	}
	return child(&Process{Name: "gateway", Path: b.Gateway, Args: []string{"run", "-config", file}, Env: b.Opts.GatewayEnv,
		LogFile: filepath.Join(st.Dir, "gateway.log")}), "http://" + admin, nil
}

// telegraf returns the Telegraf process (not started) for configs/bench/telegraf.conf.
func (b *Bench) telegraf(st *Stack, inv *Inventory) *Process {
	return child(&Process{Name: "telegraf", Path: b.Telegraf, LogFile: filepath.Join(st.Dir, "telegraf.log"),
		Args: []string{"--config", filepath.Join(b.Opts.Repo, "configs", "bench", "telegraf.conf")},
		Env: []string{
			"CITYBENCH_BROKER=" + st.Broker.URL(),
			"CITYBENCH_CLIENT_ID=" + telegrafClient,
			"CITYBENCH_INFLUX_URL=" + st.DB.URL(),
			"CITYBENCH_BUCKET=" + st.DBName + "/autogen",
			"CITYBENCH_GATEWAY=" + gatewayID,
			"CITYBENCH_LOOKUP=" + inv.Lookup,
			"CITYBENCH_BATCH_SIZE=" + strconv.Itoa(b.Opts.BatchSize),
			"CITYBENCH_FLUSH=" + b.Opts.FlushInterval.String(),
		}})
}

func waitReady(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: 5 * time.Second}
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v", url, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// LoadArgs are the publisher's arguments besides the broker.
func (b *Bench) LoadArgs(assets int, plan ...string) []string {
	args := []string{"load", "-city", b.CityFile, "-assets", strconv.Itoa(assets),
		"-conns", strconv.Itoa(b.Opts.Conns), "-inflight", strconv.Itoa(b.Opts.InFlight), "-client-id", "citybench-load"}
	return append(args, plan...)
}

var loadProgress = regexp.MustCompile(`^loadgen: \S+ sent (\d+) acked (\d+)`)

// Measure starts the publisher with args against st, follows the points
// until want are visible (or the counter counted them), and returns the
// system's figures. It fails when points are still missing Opts.Timeout
// after the publisher finished.
func (b *Bench) Measure(ctx context.Context, st *Stack, args []string, want int64) (*SystemResult, error) {
	res := &SystemResult{System: st.System}
	type tracked struct {
		role string
		p    *Process
		at   CPUSample
	}
	var long []*tracked
	if st.System != SysCeiling {
		long = append(long, &tracked{role: "system", p: st.SUT})
	}
	long = append(long, &tracked{role: "broker", p: st.Broker.Process})
	if st.DB != nil {
		long = append(long, &tracked{role: "database", p: st.DB.Process})
	}
	for _, t := range long {
		s, err := SampleProc(t.p.Pid())
		if err != nil {
			return res, fmt.Errorf("sampling %s: %w", t.p.Name, err)
		}
		t.at = s
	}
	load := child(&Process{Name: "publisher", Path: b.Sim, Args: append(args, "-mqtt", st.Broker.URL()), LogFile: filepath.Join(st.Dir, "publisher.log")})
	if err := load.Start(); err != nil {
		return res, err
	}
	defer load.Stop()
	start := time.Now()
	var (
		visible     int64
		written     int64
		visibleAt   time.Time
		loadDoneAt  time.Time
		lastPrint   time.Time
		lastVisible int64
		lastPrintV  time.Time
	)
	poll := 250 * time.Millisecond
	for {
		switch {
		case st.System == SysCeiling:
			if st.SUT.Exited() {
				visibleAt = time.Now()
				visible = want
			}
		default:
			// Follow the cheap write counter; count the points only once
			// it says they may all be there.
			if w, err := st.DB.PointsWritten(); err == nil {
				written = w
			}
			if written >= want {
				if n, err := st.DB.Count(st.DBName, measurement, countField); err == nil {
					visible = n
					if n >= want {
						visibleAt = time.Now()
					}
				}
			}
		}
		if loadDoneAt.IsZero() && load.Exited() {
			loadDoneAt = time.Now()
		}
		now := time.Now()
		if now.Sub(lastPrint) >= time.Second || !visibleAt.IsZero() {
			sent, acked := "?", "?"
			if m := loadProgress.FindStringSubmatch(load.LastStderr()); m != nil {
				sent, acked = m[1], m[2]
			}
			if load.Exited() {
				sent, acked = "done", "done"
			}
			shown := max(visible, written)
			if st.System == SysCeiling && visibleAt.IsZero() {
				shown = counterProgress(st.SUT.LastStderr())
			}
			rate := 0.0
			if !lastPrintV.IsZero() {
				rate = float64(shown-lastVisible) / now.Sub(lastPrintV).Seconds()
			}
			fmt.Fprintf(b.Opts.Progress, "citybench: %-8s %5.0fs published %s acked %s points %d/%d (%.0f/s)\n",
				st.System, now.Sub(start).Seconds(), sent, acked, shown, want, rate)
			lastPrint, lastVisible, lastPrintV = now, shown, now
		}
		if !visibleAt.IsZero() {
			break
		}
		if !loadDoneAt.IsZero() && time.Since(loadDoneAt) > b.Opts.Timeout {
			res.Points = visible
			if st.System != SysCeiling {
				// The count, not the write counter, says what is there.
				if n, err := st.DB.Count(st.DBName, measurement, countField); err == nil {
					res.Points = n
				}
			} else {
				res.Points = counterProgress(st.SUT.LastStderr())
			}
			res.Error = fmt.Sprintf("%d of %d points visible %v after the publisher finished (%d missing)", res.Points, want, b.Opts.Timeout, want-res.Points)
			return res, fmt.Errorf("%s: %s", st.System, res.Error)
		}
		if st.SUT.Exited() && st.System != SysCeiling {
			return res, fmt.Errorf("%s exited during the run (log %s)", st.SUT.Name, st.SUT.LogFile)
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(poll):
		}
	}
	// Sample the long-running processes right at visibility, before
	// anything stops.
	for _, t := range long {
		s, err := SampleProc(t.p.Pid())
		if err != nil {
			return res, fmt.Errorf("sampling %s: %w", t.p.Name, err)
		}
		res.Procs = append(res.Procs, ProcResult{Role: t.role, Name: t.p.Name, CPUSeconds: s.CPU - t.at.CPU, PeakRSSMB: float64(s.PeakRSS) / (1 << 20)})
	}
	if err := load.Wait(2 * time.Minute); err != nil {
		return res, fmt.Errorf("publisher: %w", err)
	}
	if err := json.Unmarshal([]byte(lastJSONLine(load.Stdout())), &res.Publisher); err != nil {
		return res, fmt.Errorf("publisher summary %q: %w", load.Stdout(), err)
	}
	res.Messages = res.Publisher.Acked
	res.FirstPublish = res.Publisher.FirstPublish
	res.Points = visible
	res.LastVisible = visibleAt
	if st.System == SysCeiling {
		var cs CounterSummary
		if err := st.SUT.Wait(time.Minute); err != nil {
			return res, err
		}
		if err := json.Unmarshal([]byte(lastJSONLine(st.SUT.Stdout())), &cs); err != nil {
			return res, fmt.Errorf("counter summary %q: %w", st.SUT.Stdout(), err)
		}
		res.Points, res.LastVisible = cs.Messages, cs.Last
		cpu, rss, _ := st.SUT.Usage()
		res.Procs = append([]ProcResult{{Role: "system", Name: "counter", CPUSeconds: cpu, PeakRSSMB: float64(rss) / (1 << 20), Whole: true}}, res.Procs...)
	}
	cpu, rss, _ := load.Usage()
	res.Procs = append(res.Procs, ProcResult{Role: "publisher", Name: "firmware-sim load", CPUSeconds: cpu, PeakRSSMB: float64(rss) / (1 << 20), Whole: true})
	res.Seconds = res.LastVisible.Sub(res.FirstPublish).Seconds()
	if res.Seconds > 0 {
		res.PointsPerS = float64(res.Points) / res.Seconds
	}
	for i := range res.Procs {
		if res.Points > 0 {
			res.Procs[i].CPUPerMillion = res.Procs[i].CPUSeconds / float64(res.Points) * 1e6
		}
	}
	return res, nil
}

var counterLine = regexp.MustCompile(`^counter: \S+ received (\d+)`)

func counterProgress(line string) int64 {
	if m := counterLine.FindStringSubmatch(line); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	return 0
}

func lastJSONLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "{") {
			return lines[i]
		}
	}
	return ""
}
