package citybench

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// inprocess is the scenario for issue 6's two in-process goals, measured
// by the Go benchmarks that state them (no broker, no InfluxDB): a
// point's whole path through the gateway on one core, and the rule
// engine's evaluations per second across the cores. It runs them with go
// test in the repository, a few times each, and reports the median and
// the best run.
type inprocess struct{}

// inprocessRuns is how many times each benchmark runs (-count).
const inprocessRuns = 5

// goBench is one Go benchmark the scenario runs.
type goBench struct {
	Key    string   // Extra's key prefix
	Pkg    string   // package
	Bench  string   // -bench pattern
	Name   string   // the result line's name, without the -N suffix
	Metric string   // the custom metric reported (points/s, evals/s)
	Args   []string // more go test flags
	What   string   // for the report
}

var inprocessBenches = []goBench{
	{Key: "ingest", Pkg: "./gateway/mqttsub", Bench: "Ingest/batch=64$", Name: "BenchmarkIngest/batch=64", Metric: "points/s",
		Args: []string{"-cpu", "1", "-benchtime", "3s"},
		What: "a point's whole in-process path (topic, JSON decode, line protocol, WAL append, the shipped rules, ack) in batches of 64, GOMAXPROCS=1 (the WAL drain shares the core)"},
	{Key: "rules", Pkg: "./rules", Bench: "EvalParallel$", Name: "BenchmarkEvalParallel", Metric: "evals/s",
		Args: []string{"-benchtime", "2s"},
		What: "rule evaluations: a streetlight reading against 1,000 loaded rules (250 of its kind) from every core"},
}

func (inprocess) Describe(o *Options) string {
	return fmt.Sprintf("inprocess: the Go benchmarks of the in-process goals (%d runs each): go test -bench Ingest ./gateway/mqttsub, -bench EvalParallel ./rules", inprocessRuns)
}

func (inprocess) Run(ctx context.Context, b *Bench) (*Report, error) {
	rep := &Report{Scenario: "inprocess", Date: time.Now().UTC(), Machine: machine(), Params: map[string]any{"runs": inprocessRuns},
		Notes: []string{"Go benchmarks run by `go test` in the repository (no broker, no InfluxDB); figures are the median and the best of the runs, since the machine is shared and a run can lose its core to another process."}}
	res := &SystemResult{System: SysCitygw, Extra: map[string]any{}}
	rep.Systems = []*SystemResult{res}
	for _, gb := range inprocessBenches {
		args := append([]string{"test", "-run", "^$", "-bench", gb.Bench, "-benchmem", "-count", strconv.Itoa(inprocessRuns)}, gb.Args...)
		args = append(args, gb.Pkg)
		fmt.Fprintf(b.Opts.Progress, "citybench: go %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = b.Opts.Repo
		out, err := cmd.CombinedOutput()
		if err != nil {
			res.Error = fmt.Sprintf("go %s: %v", strings.Join(args, " "), err)
			rep.Machine.LoadAfter = loadavg()
			return rep, fmt.Errorf("%s\n%s", res.Error, out)
		}
		runs, err := parseGoBench(string(out), gb.Name, gb.Metric)
		if err != nil {
			return rep, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		med, best := medianBest(runs, func(r benchRun) float64 { return r.Metric })
		res.Extra[gb.Key+"_median"] = med
		res.Extra[gb.Key+"_best"] = best
		res.Extra[gb.Key+"_allocs_per_op"] = runs[0].Allocs
		var lines []string
		for _, r := range runs {
			lines = append(lines, r.Line)
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s — `go %s`:\n\n```\n%s\n```", gb.What, strings.Join(args, " "), strings.Join(lines, "\n")))
	}
	rep.Machine.LoadAfter = loadavg()
	return rep, nil
}

// benchRun is one result line of go test -bench.
type benchRun struct {
	Line   string
	Metric float64 // the custom metric
	Allocs float64 // allocs/op
}

// parseGoBench returns the result lines of the benchmark name (with or
// without a -GOMAXPROCS suffix) and their metric.
func parseGoBench(out, name, metric string) ([]benchRun, error) {
	var runs []benchRun
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		if n, _, _ := strings.Cut(f[0], "-"); f[0] != name && n != name {
			continue
		}
		r := benchRun{Line: sc.Text(), Metric: -1}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case metric:
				r.Metric = v
			case "allocs/op":
				r.Allocs = v
			}
		}
		if r.Metric < 0 {
			return nil, fmt.Errorf("%s: no %s in %q", name, metric, sc.Text())
		}
		runs = append(runs, r)
	}
	if len(runs) == 0 {
		return nil, fmt.Errorf("no result line for %s", name)
	}
	return runs, nil
}

// medianBest returns the median and the largest of f over xs.
func medianBest[T any](xs []T, f func(T) float64) (median, best float64) {
	vs := make([]float64, len(xs))
	for i, x := range xs {
		vs[i] = f(x)
	}
	slices.Sort(vs)
	return vs[len(vs)/2], vs[len(vs)-1]
}
