package modbuspoll

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the poller's Prometheus collectors. citygw_readings_total and
// citygw_decode_errors_total are shared with the other sources (label
// source); if another source registered them first, theirs are used.
type metrics struct {
	requests      *prometheus.CounterVec   // endpoint, result
	requestErrors *prometheus.CounterVec   // endpoint, reason
	duration      *prometheus.HistogramVec // endpoint
	perPoll       *prometheus.GaugeVec     // asset
	polls         *prometheus.CounterVec   // result
	deviceUp      *prometheus.GaugeVec     // asset
	devicesUp     prometheus.Gauge
	devices       prometheus.Gauge
	decodeErrors  *prometheus.CounterVec // source, kind
	readings      *prometheus.CounterVec // source, kind
	lag           prometheus.Histogram
	handlerErrors *prometheus.CounterVec // kind
}

// Request results (label result of citygw_modbus_requests_total).
const (
	resultOK        = "ok"
	resultTimeout   = "timeout"
	resultException = "exception"
	resultError     = "error"
)

// Poll results (label result of citygw_modbus_polls_total).
const (
	pollOK      = "ok"      // every request answered
	pollPartial = "partial" // some requests answered
	pollFailed  = "failed"  // none answered (or no connection)
)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citygw_modbus_requests_total",
			Help: "Modbus read requests by endpoint and result (ok, timeout, exception, error).",
		}, []string{"endpoint", "result"}),
		requestErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citygw_modbus_request_errors_total",
			Help: "Failed Modbus read requests by endpoint and reason: timeout, connection, transaction_id, protocol_id, unit_id, function_code, byte_count, length, crc, malformed, exception_<name>.",
		}, []string{"endpoint", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "citygw_modbus_request_duration_seconds",
			Help:    "Time from sending a Modbus request to its reply or failure.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"endpoint"}),
		perPoll: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "citygw_modbus_requests_per_poll",
			Help: "Modbus requests the last poll of the asset issued.",
		}, []string{"asset"}),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citygw_modbus_polls_total",
			Help: "Device polls by result: ok (all requests answered), partial, failed.",
		}, []string{"result"}),
		deviceUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "citygw_modbus_device_up",
			Help: "1 if the Modbus device answered its recent polls, 0 if it is offline.",
		}, []string{"asset"}),
		devicesUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citygw_modbus_devices_up",
			Help: "Modbus devices currently up.",
		}),
		devices: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citygw_modbus_devices",
			Help: "Modbus devices being polled.",
		}),
		decodeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citygw_decode_errors_total",
			Help: "Fields or payloads that could not be decoded, by source and kind.",
		}, []string{"source", "kind"}),
		readings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citygw_readings_total",
			Help: "Readings decoded and handed on, by source and kind.",
		}, []string{"source", "kind"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "citygw_modbus_poll_lag_seconds",
			Help:    "How late a device poll started versus its schedule.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		handlerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citygw_modbus_handler_errors_total",
			Help: "Modbus readings the pipeline refused, by kind.",
		}, []string{"kind"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	reuse := func(dst any) {
		if err != nil {
			return
		}
		switch p := dst.(type) {
		case **prometheus.CounterVec:
			*p, err = register(reg, *p)
		case **prometheus.GaugeVec:
			*p, err = register(reg, *p)
		case **prometheus.HistogramVec:
			*p, err = register(reg, *p)
		case *prometheus.Gauge:
			*p, err = register(reg, *p)
		case *prometheus.Histogram:
			*p, err = register(reg, *p)
		}
	}
	for _, dst := range []any{&m.requests, &m.requestErrors, &m.duration, &m.perPoll, &m.polls, &m.deviceUp, &m.devicesUp,
		&m.devices, &m.decodeErrors, &m.readings, &m.lag, &m.handlerErrors} {
		reuse(dst)
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector registered before under
// the same description: citygw_readings_total and citygw_decode_errors_total
// are shared with the other sources, and a poller made after a configuration
// reload takes over its predecessor's collectors.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("registering modbus metrics: %w", err)
	}
	return c, nil
}
