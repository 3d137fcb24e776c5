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
	scenario := fs.String("scenario", "burst", "scenario: "+strings.Join(names, ", "))
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	sc, ok := scenarios[*scenario]
	if !ok {
		return fmt.Errorf("unknown scenario %q (want %s)", *scenario, strings.Join(names, ", "))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := citybench.Options{Repo: *repo, Work: *work, Systems: strings.Split(*systems, ","), Messages: *messages, Assets: *assets,
		Conns: *conns, InFlight: *inflight, BatchSize: *batch, FlushInterval: *flush, Timeout: *timeout, NoBuild: *noBuild,
		Progress: stderr, Log: slog.New(slog.NewTextHandler(stderr, nil))}
	b, err := citybench.New(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "citybench: %s; work directory %s\n", sc.Describe(&b.Opts), b.Opts.Work)
	rep, runErr := sc.Run(ctx, b)
	if rep != nil {
		fmt.Fprintln(stdout)
		rep.Markdown(stdout)
		if *out != "" {
			if err := rep.WriteJSON(*out); err != nil {
				return errors.Join(runErr, err)
			}
			fmt.Fprintf(stderr, "citybench: raw figures in %s\n", *out)
		}
	}
	return runErr
}
