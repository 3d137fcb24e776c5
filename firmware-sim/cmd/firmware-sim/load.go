package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/citygw/citygw/firmware-sim/loadgen"
)

// loadCmd publishes benchmark load (or, with -count, counts what a broker
// delivers) and prints one JSON summary line on stdout.
func loadCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("firmware-sim load", flag.ContinueOnError)
	cityFile := fs.String("city", "", "city config file for the bins' ids, topics and payload model (required)")
	assets := fs.Int("assets", 10000, "number of bins (BIN-…, as `firmware-sim inventory -bins N -cabinets 0 -gas 0` names them)")
	broker := fs.String("mqtt", "tcp://127.0.0.1:1883", "MQTT broker URL")
	topic := fs.String("topic", "", "topic pattern with {asset} (default: the city config's)")
	messages := fs.Int("messages", 0, "burst: publish this many messages as fast as the broker takes them, round-robin over the assets")
	interval := fs.Duration("interval", time.Minute, "steady: each asset once per this much simulated time")
	duration := fs.Duration("duration", 0, "steady: this much simulated time (the plan when -messages is 0)")
	speed := fs.Float64("speed", 1, "steady: simulated seconds per wall second")
	conns := fs.Int("conns", 2, "MQTT connections")
	inflight := fs.Int("inflight", 1000, "messages in flight (not yet acknowledged) per connection")
	clientID := fs.String("client-id", "citygw-loadgen", "client id prefix (connection n gets -n; the counter uses it as is)")
	count := fs.Bool("count", false, "count instead of publishing: subscribe to the topic filter (QoS 1, persistent session) and count until -messages arrived")
	filter := fs.String("filter", "city/bins/+/telemetry", "with -count: the topic filter")
	timeout := fs.Duration("timeout", 0, "give up after this long (0: never; SIGINT/SIGTERM always stop)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage:
  firmware-sim load -city FILE -assets N -messages M [-mqtt URL] [-conns 2 -inflight 1000]
  firmware-sim load -city FILE -assets N -interval 1m -duration 10m -speed 10 [-mqtt URL]
  firmware-sim load -count -messages M [-mqtt URL] [-filter city/bins/+/telemetry]

Progress goes to stderr once a second; one JSON summary line to stdout at the end.
Exit status 1 when messages failed or did not all arrive.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if *count {
		return countCmd(ctx, stdout, stderr, loadgen.CounterConfig{Broker: *broker, ClientID: *clientID, Topic: *filter, QoS: 1}, int64(*messages))
	}
	if *cityFile == "" {
		return errors.New("-city FILE is required")
	}
	c, err := loadgen.BinsCity(*cityFile, *assets, *topic)
	if err != nil {
		return err
	}
	cfg := loadgen.Config{Broker: *broker, ClientID: *clientID, Conns: *conns, InFlight: *inflight,
		Burst: *messages, Interval: *interval, Duration: *duration, Speed: *speed, Progress: stderr, Log: log}
	s, runErr := loadgen.Run(ctx, cfg, loadgen.NewCitySource(c))
	if err := json.NewEncoder(stdout).Encode(s); err != nil {
		return err
	}
	if runErr != nil {
		return runErr
	}
	if s.Failed > 0 || s.Acked < s.Messages {
		return fmt.Errorf("%d of %d messages failed", s.Messages-s.Acked, s.Messages)
	}
	return nil
}

// countSummary is the JSON line `firmware-sim load -count` prints.
type countSummary struct {
	Messages int64     `json:"messages"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
	Duration float64   `json:"duration"` // seconds from the first to the last message
	MsgsPerS float64   `json:"msgs_per_s"`
}

func countCmd(ctx context.Context, stdout, stderr io.Writer, cfg loadgen.CounterConfig, want int64) error {
	if want <= 0 {
		return errors.New("-count needs -messages N: how many to wait for")
	}
	c, err := loadgen.StartCounter(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(stderr, "counter: ready, subscribed to %s on %s\n", cfg.Topic, cfg.Broker)
	done := make(chan error, 1)
	go func() { done <- c.Wait(ctx, want) }()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	start := time.Now()
	var prev int64
	var waitErr error
loop:
	for {
		select {
		case waitErr = <-done:
			break loop
		case now := <-t.C:
			n := c.Count()
			fmt.Fprintf(stderr, "counter: %.0fs received %d rate %d msg/s\n", now.Sub(start).Seconds(), n, n-prev)
			prev = n
		}
	}
	s := countSummary{Messages: c.Count(), First: c.First(), Last: c.Last()}
	if d := s.Last.Sub(s.First); d > 0 {
		s.Duration = d.Seconds()
		s.MsgsPerS = float64(s.Messages) / d.Seconds()
	}
	if err := json.NewEncoder(stdout).Encode(s); err != nil {
		return err
	}
	if waitErr != nil {
		return fmt.Errorf("%s", strings.TrimPrefix(waitErr.Error(), "counter: "))
	}
	return nil
}
