package mqttsub

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices"
)

// Help texts of the metrics shared with other sources. Another package that
// registers citygw_readings_total or citygw_decode_errors_total on the same
// registry must use the same help and labels (source, kind) so that either
// registration finds the other's vector.
const (
	ReadingsHelp     = "Readings decoded and handed on, by source and kind."
	DecodeErrorsHelp = "Fields or payloads that could not be decoded, by source and kind."
)

// NewReadingsTotal returns the unregistered citygw_readings_total vector.
func NewReadingsTotal() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_readings_total", Help: ReadingsHelp}, []string{"source", "kind"})
}

// NewDecodeErrorsTotal returns the unregistered citygw_decode_errors_total vector.
func NewDecodeErrorsTotal() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_decode_errors_total", Help: DecodeErrorsHelp}, []string{"source", "kind"})
}

// register registers c, or returns the collector already registered under
// the same description (a second subscriber on one registry, a subscriber
// rebuilt on reload, or a vector shared with another source).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("registering metrics: %w", err)
	}
	return c, nil
}

func registerInto[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	got, err := register(reg, c)
	if err != nil {
		*errs = append(*errs, err)
	}
	return got
}

// result is the outcome of one message, the label of citygw_mqtt_messages_total.
type result uint8

const (
	resultOK result = iota
	resultDecodeError
	resultUnknownAsset
	resultOversize
	resultRejected
	resultRateLimited
	nResults
)

var resultNames = [nResults]string{"ok", "decode_error", "unknown_asset", "oversize", "rejected", "rate_limited"}

type metrics struct {
	messages   [nResults]prometheus.Counter
	readings   []prometheus.Counter // by Asset.Seq
	decodeErrs []prometheus.Counter // by Asset.Seq
	connected  prometheus.Gauge
	reconnects prometheus.Counter
	handleDur  prometheus.Histogram
	inflight   prometheus.Gauge
	unacked    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, cfg *Config, inv *devices.Inventory) (*metrics, error) {
	var errs []error
	messages := registerInto(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "citygw_mqtt_messages_total",
		Help: "MQTT messages received, by result: ok, decode_error (some or all fields undecodable), unknown_asset, oversize, rejected (the handler refused it: not acknowledged), rate_limited (an asset over max_messages_per_asset: dropped).",
	}, []string{"result"}), &errs)
	readings := cfg.ReadingsTotal
	if readings == nil {
		readings = registerInto(reg, NewReadingsTotal(), &errs)
	}
	decodeErrs := cfg.DecodeErrorsTotal
	if decodeErrs == nil {
		decodeErrs = registerInto(reg, NewDecodeErrorsTotal(), &errs)
	}
	m := &metrics{
		connected: registerInto(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citygw_mqtt_connected",
			Help: "1 while the MQTT subscriber is connected and subscribed, else 0.",
		}), &errs),
		reconnects: registerInto(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citygw_mqtt_reconnects_total",
			Help: "MQTT connections re-established after the first.",
		}), &errs),
		handleDur: registerInto(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "citygw_mqtt_handle_duration_seconds",
			Help:    "Time the handler took to accept (or refuse) one MQTT reading, or a batch of them (up to 64, what a worker's queue held).",
			Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10), // 10µs .. 2.6s
		}), &errs),
		inflight: registerInto(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citygw_mqtt_inflight",
			Help: "MQTT messages received and not yet acknowledged or refused.",
		}), &errs),
		unacked: registerInto(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citygw_mqtt_unacked",
			Help: "MQTT messages received whose acknowledgement has not left yet: in flight in the subscriber, or handled and waiting for an older message (acknowledgements leave in arrival order). At the broker's in-flight window (max_inflight_messages) the broker stops sending.",
		}), &errs),
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for r := range nResults {
		m.messages[r] = messages.WithLabelValues(resultNames[r])
	}
	byKind := map[string][2]prometheus.Counter{}
	m.readings = make([]prometheus.Counter, len(inv.Assets))
	m.decodeErrs = make([]prometheus.Counter, len(inv.Assets))
	for _, a := range inv.Assets {
		if a.Profile == nil || a.Profile.Transport != devices.MQTT {
			continue
		}
		c, ok := byKind[a.Kind]
		if !ok {
			c = [2]prometheus.Counter{readings.WithLabelValues("mqtt", a.Kind), decodeErrs.WithLabelValues("mqtt", a.Kind)}
			byKind[a.Kind] = c
		}
		m.readings[a.Seq], m.decodeErrs[a.Seq] = c[0], c[1]
	}
	return m, nil
}
