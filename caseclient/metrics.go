package caseclient

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	opened     *prometheus.CounterVec
	updated    *prometheus.CounterVec
	failed     *prometheus.CounterVec
	delivery   *prometheus.HistogramVec
	sinkUp     *prometheus.GaugeVec
	throttled  *prometheus.CounterVec
	ignored    *prometheus.CounterVec
	reconciled *prometheus.CounterVec
	attached   *prometheus.CounterVec
	duplicates *prometheus.CounterVec
	dead       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, depth, oldest func() float64) (*metrics, error) {
	m := &metrics{
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_cases_opened_total",
			Help: "Cases the case system accepted, by sink."}, []string{"sink"}),
		updated: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_cases_updated_total",
			Help: "Case updates (including \"cleared\") the case system accepted, by sink."}, []string{"sink"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_cases_failed_total",
			Help: "Failed delivery attempts by sink and reason; reason rejected/gone/undeliverable are dead letters, the rest are retried."},
			[]string{"sink", "reason"}),
		delivery: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "citygw_case_delivery_duration_seconds",
			Help:    "Time from an operation entering the outbox to the case system accepting it.",
			Buckets: []float64{0.01, 0.05, 0.25, 1, 5, 30, 120, 600, 3600, 6 * 3600}}, []string{"sink"}),
		sinkUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "citygw_case_sink_up",
			Help: "1 when the sink's circuit breaker is closed and the sink is enabled."}, []string{"sink"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_cases_throttled_total",
			Help: "New cases held back in the outbox by the flood caps (delivered later, not dropped), by rule and sink."},
			[]string{"rule", "sink"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_case_transitions_ignored_total",
			Help: "Episode transitions that open nothing, by why (pending, cancelled, shadow, unknown_episode, duplicate)."},
			[]string{"why"}),
		reconciled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_case_reconciled_total",
			Help: "Operations found already on the case system by a lookup after an ambiguous attempt (a duplicate avoided), by sink."},
			[]string{"sink"}),
		attached: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_cases_attached_total",
			Help: "Episodes attached to an open case of the same anomaly instead of opening one (replicas mode), by sink and how: lookup (found before posting) or desk (the case system answered with its open case)."},
			[]string{"sink", "how"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_cases_duplicate_total",
			Help: "Cases this replica opened although another open case of the same anomaly exists (replicas mode, a case system without per-anomaly uniqueness), by sink."},
			[]string{"sink"}),
		dead: prometheus.NewGauge(prometheus.GaugeOpts{Name: "citygw_case_dead_letters",
			Help: "Operations in the outbox's dead-letter bucket."}),
	}
	cs := []prometheus.Collector{m.opened, m.updated, m.failed, m.delivery, m.sinkUp, m.throttled, m.ignored, m.reconciled, m.attached, m.duplicates, m.dead,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "citygw_case_outbox_depth",
			Help: "Operations waiting in the case outbox."}, depth),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "citygw_case_outbox_oldest_seconds",
			Help: "Age of the oldest operation waiting in the case outbox (0 when empty)."}, oldest),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering case client metrics: %w", err)
		}
	}
	return m, nil
}
