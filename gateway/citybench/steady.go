package citybench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	m := map[string]any{"assets": p.Assets, "interval": p.Interval.String(), "duration_simulated": p.Duration.String(),
		"speed": p.Speed, "wall_seconds": p.Wall().Seconds(), "points": p.Points(), "offered_points_per_s": round1(p.Offered()),
		"publisher_conns": o.Conns, "publisher_inflight": o.InFlight, "batch_size": o.BatchSize, "flush_interval": o.FlushInterval.String()}
	if len(o.GatewayEnv) > 0 {
		m["gateway_env"] = strings.Join(o.GatewayEnv, " ")
	}
	return m
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
			primeNote,
		}}
	inv, err := b.Inventory(ctx, p.Assets)
	if err != nil {
		return nil, err
	}
	return b.eachSystem(ctx, rep, "", func(sys string) (*SystemResult, error) {
		return b.runSteady(ctx, "steady", sys, inv, p)
	})
}

// eachSystem measures every system of the options but skip, one after the
// other, with run, which returns the system's result even when it fails;
// then it completes rep (the load after, the ratios) and fails naming the
// systems that failed. It stops early when ctx is done.
func (b *Bench) eachSystem(ctx context.Context, rep *Report, skip string, run func(sys string) (*SystemResult, error)) (*Report, error) {
	var failed []string
	for _, sys := range b.Opts.Systems {
		if sys == skip {
			continue
		}
		res, err := run(sys)
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

// primedStack starts a fresh stack for sys in Work/scenario-sys and primes
// its database's series for the plan p (see primeSeries); it returns the
// points the priming wrote. On failure the stack is stopped and the result
// holds the error.
func (b *Bench) primedStack(ctx context.Context, scenario, sys string, inv *Inventory, p steadyPlan) (*Stack, int64, *SystemResult, error) {
	fmt.Fprintf(b.Opts.Progress, "citybench: %s %s: starting a fresh stack\n", scenario, sys)
	st, err := b.StartStack(ctx, sys, filepath.Join(b.Opts.Work, scenario+"-"+sys), inv, p.Points())
	if err != nil {
		return nil, 0, &SystemResult{System: sys, Error: err.Error()}, err
	}
	primed, err := b.primeSeries(ctx, st, inv, time.Now().Add(-p.Duration-time.Hour))
	if err != nil {
		st.Stop()
		return nil, 0, &SystemResult{System: sys, Error: err.Error()}, err
	}
	return st, primed, nil, nil
}

// runSteady measures one system under the steady plan p on a fresh stack and
// adds the steady figures (offered rate, lag) to its result. With inspect
// non-nil, it is called after full visibility, before the stack stops.
func (b *Bench) runSteady(ctx context.Context, scenario, sys string, inv *Inventory, p steadyPlan, inspect ...func(*Stack, *SystemResult) error) (*SystemResult, error) {
	want := p.Points()
	st, _, failed, err := b.primedStack(ctx, scenario, sys, inv, p)
	if err != nil {
		return failed, err
	}
	defer st.Stop()
	res, err := b.Measure(ctx, st, p.Args(b), want)
	if err != nil {
		if res.Error == "" {
			res.Error = err.Error()
		}
		// What inspect reads (the gateway's memory) does not depend on
		// InfluxDB having every point: read it anyway, the failure stays.
		if ctx.Err() == nil && st.SUT != nil && !st.SUT.Exited() {
			if res.Extra == nil {
				res.Extra = map[string]any{}
			}
			for _, f := range inspect {
				if ierr := f(st, res); ierr != nil {
					res.Error += "; " + ierr.Error()
				}
			}
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
	if st.DB != nil {
		// One series per asset when the primed series are the ones the
		// system writes (more means the priming missed them).
		if n, err := st.DB.seriesCardinality(st.DBName); err == nil {
			res.Extra["series"] = n
		}
	}
	for _, f := range inspect {
		if err := f(st, res); err != nil {
			res.Error = err.Error()
			return res, fmt.Errorf("%s: %w", sys, err)
		}
	}
	return res, nil
}

// primeNote explains primeSeries in the reports.
const primeNote = "Before the load, each InfluxDB got one uncounted point per asset with the systems' tags (asset, district, grid, gateway), as in a city that has reported before: otherwise the first round is InfluxDB creating every series, whose writes outlast its 10 s write timeout here. series: the database's series after the run (one per asset when the priming matched)."

// primeField is the field primeSeries writes: never counted (the count is
// of fill_pct), it only makes the series exist.
const primeField = "citybench_prime"

// primeSeries creates the city's series in st's database before the load
// starts, as in a city whose assets have reported before: one point per
// asset with the tags both systems write (asset, district, grid, gateway),
// at time at, in a field the benchmark never counts. Without it the first
// round of a steady load is InfluxDB creating 126,000 series, whose
// writes outlast its 10 s write timeout on this machine and get retried:
// the figures would measure series creation, not a steady city. The
// ceiling has no database. It returns the points written (InfluxDB's
// write counter counts them).
func (b *Bench) primeSeries(ctx context.Context, st *Stack, inv *Inventory, at time.Time) (int64, error) {
	if st.DB == nil {
		return 0, nil
	}
	data, err := os.ReadFile(inv.Lookup)
	if err != nil {
		return 0, fmt.Errorf("priming series: %w", err)
	}
	var lut map[string]map[string]string
	if err := json.Unmarshal(data, &lut); err != nil {
		return 0, fmt.Errorf("priming series: %s: %w", inv.Lookup, err)
	}
	ids := make([]string, 0, len(lut))
	for id := range lut {
		ids = append(ids, id)
	}
	start := time.Now()
	fmt.Fprintf(b.Opts.Progress, "citybench: %s: priming %d series in InfluxDB\n", st.System, len(ids))
	esc := strings.NewReplacer(",", `\,`, "=", `\=`, " ", `\ `)
	ts := strconv.FormatInt(at.Unix(), 10)
	const batch = 5000
	var body bytes.Buffer
	for i := 0; i < len(ids); i += batch {
		body.Reset()
		for _, id := range ids[i:min(i+batch, len(ids))] {
			t := lut[id]
			fmt.Fprintf(&body, "%s,asset=%s,district=%s,gateway=%s,grid=%s %s=1i %s\n", measurement,
				esc.Replace(id), esc.Replace(t["district"]), esc.Replace(gatewayID), esc.Replace(t["grid"]), primeField, ts)
		}
		if err := st.DB.writeLines(ctx, st.DBName, body.Bytes()); err != nil {
			return 0, fmt.Errorf("priming series: %w", err)
		}
	}
	fmt.Fprintf(b.Opts.Progress, "citybench: %s: primed %d series in %.1fs\n", st.System, len(ids), time.Since(start).Seconds())
	return int64(len(ids)), nil
}

// writeLines posts line protocol (seconds) to dbName, retrying a few times
// (a write that timed out on InfluxDB's side may have been applied: the
// retry then rewrites the same points, which is harmless).
func (db *InfluxDB) writeLines(ctx context.Context, dbName string, lines []byte) error {
	var last error
	for attempt := 0; attempt < 6; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, db.URL()+"/write?precision=s&db="+dbName, bytes.NewReader(lines))
		if err != nil {
			return err
		}
		resp, err := db.http.Do(req)
		if err == nil {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return nil
			}
			err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return fmt.Errorf("writing to %s: %w", dbName, last)
}

// seriesCardinality returns the exact number of series in dbName.
func (db *InfluxDB) seriesCardinality(dbName string) (int64, error) {
	series, err := db.Query(dbName, "SHOW SERIES EXACT CARDINALITY")
	if err != nil {
		return 0, err
	}
	var n int64
	for _, s := range series {
		for _, row := range s.Values {
			if len(row) == 0 {
				continue
			}
			if v, ok := row[len(row)-1].(json.Number); ok {
				k, err := v.Int64()
				if err != nil {
					return 0, err
				}
				n += k
			}
		}
	}
	return n, nil
}
