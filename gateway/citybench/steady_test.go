package citybench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/gateway/localproc"
)

func TestSteadyPlan(t *testing.T) {
	for _, tc := range []struct {
		name    string
		o       Options
		want    steadyPlan
		points  int64
		wall    time.Duration
		offered float64
	}{
		{"defaults", Options{}, steadyPlan{126000, time.Minute, 10 * time.Minute, 10}, 1260000, time.Minute, 21000},
		{"overrides", Options{Assets: 1000, Interval: 5 * time.Second, Duration: 2 * time.Minute, Speed: 4},
			steadyPlan{1000, 5 * time.Second, 2 * time.Minute, 4}, 24000, 30 * time.Second, 800},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := plan(&tc.o, steadyDuration, steadySpeed)
			if p != tc.want {
				t.Fatalf("plan = %+v, want %+v", p, tc.want)
			}
			if p.Points() != tc.points || p.Wall() != tc.wall || p.Offered() != tc.offered {
				t.Errorf("points %d wall %v offered %v, want %d %v %v", p.Points(), p.Wall(), p.Offered(), tc.points, tc.wall, tc.offered)
			}
			b := &Bench{Opts: Options{Conns: 2, InFlight: 1000}, CityFile: "city.yaml"}
			args := strings.Join(p.Args(b), " ")
			for _, w := range []string{"-assets " + fmt.Sprint(tc.want.Assets), "-interval " + tc.want.Interval.String(),
				"-duration " + tc.want.Duration.String(), "-speed " + fmt.Sprint(tc.want.Speed)} {
				if !strings.Contains(args, w) {
					t.Errorf("publisher args %q lack %q", args, w)
				}
			}
		})
	}
}

// The memory scenario fills the longest window of the shipped waste-bin
// rules; the shipped rules have delta(temperature_c, "10m").
func TestLongestWindow(t *testing.T) {
	d, where, err := longestWindow(filepath.Join(repoRoot(t), "configs", "rules"), "waste_bin")
	if err != nil {
		t.Fatal(err)
	}
	if d != 10*time.Minute || !strings.Contains(where, "waste_bin.yaml") {
		t.Errorf("longest waste_bin window %v (%s), want 10m in waste_bin.yaml", d, where)
	}
	dir := t.TempDir()
	for name, body := range map[string]string{
		"a.yaml": "rules:\n  - id: a\n    kind: waste_bin\n    when: avg(fill_pct, \"90m\") > 1 && delta(tilt_deg, \"2h\") > 0\n",
		"b.yaml": "rules:\n  - id: b\n    kind: streetlight\n    when: avg(current_a, \"24h\") > 1\n",
		"c.yaml": "rules:\n  - id: c\n    kind: waste_bin\n    when: fill_pct > 1\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d, where, err = longestWindow(dir, "waste_bin")
	if err != nil {
		t.Fatal(err)
	}
	if d != 2*time.Hour || !strings.Contains(where, "a.yaml") {
		t.Errorf("longest window %v (%s), want 2h in a.yaml (the streetlight's 24h is another kind)", d, where)
	}
	fill, why, err := memory{}.fill(dir, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if fill != 2*time.Hour+2*time.Minute || why == "" {
		t.Errorf("fill = %v (%s), want 2h2m", fill, why)
	}
}

func TestProcMemory(t *testing.T) {
	rss, hwm, err := procMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss <= 0 || hwm < rss {
		t.Errorf("VmRSS %d VmHWM %d: want 0 < RSS <= HWM", rss, hwm)
	}
	if _, _, err := procMemory(-1); err == nil {
		t.Error("no error for a process that does not exist")
	}
}

func TestScrapeGauge(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# HELP citygw_wal_backlog_points x\n# TYPE citygw_wal_backlog_points gauge\n"+
			"citygw_wal_backlog_points_total 7\ncitygw_wal_backlog_points 12345\ngo_memstats_heap_inuse_bytes 1.048576e+08\n")
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name string
		want float64
		ok   bool
	}{
		{"citygw_wal_backlog_points", 12345, true},
		{"go_memstats_heap_inuse_bytes", 104857600, true},
		{"citygw_missing", 0, false},
	} {
		v, err := scrapeGauge(srv.URL, tc.name)
		if (err == nil) != tc.ok || v != tc.want {
			t.Errorf("%s = %v, %v; want %v (ok %v)", tc.name, v, err, tc.want, tc.ok)
		}
	}
}

func TestWriteBenchmarks(t *testing.T) {
	burst := &Report{Scenario: "burst", Command: "go run ./gateway/cmd/citybench -scenario burst", Date: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC),
		Machine: Machine{CPUs: 2, CPUModel: "Test CPU", MemoryMB: 4096, LoadAvg: "0.1 0.2 0.3", LoadAfter: "1.0 1.0 1.0", Kernel: "Linux x", GoVersion: "go1.26"},
		Systems: []*SystemResult{
			{System: SysCeiling, Points: 100, Seconds: 1, PointsPerS: 100},
			{System: SysCitygw, Points: 100, Seconds: 1, PointsPerS: 95, Procs: []ProcResult{{Role: "system", CPUPerMillion: 2, PeakRSSMB: 50}}},
			{System: SysTelegraf, Points: 100, Seconds: 2, PointsPerS: 50, Procs: []ProcResult{{Role: "system", CPUPerMillion: 5, PeakRSSMB: 300}}},
		}}
	burst.ComputeRatios()
	mem := &Report{Scenario: "memory", Params: map[string]any{"assets": 126000, "windows_full": "10m"},
		Systems: []*SystemResult{{System: SysCitygw, Points: 10, Extra: map[string]any{"rss_mb": 250.0, "hwm_mb": 320.0, "heap_inuse_mb": 100.0}}}}
	memLimited := &Report{Scenario: "memory", Params: map[string]any{"assets": 126000, "gateway_env": "GOMEMLIMIT=260MiB"},
		Systems: []*SystemResult{{System: SysCitygw, Points: 10, Extra: map[string]any{"rss_mb": 270.0, "hwm_mb": 330.0, "heap_inuse_mb": 90.0},
			Procs: []ProcResult{{Role: "system", CPUPerMillion: 30}}}}}
	var b strings.Builder
	WriteBenchmarks(&b, []*Report{memLimited, mem, burst}, nil, "go run ./gateway/cmd/citybench -reports x -markdown BENCHMARKS.md")
	out := b.String()
	if !strings.HasPrefix(out, BenchmarksMarker+"\n") {
		t.Errorf("no marker first:\n%.200s", out)
	}
	for _, want := range []string{
		"- CPUs (nproc): 2, Test CPU", "- memory: 4096 MB",
		"go run ./gateway/cmd/citybench -scenario burst",
		"| end-to-end points/s ≥ 90% of the broker ceiling (burst) | citygw/ceiling points_per_s = 0.95 | yes |",
		"| end-to-end points/s ≥ 1.5× Telegraf's (burst) | citygw/telegraf points_per_s = 1.90 | yes |",
		"| gateway CPU s per M points ≤ 1/5 of Telegraf's (burst) | citygw/telegraf cpu_per_million = 0.40 | **no** |",
		"| gateway peak RSS ≤ 1/3 of Telegraf's (burst) | citygw/telegraf peak_rss = 0.17 | yes |",
		"VmRSS 250 MB, VmHWM 320 MB", "yes (VmRSS); peak VmHWM **no**",
		"another run (GOMEMLIMIT=260MiB): VmRSS 270 MB, VmHWM 330 MB, gateway CPU 30.0 s / M points",
		"### steady\n\nNot run in this report.", "### outage\n\nNot run in this report.",
		"outage not run in this report",
		"## How to regenerate",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("BENCHMARKS.md lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "### burst") > strings.Index(out, "### memory") {
		t.Error("sections not in scenario order (burst before memory)")
	}
}

func TestWriteBenchmarksBeforeAfter(t *testing.T) {
	mk := func(build string, pps, cpu, rss float64, top string) *Report {
		return &Report{Scenario: "burst", Build: build, Date: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), Machine: Machine{LoadAvg: "0.5 0.5 0.5"},
			Systems: []*SystemResult{{System: SysCitygw, Points: 100, PointsPerS: pps, Procs: []ProcResult{{Role: "system", CPUPerMillion: cpu, PeakRSSMB: rss}}}},
			Notes:   []string{"Each system ran alone.", "citygw CPU profile, 30s from 5s after the publisher started (go tool pprof -top, flat):\n\n```\n" + top + "\n```"}}
	}
	before, after := mk("v0-1-gabc", 1000, 20, 200, "decode 40%"), mk("v0-9-gdef", 1500, 12.5, 80, "decode 20%")
	steadyBefore := &Report{Scenario: "steady"} // no after: left out
	var b strings.Builder
	WriteBenchmarks(&b, []*Report{after}, []*Report{before, steadyBefore}, "regen")
	out := b.String()
	for _, want := range []string{
		"## Before and after",
		"| burst | v0-1-gabc | 2026-01-02 03:04 | 0.5 0.5 0.5 | 1000 | 20.0 | 200 | – | – |",
		"| burst | v0-9-gdef | 2026-01-02 03:04 | 0.5 0.5 0.5 | 1500 | 12.5 | 80 | – | – |",
		"burst, before (v0-1-gabc): citygw CPU profile, 30s from 5s after the publisher started (go tool pprof -top, flat)\n\n```\ndecode 40%",
		"burst, after (v0-9-gdef): citygw CPU profile",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("BENCHMARKS.md lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "| steady |") {
		t.Error("a baseline scenario without a report of its own is compared")
	}
	if i, j := strings.Index(out, "## Before and after"), strings.Index(out, "## Scenarios"); i < 0 || i > j {
		t.Error("the comparison is not before the scenarios")
	}
}

// The outage scenario end to end on a small city: InfluxDB really goes
// away and comes back, and citygw loses nothing.
func TestOutageSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts mosquitto, influxd and the gateway")
	}
	for _, tool := range []string{"mosquitto", "influxd"} {
		if _, err := localproc.LookTool(tool); err != nil {
			t.Skip(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b, err := New(ctx, Options{Repo: repoRoot(t), Work: t.TempDir(), Systems: []string{SysCitygw},
		Assets: 200, Interval: 5 * time.Second, Duration: time.Minute, Speed: 4, Outage: 4 * time.Second,
		Timeout: 2 * time.Minute, Progress: &logWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := outage{}.Run(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	s := rep.System(SysCitygw)
	if s == nil || s.Points != 2400 {
		t.Fatalf("citygw result %+v, want 2400 points", s)
	}
	if s.Extra["lost_points"] != int64(0) {
		t.Errorf("lost %v points", s.Extra["lost_points"])
	}
	// Points arrive during the outage at 40/s: the WAL must have held some.
	if wal, _ := s.Extra["peak_wal_backlog_points"].(int64); wal <= 0 {
		t.Errorf("peak WAL backlog %v during a %v outage", s.Extra["peak_wal_backlog_points"], 4*time.Second)
	}
	if a, _ := s.Extra["outage_actual_s"].(float64); a < 4 {
		t.Errorf("InfluxDB was down %v s, want at least 4", s.Extra["outage_actual_s"])
	}
}

func TestInprocess(t *testing.T) {
	out := `goos: linux
pkg: github.com/citygw/citygw/gateway/mqttsub
BenchmarkIngest/batch=64         	  697749	      5166 ns/op	    193567 points/s	     242 B/op	       3 allocs/op
BenchmarkIngest/batch=64         	  697749	      4166 ns/op	    240000 points/s	     242 B/op	       3 allocs/op
BenchmarkIngest/batch=64         	  697749	      2000 ns/op	    500000 points/s	     242 B/op	       3 allocs/op
BenchmarkEvalParallel-2   	   10000	    100 ns/op	   5200000 evals/s	  0 B/op	  12 allocs/op
PASS
`
	runs, err := parseGoBench(out, "BenchmarkIngest/batch=64", "points/s")
	if err != nil || len(runs) != 3 || runs[1].Metric != 240000 || runs[0].Allocs != 3 {
		t.Fatalf("ingest runs %+v, %v", runs, err)
	}
	med, best := medianBest(runs, func(r benchRun) float64 { return r.Metric })
	if med != 240000 || best != 500000 {
		t.Errorf("median %v best %v", med, best)
	}
	if runs, err := parseGoBench(out, "BenchmarkEvalParallel", "evals/s"); err != nil || len(runs) != 1 || runs[0].Metric != 5.2e6 {
		t.Errorf("rules runs %+v, %v", runs, err)
	}
	if _, err := parseGoBench(out, "BenchmarkNope", "x/s"); err == nil {
		t.Error("a missing benchmark parsed")
	}
	if _, err := parseGoBench(out, "BenchmarkEvalParallel", "points/s"); err == nil {
		t.Error("a missing metric parsed")
	}
	rep := &Report{Scenario: "inprocess", Params: map[string]any{"runs": 3}, Systems: []*SystemResult{{System: SysCitygw, Extra: map[string]any{
		"ingest_median": 240000.0, "ingest_best": 500000.0, "ingest_allocs_per_op": 3.0,
		"rules_median": 5.2e6, "rules_best": 5.3e6, "rules_allocs_per_op": 12.0}}}}
	gs := inprocessGoals(rep)
	if len(gs) != 2 || gs[0].reached != "**no** (median); best yes" || gs[1].reached != "yes (median); best yes" ||
		!strings.Contains(gs[0].measured, "median 240k points/s, best 500k of 3 runs") || !strings.Contains(gs[1].measured, "5.20 M") {
		t.Errorf("goals %+v", gs)
	}
	if gs := inprocessGoals(nil); gs[0].measured != "inprocess not run in this report" {
		t.Errorf("goals without the scenario %+v", gs)
	}
}

// TestGoalsMedianOfRuns: several burst runs are judged on the median of
// each ratio, runs with a -gateway-env are left out, and the ceiling goal
// states the bound the other processes of the median run leave.
func TestGoalsMedianOfRuns(t *testing.T) {
	run := func(citygw, telegraf float64, env string) *Report {
		r := &Report{Scenario: "burst", Machine: Machine{CPUs: 2}, Params: map[string]any{},
			Systems: []*SystemResult{
				{System: SysCeiling, Points: 100, PointsPerS: 100},
				{System: SysCitygw, Points: 100, PointsPerS: citygw, Procs: []ProcResult{
					{Role: "system", CPUPerMillion: 20}, {Role: "broker", CPUPerMillion: 20}, {Role: "database", CPUPerMillion: 60}, {Role: "publisher", CPUPerMillion: 20}}},
				{System: SysTelegraf, Points: 100, PointsPerS: telegraf, Procs: []ProcResult{{Role: "system", CPUPerMillion: 80}}},
			}}
		if env != "" {
			r.Params["gateway_env"] = env
		}
		r.ComputeRatios()
		return r
	}
	reps := []*Report{run(60, 50, ""), run(90, 50, ""), run(75, 50, ""), run(99, 10, "GOGC=400")}
	var b strings.Builder
	WriteBenchmarks(&b, reps, nil, "")
	out := b.String()
	for _, want := range []string{
		"| end-to-end points/s ≥ 1.5× Telegraf's (burst) | citygw/telegraf points_per_s = 1.50 (median of 3 runs: 1.20, 1.50, 1.80) | yes |",
		"citygw/ceiling points_per_s = 0.75 (median of 3 runs: 0.60, 0.75, 0.90); with a gateway taking no CPU at all, the broker, InfluxDB and publisher (100 CPU s / M points in citygw's run) would leave 2 cores room for 20000 points/s, 200.00 of the ceiling | **no** |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("BENCHMARKS.md lacks %q:\n%s", want, out)
		}
	}
	if v, mid, vals := medianRatio(reps[:2], "citygw/telegraf points_per_s"); v != 1.5 || mid != reps[0] || len(vals) != 2 {
		t.Errorf("even count: median %v of %v (middle run %p, want the lower %p)", v, vals, mid, reps[0])
	}
}
