package citybench

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// steady is the scenario "a steady city of 126,000 assets reporting once a
// minute for ten minutes of simulated time": every asset once per Interval
// of device time, spread evenly over the interval, for Duration, played
// Speed times faster than real time. Device time ends when the publisher
// starts (all timestamps in the past, so every system accepts them). A
// system keeps up when its points/s equals the offered rate and the lag
// (last acknowledged publish to last point visible) stays about one flush.
type steady struct{}

// Steady defaults: ten simulated minutes in one wall minute.
const (
	steadyAssets   = 126000
	steadyInterval = time.Minute
	steadyDuration = 10 * time.Minute
	steadySpeed    = 10
)

// steadyPlan is a steady load: its size and pace.
type steadyPlan struct {
	Assets   int
	Interval time.Duration
	Duration time.Duration // simulated
	Speed    float64
}

// plan returns o's steady plan, the zero fields replaced by the defaults
// given.
func plan(o *Options, duration time.Duration, speed float64) steadyPlan {
	p := steadyPlan{Assets: o.Assets, Interval: o.Interval, Duration: o.Duration, Speed: o.Speed}
	if p.Assets <= 0 {
		p.Assets = steadyAssets
	}
	if p.Interval <= 0 {
		p.Interval = steadyInterval
	}
	if p.Duration <= 0 {
		p.Duration = duration
	}
	if p.Speed <= 0 {
		p.Speed = speed
	}
	return p
}

// Points is the number of messages (and points) the plan sends.
func (p steadyPlan) Points() int64 { return int64(p.Assets) * int64(p.Duration/p.Interval) }

// Wall is how long the publisher takes in wall time.
func (p steadyPlan) Wall() time.Duration { return time.Duration(float64(p.Duration) / p.Speed) }

// Offered is the offered rate in points per wall second.
func (p steadyPlan) Offered() float64 { return float64(p.Points()) / p.Wall().Seconds() }

// Args are the publisher's arguments for the plan.
func (p steadyPlan) Args(b *Bench) []string {
	return b.LoadArgs(p.Assets, "-interval", p.Interval.String(), "-duration", p.Duration.String(),
		"-speed", strconv.FormatFloat(p.Speed, 'f', -1, 64))
}

func (p steadyPlan) String() string {
	return fmt.Sprintf("%d assets once per %v for %v of simulated time at %gx (%v of wall time, %d points, %.0f points/s offered)",
		p.Assets, p.Interval, p.Duration, p.Speed, p.Wall().Round(time.Second), p.Points(), p.Offered())
}

func (p steadyPlan) params(o *Options) map[string]any {
	return map[string]any{"assets": p.Assets, "interval": p.Interval.String(), "duration_simulated": p.Duration.String(),
		"speed": p.Speed, "wall_seconds": p.Wall().Seconds(), "points": p.Points(), "offered_points_per_s": round1(p.Offered()),
		"publisher_conns": o.Conns, "publisher_inflight": o.InFlight, "batch_size": o.BatchSize, "flush_interval": o.FlushInterval.String()}
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

func (steady) Describe(o *Options) string {
	return "steady: " + plan(o, steadyDuration, steadySpeed).String()
}

func (steady) Run(ctx context.Context, b *Bench) (*Report, error) {
	o := &b.Opts
	p := plan(o, steadyDuration, steadySpeed)
	rep := &Report{Scenario: "steady", Date: time.Now().UTC(), Machine: machine(), Params: p.params(o),
		Notes: []string{
			"Each system ran alone on a fresh Mosquitto (configs/bench/mosquitto.conf) and, but for the ceiling, a fresh InfluxDB 1.8.10.",
			"The publisher paces the plan: each asset once per interval of device time, assets spread evenly over the interval, device time ending when the publisher started. A system that keeps up shows points/s close to the offered rate (points over wall time plus lag).",
			"lag_s: the publisher's last acknowledged message to the first count query that saw every point (polled every 250 ms; includes one flush interval and the count query).",
			"CPU and peak RSS: /proc between the publisher's start and full visibility; the publisher's and the counter's whole life (rusage). Peak RSS includes start-up (loading the inventory).",
			"citygw: shipped rules loaded, WAL on, no case sink, per-asset rate cap off (configs/bench/gateway.yaml).",
		}}
	inv, err := b.Inventory(ctx, p.Assets)
	if err != nil {
		return nil, err
	}
	var failed []string
	for _, sys := range o.Systems {
		res, err := b.runSteady(ctx, "steady", sys, inv, p)
		rep.Systems = append(rep.Systems, res)
		if err != nil {
			failed = append(failed, sys+": "+err.Error())
		}
		if ctx.Err() != nil {
			break
		}
	}
	rep.Machine.LoadAfter = loadavg()
	rep.ComputeRatios()
	if len(failed) > 0 {
		return rep, fmt.Errorf("%d system(s) failed: %v", len(failed), failed)
	}
	return rep, nil
}

// runSteady measures one system under the steady plan p on a fresh stack and
// adds the steady figures (offered rate, lag) to its result. With inspect
// non-nil, it is called after full visibility, before the stack stops.
func (b *Bench) runSteady(ctx context.Context, scenario, sys string, inv *Inventory, p steadyPlan, inspect ...func(*Stack, *SystemResult) error) (*SystemResult, error) {
	fmt.Fprintf(b.Opts.Progress, "citybench: %s %s: starting a fresh stack\n", scenario, sys)
	want := p.Points()
	st, err := b.StartStack(ctx, sys, filepath.Join(b.Opts.Work, scenario+"-"+sys), inv, want)
	if err != nil {
		return &SystemResult{System: sys, Error: err.Error()}, err
	}
	defer st.Stop()
	res, err := b.Measure(ctx, st, p.Args(b), want)
	if err != nil {
		if res.Error == "" {
			res.Error = err.Error()
		}
		return res, err
	}
	if res.Points < want {
		res.Error = fmt.Sprintf("%d of %d points arrived (%d missing)", res.Points, want, want-res.Points)
		return res, fmt.Errorf("%s: %s", sys, res.Error)
	}
	if res.Extra == nil {
		res.Extra = map[string]any{}
	}
	res.Extra["offered_points_per_s"] = round1(p.Offered())
	if !res.Publisher.LastAck.IsZero() {
		res.Extra["lag_s"] = round1(res.LastVisible.Sub(res.Publisher.LastAck).Seconds())
		res.Extra["publish_s"] = round1(res.Publisher.Duration)
	}
	if res.Seconds > 0 {
		res.Extra["pct_of_offered"] = round1(100 * res.PointsPerS / p.Offered())
	}
	for _, f := range inspect {
		if err := f(st, res); err != nil {
			res.Error = err.Error()
			return res, fmt.Errorf("%s: %w", sys, err)
		}
	}
	return res, nil
}
