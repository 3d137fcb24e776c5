// Package pipeline is where every decoded reading goes: it encodes the
// reading as one InfluxDB line, hands the line to the telemetry writer and,
// once the writer has accepted it, shows the reading to the rule engine.
// Sources (the Modbus poller, the MQTT subscriber) call Handle; it is safe
// for concurrent use and allocates nothing per reading once warm.
package pipeline

import (
	"context"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices"
)

// LineWriter takes encoded line-protocol lines; Add copies the line.
type LineWriter interface {
	Add(ctx context.Context, line []byte) error
}

// Encoder appends one reading as a line-protocol line.
type Encoder interface {
	Append(dst []byte, r *devices.Reading) []byte
}

// Evaluator sees every accepted reading, in arrival order per asset.
type Evaluator interface {
	Eval(ctx context.Context, r *devices.Reading)
}

// Pipeline connects sources to the writer and the rules.
type Pipeline struct {
	enc   Encoder
	w     LineWriter
	rules Evaluator // may be nil
	bufs  sync.Pool

	points  prometheus.Counter
	empty   prometheus.Counter
	refused prometheus.Counter
}

// New returns a pipeline. rules may be nil (telemetry only).
func New(enc Encoder, w LineWriter, rules Evaluator, reg prometheus.Registerer) (*Pipeline, error) {
	p := &Pipeline{
		enc: enc, w: w, rules: rules,
		bufs: sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }},
		points: prometheus.NewCounter(prometheus.CounterOpts{Name: "citygw_pipeline_points_total",
			Help: "Readings encoded and accepted by the telemetry writer."}),
		empty: prometheus.NewCounter(prometheus.CounterOpts{Name: "citygw_pipeline_empty_readings_total",
			Help: "Readings with no valid field (nothing to write; still shown to the rules)."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "citygw_pipeline_refused_total",
			Help: "Readings the telemetry writer did not accept (the source is told, MQTT does not acknowledge)."}),
	}
	for _, c := range []prometheus.Collector{p.points, p.empty, p.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering pipeline metrics: %w", err)
		}
	}
	return p, nil
}

// SetRules replaces the rule evaluator (nil disables rules). Not safe to call
// concurrently with Handle; set it before the sources start.
func (p *Pipeline) SetRules(e Evaluator) { p.rules = e }

// Handle encodes r, writes it and evaluates the rules. It does not retain r.
// An error means the reading was not accepted and the source should not
// acknowledge it.
func (p *Pipeline) Handle(ctx context.Context, r *devices.Reading) error {
	bp := p.bufs.Get().(*[]byte)
	line := p.enc.Append((*bp)[:0], r)
	var err error
	if len(line) == 0 {
		p.empty.Inc()
	} else if err = p.w.Add(ctx, line); err != nil {
		p.refused.Inc()
	} else {
		p.points.Inc()
	}
	*bp = line[:0]
	p.bufs.Put(bp)
	if err != nil {
		return fmt.Errorf("writing reading of %s: %w", r.Asset.ID, err)
	}
	if p.rules != nil {
		p.rules.Eval(ctx, r)
	}
	return nil
}
