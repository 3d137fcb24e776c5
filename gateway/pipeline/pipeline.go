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

// BatchLineWriter is a LineWriter that also takes several lines in one call
// (the write-ahead log: one write for all of them). AddBatch copies the lines.
type BatchLineWriter interface {
	LineWriter
	AddBatch(ctx context.Context, lines [][]byte) error
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
	batch sync.Pool // *batchBuf

	points  prometheus.Counter
	empty   prometheus.Counter
	refused prometheus.Counter
}

// New returns a pipeline. rules may be nil (telemetry only).
func New(enc Encoder, w LineWriter, rules Evaluator, reg prometheus.Registerer) (*Pipeline, error) {
	p := &Pipeline{
		enc: enc, w: w, rules: rules,
		bufs:  sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }},
		batch: sync.Pool{New: func() any { return new(batchBuf) }},
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

// batchBuf holds a batch's encoded lines: one buffer, and the lines as
// slices of it.
type batchBuf struct {
	buf   []byte
	ends  []int
	lines [][]byte
}

// HandleBatch is Handle for several readings: it encodes them, hands the
// lines to the writer in one AddBatch call when the writer takes batches
// (else line by line), and then shows each reading to the rules, in order.
// An error means the batch was not accepted as a whole (some lines may have
// been written) and the source should acknowledge none of it.
func (p *Pipeline) HandleBatch(ctx context.Context, rs []*devices.Reading) error {
	bw, ok := p.w.(BatchLineWriter)
	if !ok {
		for _, r := range rs {
			if err := p.Handle(ctx, r); err != nil {
				return err
			}
		}
		return nil
	}
	b := p.batch.Get().(*batchBuf)
	b.buf, b.ends, b.lines = b.buf[:0], b.ends[:0], b.lines[:0]
	empty := 0
	for _, r := range rs {
		n := len(b.buf)
		b.buf = p.enc.Append(b.buf, r)
		if len(b.buf) == n {
			empty++
			continue
		}
		b.ends = append(b.ends, len(b.buf))
	}
	start := 0
	for _, end := range b.ends { // b.buf has stopped moving
		b.lines = append(b.lines, b.buf[start:end])
		start = end
	}
	err := bw.AddBatch(ctx, b.lines)
	p.empty.Add(float64(empty))
	if err != nil {
		p.refused.Add(float64(len(b.lines)))
	} else {
		p.points.Add(float64(len(b.lines)))
	}
	p.batch.Put(b)
	if err != nil {
		return fmt.Errorf("writing a batch of %d readings: %w", len(rs), err)
	}
	if p.rules != nil {
		for _, r := range rs {
			p.rules.Eval(ctx, r)
		}
	}
	return nil
}
