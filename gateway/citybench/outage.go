package citybench

import (
	"bufio"
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
)

// outage is the scenario "an InfluxDB outage of 60 s in the middle of
// steady load": the steady plan (at half the steady speed by default, so
// that the outage sits inside two minutes of publishing), with InfluxDB
// stopped (SIGTERM, the process gone) in the middle of the publishing and
// started again after Outage on the same data directory and port. It
// reports the peak backlog, the drain time after InfluxDB returns, and the
// points lost. The ceiling has no database and is skipped.
type outage struct{}

// Outage defaults.
const (
	outageSpeed = 5
	outageFor   = 60 * time.Second
)

func (outage) length(o *Options) time.Duration {
	if o.Outage > 0 {
		return o.Outage
	}
	return outageFor
}

func (s outage) Describe(o *Options) string {
	p := plan(o, steadyDuration, outageSpeed)
	return fmt.Sprintf("outage: InfluxDB stopped for %v in the middle of %s", s.length(o), p)
}

func (s outage) Run(ctx context.Context, b *Bench) (*Report, error) {
	o := &b.Opts
	p := plan(o, steadyDuration, outageSpeed)
	down := s.length(o)
	params := p.params(o)
	params["outage"] = down.String()
	rep := &Report{Scenario: "outage", Date: time.Now().UTC(), Machine: machine(), Params: params,
		Notes: []string{
			"Each system ran alone on a fresh Mosquitto and InfluxDB 1.8.10, under the steady plan; InfluxDB was stopped (SIGTERM, process gone) centred on the middle of the publishing and started again after the outage on the same data directory and port.",
			"backlog: points the broker acknowledged to the publisher and InfluxDB had not yet accepted (publisher's acked count minus InfluxDB's write counter, summed over both influxd lives), sampled every 250 ms; citygw's WAL backlog is its citygw_wal_backlog_points gauge, scraped every second.",
			"drain_s: InfluxDB's restart (answering /ping) to the first count query that saw every point; it includes the publishing still to come after the restart. catch_up_s: restart to the first sample where the backlog was back under two seconds of offered load plus one batch.",
			"seconds and points/s: first publish to all points visible, outage included. CPU: /proc over the same span (influxd: both lives, its restart included).",
			"Telegraf (configs/bench/telegraf.conf): metric_buffer_limit 200000, max_undelivered_messages 20000, so it holds at most 20000 unwritten metrics itself; the rest of its backlog waits unacknowledged at the broker (max_queued_messages 0: unbounded). dropped: the metrics its log says it dropped.",
			primeNote,
		}}
	inv, err := b.Inventory(ctx, p.Assets)
	if err != nil {
		return nil, err
	}
	return b.eachSystem(ctx, rep, SysCeiling, func(sys string) (*SystemResult, error) {
		return b.runOutage(ctx, sys, inv, p, down)
	})
}

// runOutage measures one system through the outage.
func (b *Bench) runOutage(ctx context.Context, sys string, inv *Inventory, p steadyPlan, down time.Duration) (*SystemResult, error) {
	o := &b.Opts
	want := p.Points()
	st, primed, failed, err := b.primedStack(ctx, "outage", sys, inv, p)
	if err != nil {
		return failed, err
	}
	defer st.Stop()
	res := &SystemResult{System: sys, Extra: map[string]any{"outage_s": down.Seconds(), "offered_points_per_s": round1(p.Offered())}}
	fail := func(err error) (*SystemResult, error) {
		if res.Error == "" {
			res.Error = err.Error()
		}
		return res, fmt.Errorf("%s: %w", sys, err)
	}

	sutAt, err1 := SampleProc(st.SUT.Pid())
	brokerAt, err2 := SampleProc(st.Broker.Pid())
	dbAt, err3 := SampleProc(st.DB.Pid())
	if err := firstErr(err1, err2, err3); err != nil {
		return fail(fmt.Errorf("sampling: %w", err))
	}
	load := child(&Process{Name: "publisher", Path: b.Sim, Args: append(p.Args(b), "-mqtt", st.Broker.URL()), LogFile: filepath.Join(st.Dir, "publisher.log")})
	if err := load.Start(); err != nil {
		return fail(err)
	}
	defer load.Stop()
	start := time.Now()
	stopAt := start.Add(p.Wall()/2 - down/2)
	if min := start.Add(5 * time.Second); stopAt.Before(min) {
		stopAt = min
	}
	var (
		dbCPUBefore  float64 // the first influxd's CPU from the start sample to its stop
		dbPeak       int64
		writtenLife  int64 // the current influxd's write counter
		writtenPrev  int64 // the previous lives' write counters
		acked        int64
		visible      int64
		stoppedAt    time.Time
		restartedAt  time.Time
		caughtUpAt   time.Time
		visibleAt    time.Time
		loadDoneAt   time.Time
		peakBacklog  int64
		peakWAL      float64
		lastPrint    time.Time
		lastScrape   time.Time
		lastCount    time.Time
		walBacklog   float64
		walScrapeErr error
	)
	threshold := int64(2*p.Offered()) + int64(o.BatchSize)
	for {
		now := time.Now()
		dbUp := restartedAt.IsZero() == stoppedAt.IsZero()
		switch {
		case stoppedAt.IsZero() && !now.Before(stopAt):
			s, err := SampleProc(st.DB.Pid())
			if err != nil {
				return fail(fmt.Errorf("sampling influxd before the outage: %w", err))
			}
			dbCPUBefore, dbPeak = s.CPU-dbAt.CPU, s.PeakRSS
			if w, err := st.DB.PointsWritten(); err == nil {
				writtenLife = w
			}
			fmt.Fprintf(o.Progress, "citybench: outage %s %5.0fs stopping InfluxDB for %v\n", sys, now.Sub(start).Seconds(), down)
			st.DB.Stop()
			stoppedAt = time.Now()
			writtenPrev, writtenLife = writtenPrev+writtenLife, 0
			dbUp = false
		case !stoppedAt.IsZero() && restartedAt.IsZero() && now.Sub(stoppedAt) >= down:
			fmt.Fprintf(o.Progress, "citybench: outage %s %5.0fs starting InfluxDB again\n", sys, now.Sub(start).Seconds())
			if err := st.DB.restart(60 * time.Second); err != nil {
				return fail(fmt.Errorf("restarting InfluxDB: %w", err))
			}
			restartedAt = time.Now()
			res.Extra["outage_actual_s"] = round1(restartedAt.Sub(stoppedAt).Seconds())
			dbUp = true
		}
		if dbUp {
			if w, err := st.DB.PointsWritten(); err == nil {
				writtenLife = w
			}
		}
		if m := loadProgress.FindStringSubmatch(load.LastStderr()); m != nil {
			acked, _ = strconv.ParseInt(m[2], 10, 64)
		}
		if loadDoneAt.IsZero() && load.Exited() {
			loadDoneAt = time.Now()
			if s, err := loadSummary(load); err == nil {
				acked = s.Acked
			}
		}
		written := writtenPrev + writtenLife - primed // the priming's points are not the load's
		backlog := max(acked-written, 0)
		peakBacklog = max(peakBacklog, backlog)
		if !restartedAt.IsZero() && caughtUpAt.IsZero() && backlog <= threshold {
			caughtUpAt = time.Now()
		}
		if st.Admin != "" && now.Sub(lastScrape) >= time.Second {
			lastScrape = now
			if v, err := scrapeGauge(st.Admin+"/metrics", "citygw_wal_backlog_points"); err == nil {
				walBacklog, peakWAL = v, max(peakWAL, v)
			} else {
				walScrapeErr = err
			}
		}
		// Count when the write counters say every point may be there
		// (replays may count twice), then at most every two seconds; and
		// every ten seconds whatever they say, since a batch the stopped
		// influxd took after its counter's last reading is counted by no
		// reading (seen: 10,000 points short, all of them stored).
		sinceCount := now.Sub(lastCount)
		if dbUp && !loadDoneAt.IsZero() && (written >= want && sinceCount >= 2*time.Second || sinceCount >= 10*time.Second) {
			lastCount = now
			if n, err := st.DB.Count(st.DBName, measurement, countField); err == nil {
				visible = n
				if n >= want {
					visibleAt = time.Now()
				}
			}
		}
		if now.Sub(lastPrint) >= time.Second || !visibleAt.IsZero() {
			lastPrint = now
			state := "up"
			if !dbUp {
				state = "DOWN"
			}
			wal := ""
			if st.Admin != "" {
				wal = fmt.Sprintf(" WAL backlog %.0f", walBacklog)
			}
			fmt.Fprintf(o.Progress, "citybench: outage %-8s %5.0fs influxd %s acked %d written %d/%d backlog %d%s\n",
				sys, now.Sub(start).Seconds(), state, acked, written, want, backlog, wal)
		}
		if !visibleAt.IsZero() {
			break
		}
		if !loadDoneAt.IsZero() && !restartedAt.IsZero() && time.Since(loadDoneAt) > o.Timeout && time.Since(restartedAt) > o.Timeout {
			n, err := st.DB.Count(st.DBName, measurement, countField)
			if err != nil {
				return fail(fmt.Errorf("final count: %w", err))
			}
			res.Points = n
			res.Extra["lost_points"] = want - n
			res.Extra["dropped_logged"] = telegrafDropped(st)
			return fail(fmt.Errorf("%d of %d points visible %v after the publisher finished and InfluxDB returned (%d missing)", n, want, o.Timeout, want-n))
		}
		if st.SUT.Exited() {
			return fail(fmt.Errorf("%s exited during the run (log %s)", st.SUT.Name, st.SUT.LogFile))
		}
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	s1, err1 := SampleProc(st.SUT.Pid())
	s2, err2 := SampleProc(st.Broker.Pid())
	s3, err3 := SampleProc(st.DB.Pid())
	if err := firstErr(err1, err2, err3); err != nil {
		return fail(fmt.Errorf("sampling: %w", err))
	}
	res.Procs = []ProcResult{
		{Role: "system", Name: st.SUT.Name, CPUSeconds: s1.CPU - sutAt.CPU, PeakRSSMB: mb(s1.PeakRSS)},
		{Role: "broker", Name: st.Broker.Name, CPUSeconds: s2.CPU - brokerAt.CPU, PeakRSSMB: mb(s2.PeakRSS)},
		{Role: "database", Name: st.DB.Name + " (both lives)", CPUSeconds: dbCPUBefore + s3.CPU, PeakRSSMB: mb(max(dbPeak, s3.PeakRSS))},
	}
	if err := load.Wait(2 * time.Minute); err != nil {
		return fail(fmt.Errorf("publisher: %w", err))
	}
	sum, err := loadSummary(load)
	if err != nil {
		return fail(err)
	}
	res.Publisher = sum
	cpu, rss, _ := load.Usage()
	res.Procs = append(res.Procs, ProcResult{Role: "publisher", Name: "firmware-sim load", CPUSeconds: cpu, PeakRSSMB: mb(rss), Whole: true})
	res.Messages, res.FirstPublish, res.Points, res.LastVisible = sum.Acked, sum.FirstPublish, visible, visibleAt
	res.Seconds = res.LastVisible.Sub(res.FirstPublish).Seconds()
	if res.Seconds > 0 {
		res.PointsPerS = float64(res.Points) / res.Seconds
	}
	for i := range res.Procs {
		res.Procs[i].CPUPerMillion = res.Procs[i].CPUSeconds / float64(res.Points) * 1e6
	}
	res.Extra["peak_backlog_points"] = peakBacklog
	res.Extra["drain_s"] = round1(visibleAt.Sub(restartedAt).Seconds())
	if !caughtUpAt.IsZero() {
		res.Extra["catch_up_s"] = round1(caughtUpAt.Sub(restartedAt).Seconds())
	}
	res.Extra["publish_after_restart_s"] = round1(max(sum.LastAck.Sub(restartedAt).Seconds(), 0))
	res.Extra["lost_points"] = want - min(visible, want)
	if st.Admin != "" {
		if peakWAL == 0 && walScrapeErr != nil {
			res.Extra["peak_wal_backlog_points"] = "scrape failed: " + walScrapeErr.Error()
		} else {
			res.Extra["peak_wal_backlog_points"] = int64(peakWAL)
		}
	}
	if sys == SysTelegraf {
		res.Extra["dropped_logged"] = telegrafDropped(st)
	}
	return res, nil
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func loadSummary(load *Process) (LoadSummary, error) {
	var s LoadSummary
	line := lastJSONLine(load.Stdout())
	if line == "" {
		return s, fmt.Errorf("publisher printed no summary")
	}
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		return s, fmt.Errorf("publisher summary %q: %w", line, err)
	}
	return s, nil
}

// restart starts influxd again with the same configuration (data
// directory and port) after it was stopped, and waits until it answers
// /ping.
func (db *InfluxDB) restart(timeout time.Duration) error {
	if !db.Exited() {
		return fmt.Errorf("%s is still running", db.Name)
	}
	return db.start(timeout)
}

// scrapeGauge returns the value of an unlabelled metric from a Prometheus
// text exposition.
func scrapeGauge(url, name string) (float64, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no %s", url, name)
}

var droppedLine = regexp.MustCompile(`(\d+) metrics have been dropped`)

// telegrafDropped sums the metrics Telegraf's log says it dropped (buffer
// overflow).
func telegrafDropped(st *Stack) int64 {
	f, err := os.ReadFile(st.SUT.LogFile)
	if err != nil {
		return -1
	}
	var n int64
	for _, m := range droppedLine.FindAllSubmatch(f, -1) {
		k, _ := strconv.ParseInt(string(m[1]), 10, 64)
		n += k
	}
	return n
}
