package wal

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	appends      prometheus.Counter
	appendDur    prometheus.Histogram
	fsyncDur     prometheus.Histogram
	drained      prometheus.Counter
	dropped      prometheus.Counter
	corrupt      prometheus.Counter
	recoveries   prometheus.Counter
	appendErrors prometheus.Counter
	fullErrors   prometheus.Counter
	fsyncErrors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, w *WAL) (metrics, error) {
	m := metrics{
		appends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citygw_wal_appends_total", Help: "Lines appended to the write-ahead log.",
		}),
		appendDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "citygw_wal_append_duration_seconds", Help: "Time one Append took, waiting for its group's write (and fsync with sync: always) included.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12),
		}),
		fsyncDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "citygw_wal_fsync_duration_seconds", Help: "Duration of one fsync of the current segment.",
			Buckets: prometheus.ExponentialBuckets(1e-5, 4, 10),
		}),
		drained: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citygw_wal_drain_points_total", Help: "Points acknowledged by the InfluxDB writer (its rate is the drain rate).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citygw_wal_dropped_points_total", Help: "Points deleted unwritten because the log was full (on_full: drop_oldest).",
		}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citygw_wal_corrupt_records_total", Help: "Unreadable regions (a torn tail or a corrupt record) skipped in the log.",
		}),
		recoveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citygw_wal_recoveries_total", Help: "Opens that had to repair the log (cut a torn tail or skip corrupt records).",
		}),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citygw_wal_append_errors_total", Help: "Appends that failed: a write error, or a wait for space (full disk, backlog at max_bytes) that ended with the caller's context or the log's close.",
		}),
		fullErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citygw_wal_disk_full_errors_total", Help: "Writes, fsyncs and segment creations that failed for lack of disk space (each is retried).",
		}),
		fsyncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citygw_wal_fsync_errors_total", Help: "Background fsyncs that failed (logged and retried).",
		}),
	}
	gauge := func(name, help string, f func(s *Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			s := w.Stats()
			return f(&s)
		})
	}
	cs := []prometheus.Collector{m.appends, m.appendDur, m.fsyncDur, m.drained, m.dropped, m.corrupt, m.recoveries, m.appendErrors, m.fullErrors, m.fsyncErrors,
		gauge("citygw_wal_appends_waiting", "Appends waiting for space (full disk, or backlog at max_bytes): their lines are not written, so not acknowledged to their sources.", func(s *Stats) float64 { return float64(s.Waiting) }),
		gauge("citygw_wal_bytes", "Bytes of segment files on disk.", func(s *Stats) float64 { return float64(s.Bytes) }),
		gauge("citygw_wal_segments", "Segment files on disk.", func(s *Stats) float64 { return float64(s.Segments) }),
		gauge("citygw_wal_backlog_points", "Points appended and not yet acknowledged by the InfluxDB writer.", func(s *Stats) float64 { return float64(s.Backlog) }),
		gauge("citygw_wal_backlog_age_seconds", "Age of the oldest unacknowledged point (0 when there is none).", func(s *Stats) float64 { return s.BacklogAge.Seconds() }),
		gauge("citygw_wal_disk_full", "1 while writes fail for lack of disk space.", func(s *Stats) float64 {
			if s.DiskFull {
				return 1
			}
			return 0
		}),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return m, fmt.Errorf("registering WAL metrics: %w", err)
		}
	}
	return m, nil
}
