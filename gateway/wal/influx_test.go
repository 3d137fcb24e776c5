package wal

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/gateway/influx"
	"github.com/citygw/citygw/gateway/testenv"
)

// drainTo runs an InfluxDB writer draining w until the test ends.
func drainTo(t testing.TB, db *testenv.InfluxDB, w *WAL) (*influx.Writer, func()) {
	t.Helper()
	return drainWith(t, db, w, 0)
}

// drainWith is drainTo with the writer's MaxInFlight (0: its default).
func drainWith(t testing.TB, db *testenv.InfluxDB, w *WAL, inFlight int) (*influx.Writer, func()) {
	t.Helper()
	wr, err := influx.NewWriter(influx.WriterConfig{URL: db.URL(), Bucket: db.Bucket(), MaxInFlight: inFlight,
		RetryInterval: yamlconf.Duration(100 * time.Millisecond), MaxRetryInterval: yamlconf.Duration(time.Second),
		DeadLetter: w.cfg.DeadLetterPath()},
		prometheus.NewRegistry(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- wr.Drain(ctx, w) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			wr.Close()
		})
	}
	t.Cleanup(stop)
	return wr, stop
}

func waitBacklog(t testing.TB, w *WAL, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for w.Stats().Backlog > 0 || w.Stats().InFlight > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("backlog not drained after %v: %+v", timeout, w.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestartDrainsBacklog: lines appended before a restart, never
// written, reach InfluxDB after it exactly once; a point InfluxDB refuses
// among them goes to the dead-letter file in the WAL directory and does not
// hold up the rest.
func TestRestartDrainsBacklog(t *testing.T) {
	db := testenv.StartInfluxDB(t)
	dir := t.TempDir()
	cfg := Config{Dir: dir, SegmentBytes: 256 << 10}
	w, _ := open(t, cfg)
	const n = 30000
	bad := "backlog,asset=a7 v=\"not an integer\" 1"
	for i := range n {
		if err := w.Append(context.Background(), fmt.Appendf(nil, "backlog,asset=a%d v=%di %d", i%50, i, int64(i+1)*int64(time.Millisecond))); err != nil {
			t.Fatal(err)
		}
		if i == 12345 { // a field type conflict: InfluxDB refuses it for good
			if err := w.Append(context.Background(), []byte(bad)); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.Close()
	w, _ = open(t, cfg)
	if st := w.Stats(); st.Backlog != n+1 || st.BacklogAge <= 0 {
		t.Fatalf("reopened: %+v", st)
	}
	wr, stop := drainTo(t, db, w)
	waitBacklog(t, w, 60*time.Second)
	stop()
	// The refused point costs ~2·log2(30000) requests of the split.
	if st := wr.Stats(); st.Written != n || st.Rejected != 1 || st.Batches > 40 {
		t.Errorf("writer: %+v, want %d written once, in big batches, 1 rejected", st, n)
	}
	if dl, err := os.ReadFile(cfg.DeadLetterPath()); err != nil || !strings.HasSuffix(string(dl), "\n"+bad+"\n") || !strings.Contains(string(dl), "field type conflict") {
		t.Errorf("dead letters in the WAL directory: %q, %v", dl, err)
	}
	if got := db.WaitCount(db.DB, "backlog", "v", n, 10*time.Second); got != n {
		t.Errorf("InfluxDB holds %d points, want %d", got, n)
	}
	if st := w.Stats(); st.Segments != 1 || st.Drained != n+1 {
		t.Errorf("after draining: %+v", st)
	}
	w.Close()
	w, _ = open(t, cfg)
	if st := w.Stats(); st.Backlog != 0 {
		t.Errorf("after another restart: %+v, want nothing to replay", st)
	}
}

// TestInfluxDBOutage: InfluxDB stopped for a while under a steady appender;
// the backlog grows, then drains to 0 after the restart, and nothing is lost.
func TestInfluxDBOutage(t *testing.T) {
	db := testenv.StartInfluxDB(t)
	w, reg := open(t, Config{Dir: t.TempDir(), SegmentBytes: 64 << 10, FlushInterval: yamlconf.Duration(100 * time.Millisecond)})
	_, stop := drainTo(t, db, w)
	var appended atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	appenderDone := make(chan struct{})
	go func() {
		defer close(appenderDone)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ctx.Err() == nil; {
			<-tick.C
			for range 10 { // ~2000 lines/s
				if err := w.Append(ctx, fmt.Appendf(nil, "outage,asset=a%d v=%di %d", i%20, i, int64(i+1)*int64(time.Millisecond))); err != nil {
					return
				}
				i++
				appended.Add(1)
			}
		}
	}()
	time.Sleep(time.Second)
	db.Stop()
	time.Sleep(3 * time.Second)
	st := w.Stats()
	// ~6000 points ~3s old; less on a loaded machine, whose ticker skips.
	if st.Backlog < 500 || st.BacklogAge < 2*time.Second {
		t.Errorf("3s into the outage: %+v, want a backlog of up to 6000 points ~3s old", st)
	}
	if got := gaugeValue(t, reg, "citygw_wal_backlog_points"); got < 500 {
		t.Errorf("citygw_wal_backlog_points = %v", got)
	}
	db.Start()
	time.Sleep(time.Second)
	cancel()
	<-appenderDone
	waitBacklog(t, w, 60*time.Second)
	if age := gaugeValue(t, reg, "citygw_wal_backlog_age_seconds"); age != 0 {
		t.Errorf("backlog age %v after draining", age)
	}
	if got := gaugeValue(t, reg, "citygw_wal_backlog_points"); got != 0 {
		t.Errorf("citygw_wal_backlog_points = %v after draining", got)
	}
	stop()
	n := int(appended.Load())
	if got := db.WaitCount(db.DB, "outage", "v", n, 10*time.Second); got != n {
		t.Errorf("InfluxDB holds %d points, want %d", got, n)
	}
}

func gaugeValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return mf.Metric[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

var _ = testutil.ToFloat64
