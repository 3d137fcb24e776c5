// Command citybench runs the city-scale benchmark (issue 6) against a real
// Mosquitto and InfluxDB 1.8: citygw, Telegraf doing the same ingest, and the
// broker's ceiling, one after another, and prints a Markdown table.
//
//	go run ./gateway/cmd/citybench -scenario burst
//	go run ./gateway/cmd/citybench -scenario burst -messages 50000 -assets 1000 -out /tmp/burst.json
//
// See gateway/citybench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/citygw/citygw/gateway/citybench"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "citybench: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("citybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenarios := citybench.Scenarios()
	var names []string
	for n := range scenarios {
		names = append(names, n)
	}
	slices.Sort(names)
	scenario := fs.String("scenario", "burst", "scenario, a comma-separated list of them, or all: "+strings.Join(names, ", "))
	messages := fs.Int("messages", 0, "messages in all (0: the scenario's default; burst 1,000,000)")
	assets := fs.Int("assets", 0, "assets (0: the scenario's default; burst 10,000)")
	systems := fs.String("systems", strings.Join(citybench.AllSystems(), ","), "systems to measure, in order")
	out := fs.String("out", "", "write the raw figures as JSON to this file")
	work := fs.String("work", filepath.Join(os.TempDir(), "citybench"), "work directory: binaries, inventories, one directory per system with its logs")
	repo := fs.String("repo", ".", "repository root")
	conns := fs.Int("conns", 2, "publisher MQTT connections")
	inflight := fs.Int("inflight", 1000, "publisher messages in flight per connection")
	batch := fs.Int("batch-size", citybench.DefaultBatchSize, "InfluxDB batch size of citygw and Telegraf (configs/gateway.yaml influxdb.batch_size)")
	flush := fs.Duration("flush-interval", citybench.DefaultFlushInterval, "InfluxDB flush interval of citygw and Telegraf (configs/gateway.yaml influxdb.flush_interval)")
	timeout := fs.Duration("timeout", 5*time.Minute, "fail when points are still missing this long after the publisher finished")
	noBuild := fs.Bool("no-build", false, "reuse the gateway and firmware-sim binaries in the work directory instead of running go build")
	interval := fs.Duration("interval", 0, "steady, outage, memory: each asset once per this much simulated time (0: 1m)")
	duration := fs.Duration("duration", 0, "steady, outage: simulated time (0: 10m); memory: 0 runs until the rules' windows and the display history are full")
	speed := fs.Float64("speed", 0, "steady, outage, memory: simulated seconds per wall second (0: steady 10, outage 5, memory 10)")
	outage := fs.Duration("outage", 0, "outage: how long InfluxDB stays stopped (0: 60s)")
	gatewayEnv := fs.String("gateway-env", "", "comma-separated KEY=VALUE added to citygw's environment only (say GOMEMLIMIT=250MiB); recorded in the reports")
	markdown := fs.String("markdown", "", "write BENCHMARKS.md-style Markdown of the scenarios run (and of -reports) to this file")
	reports := fs.String("reports", "", "comma-separated JSON reports (from -out) to include in -markdown; with no -scenario given, nothing runs")
	repeat := fs.Int("repeat", 1, "run the scenarios this many times over (each run's raw figures in NAME-runK.json); the goals are judged on the median of each ratio across the runs")
	beforeReports := fs.String("before", "", "comma-separated JSON reports of the same scenarios on a baseline revision (say, run with -repo on a git worktree of it): -markdown compares citygw's figures and profiles with them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var run []string
	scenarioSet := false
	fs.Visit(func(f *flag.Flag) { scenarioSet = scenarioSet || f.Name == "scenario" })
	if *reports == "" || scenarioSet {
		for _, n := range strings.Split(*scenario, ",") {
			if n == "all" {
				run = append(run, citybench.ScenarioNames()...)
				continue
			}
			if _, ok := scenarios[n]; !ok {
				return fmt.Errorf("unknown scenario %q (want %s, or all)", n, strings.Join(names, ", "))
			}
			run = append(run, n)
		}
	}
	var done []*citybench.Report
	if *reports != "" {
		if *markdown == "" {
			return errors.New("-reports needs -markdown FILE")
		}
		for _, f := range strings.Split(*reports, ",") {
			r, err := citybench.ReadReport(f)
			if err != nil {
				return err
			}
			done = append(done, r)
		}
	}
	var before []*citybench.Report
	if *beforeReports != "" {
		for _, f := range strings.Split(*beforeReports, ",") {
			r, err := citybench.ReadReport(f)
			if err != nil {
				return err
			}
			before = append(before, r)
		}
	}
	command := "go run ./gateway/cmd/citybench " + citybench.CommandLine(args)
	writeMarkdown := func() error {
		if *markdown == "" {
			return nil
		}
		var buf strings.Builder
		citybench.WriteBenchmarks(&buf, done, before, command)
		if err := os.WriteFile(*markdown, []byte(buf.String()), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "citybench: wrote %s\n", *markdown)
		return nil
	}
	if len(run) == 0 {
		return writeMarkdown()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := citybench.Options{Repo: *repo, Work: *work, Systems: strings.Split(*systems, ","), Messages: *messages, Assets: *assets,
		Conns: *conns, InFlight: *inflight, BatchSize: *batch, FlushInterval: *flush, Timeout: *timeout, NoBuild: *noBuild,
		Interval: *interval, Duration: *duration, Speed: *speed, Outage: *outage, GatewayEnv: splitList(*gatewayEnv),
		Progress: stderr, Log: slog.New(slog.NewTextHandler(stderr, nil))}
	b, err := citybench.New(ctx, opts)
	if err != nil {
		return err
	}
	if *repeat < 1 {
		return fmt.Errorf("-repeat %d: want at least 1", *repeat)
	}
	var errs []error
	var todo []string
	for range *repeat {
		todo = append(todo, run...)
	}
	// fileOf is the name of a run's raw figures.
	fileOf := func(i int, name string) string {
		if *repeat > 1 {
			return fmt.Sprintf("%s-run%d", name, i/len(run)+1)
		}
		return name
	}
	if *out != "" { // now, not after an hour of measuring
		for i, name := range todo {
			if err := os.MkdirAll(filepath.Dir(outFile(*out, fileOf(i, name), len(todo) > 1)), 0o755); err != nil {
				return fmt.Errorf("-out: %w", err)
			}
		}
	}
	for i, name := range todo {
		sc := scenarios[name]
		file := fileOf(i, name)
		fmt.Fprintf(stderr, "citybench: %s; work directory %s\n", sc.Describe(&b.Opts), b.Opts.Work)
		rep, runErr := sc.Run(ctx, b)
		if runErr != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, runErr))
		}
		if rep != nil {
			rep.Command, rep.Build = command, b.Build
			fmt.Fprintln(stdout)
			rep.Markdown(stdout)
			// Every report's raw figures stay in the work directory too.
			files := []string{filepath.Join(b.Opts.Work, file+".json")}
			if *out != "" {
				files = append(files, outFile(*out, file, len(todo) > 1))
			}
			for _, f := range files {
				if err := rep.WriteJSON(f); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(stderr, "citybench: raw figures in %s\n", f)
			}
			done = append(done, rep)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if err := writeMarkdown(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// outFile is -out's file for a scenario: the name as given for one
// scenario, else with the scenario's name before the extension (or in
// place of {scenario}).
func outFile(out, scenario string, several bool) string {
	if strings.Contains(out, "{scenario}") {
		return strings.ReplaceAll(out, "{scenario}", scenario)
	}
	if !several {
		return out
	}
	ext := filepath.Ext(out)
	return strings.TrimSuffix(out, ext) + "-" + scenario + ext
}

// splitList splits a comma-separated flag value; empty gives nil.
func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
