package influx

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices/yamlconf"
)

// WriterConfig configures a Writer. Zero fields take the defaults below.
type WriterConfig struct {
	// URL of the InfluxDB HTTP API, e.g. http://127.0.0.1:8086.
	URL string `yaml:"url"`
	// Bucket is "database/retention-policy" for InfluxDB 1.8 ("database"
	// alone means its default retention policy), a bucket name for 2.x.
	Bucket string `yaml:"bucket"`
	// Org is required by InfluxDB 2.x and ignored by 1.8.
	Org string `yaml:"org,omitempty"`
	// Token is sent as "Authorization: Token …": a 2.x token, or
	// "user:password" for 1.8 with auth on, or empty. The caller resolves it
	// from the environment or a file; it is never logged.
	Token string `yaml:"-"`
	// TLS configures https connections (nil: system roots).
	TLS *tls.Config `yaml:"-"`

	BatchSize         int               `yaml:"batch_size,omitempty"`          // lines per request, default 5000
	FlushInterval     yamlconf.Duration `yaml:"flush_interval,omitempty"`      // oldest line's age that forces a request, default 1s
	MaxPendingBatches int               `yaml:"max_pending_batches,omitempty"` // full batches waiting in memory before Add blocks, default 16
	Timeout           yamlconf.Duration `yaml:"timeout,omitempty"`             // per request, default 30s
	RetryInterval     yamlconf.Duration `yaml:"retry_interval,omitempty"`      // first retry delay, default 500ms, doubling per attempt
	MaxRetryInterval  yamlconf.Duration `yaml:"max_retry_interval,omitempty"`  // retry delay cap, default 5s: a recovered InfluxDB is found within seconds, and a retry of a down one costs one refused connection
	MaxRetryAfter     yamlconf.Duration `yaml:"max_retry_after,omitempty"`     // cap on a server's Retry-After, default 5m
	ShutdownGrace     yamlconf.Duration `yaml:"shutdown_grace,omitempty"`      // how long Run keeps writing after its context ends, default 10s
	HealthInterval    yamlconf.Duration `yaml:"health_interval,omitempty"`     // ping InfluxDB when idle this long, default 10s
	// DeadLetter is the file that points InfluxDB refuses for good are
	// appended to, each run after a "# time HTTP status: message" comment
	// line (the WAL's dir/dead_letter.lp); empty: they are only counted and
	// logged.
	DeadLetter string `yaml:"dead_letter,omitempty"`
	// MaxInFlight is how many batches may be written at once, default 2.
	// InfluxDB 1.8 handles a write request on one goroutine: with one
	// request at a time it used about one core of two for our points and
	// sat idle while the next batch was cut, and a 1,000,000-message burst
	// took 75 s to land against 58 s with two (citybench burst). Batches are
	// still handed back to their source in order; InfluxDB does not care in
	// which order it gets points (one per series and timestamp).
	MaxInFlight int `yaml:"max_in_flight,omitempty"`
	// DisableGzip sends bodies uncompressed (gzip is on by default).
	// influxd 1.8 enforces its max-body-size (413) only on uncompressed
	// requests; proxies and InfluxDB 2.x enforce theirs on any.
	DisableGzip bool `yaml:"disable_gzip,omitempty"`
	// GzipLevel is the compression level, 1 (fastest, the default) to 9
	// (smallest). On a LAN the fastest level is the right trade: it costs
	// about a third of the CPU of the default level (6) for bodies about a
	// fifth larger (BenchmarkGzip); raise it for a slow uplink.
	GzipLevel          int   `yaml:"gzip_level,omitempty"`
	DeadLetterMaxBytes int64 `yaml:"dead_letter_max_bytes,omitempty"` // default 64MiB; beyond it refused points are only counted
}

func (c *WriterConfig) setDefaults() {
	def := func(d *yamlconf.Duration, v time.Duration) {
		if *d <= 0 {
			*d = yamlconf.Duration(v)
		}
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 5000
	}
	if c.MaxPendingBatches <= 0 {
		c.MaxPendingBatches = 16
	}
	def(&c.FlushInterval, time.Second)
	def(&c.Timeout, 30*time.Second)
	def(&c.RetryInterval, 500*time.Millisecond)
	def(&c.MaxRetryInterval, 5*time.Second)
	def(&c.MaxRetryAfter, 5*time.Minute)
	def(&c.ShutdownGrace, 10*time.Second)
	def(&c.HealthInterval, 10*time.Second)
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 2
	}
	if c.DeadLetterMaxBytes <= 0 {
		c.DeadLetterMaxBytes = 64 << 20
	}
	if c.GzipLevel == 0 {
		c.GzipLevel = gzip.BestSpeed
	}
}

// Stats is a snapshot of a Writer's counters.
type Stats struct {
	Accepted  int64     // lines taken by Add (or from a source)
	Written   int64     // points InfluxDB accepted
	Rejected  int64     // points InfluxDB refused for good (bad point, type conflict)
	Dropped   int64     // points given up at shutdown
	Queued    int64     // points accepted by Add and not yet written, rejected or dropped
	Batches   int64     // requests InfluxDB answered with success or a partial write
	Errors    int64     // failed write attempts
	Retries   int64     // write attempts repeated after a failure
	LastError string    // the last failed or rejected write, "" after a success
	LastWrite time.Time // the last successful request
}

// Writer sends batches of line protocol to InfluxDB. Lines given to Add wait
// in a bounded memory queue; Run drains it. Safe for concurrent use.
type Writer struct {
	cfg    WriterConfig
	log    *slog.Logger
	client influxdb2.Client
	http   http2.Service // the client's HTTP service: auth, user agent, error decoding
	url    string        // the v2 write endpoint with org, bucket and precision
	gzips  sync.Pool     // *gzip.Writer at cfg.GzipLevel
	queue  *memQueue
	m      metrics

	accepted, written, rejected, dropped, batches, errs, retries, queued atomic.Int64
	healthy                                                              atomic.Bool
	lastAttempt                                                          atomic.Int64 // unix ns

	mu        sync.Mutex
	lastErr   string
	lastWrite time.Time
	progress  chan struct{} // closed and replaced whenever a batch is finished

	dlMu         sync.Mutex
	dlFile       *os.File
	dlSize       int64
	dlFullLogged bool
}

type metrics struct {
	written  prometheus.Counter
	rejected prometheus.Counter
	dropped  prometheus.Counter
	errors   *prometheus.CounterVec
	retries  prometheus.Counter
	duration prometheus.Histogram
	batch    prometheus.Histogram
	queue    prometheus.Gauge
	up       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	failed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "citygw_influx_points_failed_total",
		Help: "Points not written: rejected by InfluxDB for good, or dropped by the writer at shutdown.",
	}, []string{"reason"})
	m := metrics{
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citygw_influx_points_written_total",
			Help: "Points InfluxDB accepted.",
		}),
		rejected: failed.WithLabelValues("rejected"),
		dropped:  failed.WithLabelValues("dropped"),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citygw_influx_write_errors_total",
			Help: "Failed write requests by HTTP status code (\"network\" when there was no answer).",
		}, []string{"code"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citygw_influx_write_retries_total",
			Help: "Write requests repeated after a failure.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "citygw_influx_write_duration_seconds",
			Help:    "Duration of one write request, successful or not.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "citygw_influx_batch_points",
			Help:    "Points per write request.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9),
		}),
		queue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citygw_influx_queue_points",
			Help: "Points accepted and not yet written, rejected or dropped.",
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citygw_influx_up",
			Help: "1 when the last write or ping reached InfluxDB, else 0.",
		}),
	}
	for _, c := range []prometheus.Collector{m.written, failed, m.errors, m.retries, m.duration, m.batch, m.queue, m.up} {
		if err := reg.Register(c); err != nil {
			return m, fmt.Errorf("registering InfluxDB writer metrics: %w", err)
		}
	}
	return m, nil
}

// NewWriter checks cfg and returns a Writer; nothing is sent until Run.
func NewWriter(cfg WriterConfig, reg prometheus.Registerer, log *slog.Logger) (*Writer, error) {
	if cfg.URL == "" {
		return nil, errors.New("influx writer: url is required")
	}
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		return nil, fmt.Errorf("influx writer: url %q must start with http:// or https://", cfg.URL)
	}
	if cfg.Bucket == "" {
		return nil, errors.New("influx writer: bucket is required (\"database/retention-policy\" for InfluxDB 1.8)")
	}
	cfg.setDefaults()
	if cfg.GzipLevel < gzip.BestSpeed || cfg.GzipLevel > gzip.BestCompression {
		return nil, fmt.Errorf("influx writer: gzip_level %d: want 1 (fastest) to 9 (smallest)", cfg.GzipLevel)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	opts := influxdb2.DefaultOptions().
		SetPrecision(time.Nanosecond).
		SetHTTPRequestTimeout(uint((cfg.Timeout.D() + time.Second - 1) / time.Second)).
		SetLogLevel(0). // errors only; this writer logs its own failures
		SetApplicationName("citygw").
		// The blocking API without batching sends each call once: no client
		// side buffer that could drop data, no retries behind our back.
		SetMaxRetries(0)
	if cfg.TLS != nil {
		opts.SetTLSConfig(cfg.TLS)
	}
	client := influxdb2.NewClientWithOptions(cfg.URL, cfg.Token, opts)
	q := url.Values{}
	q.Set("org", cfg.Org)
	q.Set("bucket", cfg.Bucket)
	q.Set("precision", "ns")
	w := &Writer{
		cfg:      cfg,
		log:      log.With("url", redactURL(cfg.URL), "bucket", cfg.Bucket),
		client:   client,
		http:     client.HTTPService(),
		url:      client.HTTPService().ServerAPIURL() + "write?" + q.Encode(),
		queue:    newMemQueue(cfg.BatchSize, cfg.MaxPendingBatches, cfg.FlushInterval.D()),
		m:        m,
		progress: make(chan struct{}),
	}
	return w, nil
}

// Add copies one line of line protocol (with or without its trailing
// newline) into the current batch. When MaxPendingBatches full batches are
// already waiting, because InfluxDB is slow or down, Add blocks until one is
// written or ctx ends: that is the writer's backpressure. Once Run has
// returned, Add fails with ErrClosed.
func (w *Writer) Add(ctx context.Context, line []byte) error {
	waited, err := w.queue.add(ctx, line)
	if waited && err == nil {
		w.log.Debug("InfluxDB writer queue was full; the caller waited")
	}
	if err != nil {
		return err
	}
	w.accepted.Add(1)
	w.queued.Add(1)
	w.m.queue.Inc()
	return nil
}

// Run drains the writer's own queue until ctx ends, then seals and writes
// what is left for up to ShutdownGrace; points it cannot write in that time
// are counted as dropped. From the start of that shutdown, Add fails with
// ErrClosed.
// Run returns nil after a clean shutdown.
func (w *Writer) Run(ctx context.Context) error {
	return w.drain(ctx, w.queue, w.queue.close)
}

// Drain writes the batches of src in order until ctx ends, then takes what
// src has left (Next with flush) for up to ShutdownGrace. A batch is handed
// back to src.Done only when InfluxDB has accepted it, rejected it for good,
// or the grace period ran out (written false). Failures in between are
// retried with exponential backoff and jitter, honouring Retry-After.
func (w *Writer) Drain(ctx context.Context, src BatchSource) error {
	return w.drain(ctx, src, nil)
}

// drain is Drain; stop, when set, is called once ctx has ended and before
// the last batches are taken, so that nothing is added after them.
func (w *Writer) drain(ctx context.Context, src BatchSource, stop func()) error {
	sendCtx, cancelSend := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSend()
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-ctx.Done():
		case <-finished:
			return
		}
		t := time.NewTimer(w.cfg.ShutdownGrace.D())
		defer t.Stop()
		select {
		case <-t.C:
			cancelSend()
		case <-finished:
		}
	}()
	go w.healthLoop(sendCtx)

	// Batches of another source were not counted by Add: count them as
	// accepted when taken, so that the queue gauge stays balanced.
	own := src == BatchSource(w.queue)
	take := func(b *Batch) {
		if !own {
			w.accepted.Add(int64(b.Points))
			w.queued.Add(int64(b.Points))
			w.m.queue.Add(float64(b.Points))
		}
	}
	w.ping(ctx)
	p := w.newPipeline(src)
	for {
		b, err := src.Next(ctx, false)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			p.wait()
			return fmt.Errorf("reading the next batch for InfluxDB: %w", err)
		}
		if b == nil {
			continue
		}
		take(b)
		p.send(sendCtx, b)
	}
	p.wait()
	// Shutdown: write what is left while the grace period lasts; what is
	// still left after it is counted as dropped.
	if stop != nil {
		stop()
	}
	for {
		b, err := src.Next(sendCtx, true)
		if err != nil || b == nil {
			break
		}
		take(b)
		src.Done(b, w.send(sendCtx, b))
	}
	return nil
}

// pipeline sends up to MaxInFlight batches at once and hands them back to
// their source in the order it gave them out.
type pipeline struct {
	w     *Writer
	src   BatchSource
	slots chan struct{}
	order chan *job
	done  chan struct{}
}

type job struct {
	b  *Batch
	ok chan bool
}

func (w *Writer) newPipeline(src BatchSource) *pipeline {
	p := &pipeline{w: w, src: src}
	if n := w.cfg.MaxInFlight; n > 1 {
		p.slots = make(chan struct{}, n)
		p.order = make(chan *job, n)
		p.done = make(chan struct{})
		go func() {
			defer close(p.done)
			for j := range p.order {
				p.src.Done(j.b, <-j.ok)
				<-p.slots
			}
		}()
	}
	return p
}

// send writes b (waiting for a free slot); with one slot it is synchronous.
func (p *pipeline) send(ctx context.Context, b *Batch) {
	if p.slots == nil {
		p.src.Done(b, p.w.send(ctx, b))
		return
	}
	p.slots <- struct{}{}
	j := &job{b: b, ok: make(chan bool, 1)}
	p.order <- j
	go func() { j.ok <- p.w.send(ctx, b) }()
}

// wait waits until every batch sent is handed back.
func (p *pipeline) wait() {
	if p.slots == nil {
		return
	}
	close(p.order)
	<-p.done
}

// send writes one batch, retrying until InfluxDB answers for good or ctx
// ends. A permanent refusal (400, 413) splits the batch in halves, again and
// again, so that only the points InfluxDB refuses on their own are
// dead-lettered. It reports whether the batch was dealt with (written, or
// partly written and the rest dead-lettered); false when ctx ended first.
func (w *Writer) send(ctx context.Context, b *Batch) bool {
	if b.Points == 0 {
		return true
	}
	r := w.sendLines(ctx, b.Lines, b.Points, 0)
	if !r.done {
		w.finish(b.Points, r.written, r.rejected, b.Points-r.written-r.rejected)
		w.log.Error("InfluxDB writer gave up on a batch at shutdown", "points", b.Points-r.written-r.rejected)
		return false
	}
	if r.rejected > 0 {
		w.setHealthy(true, r.msg) // keep the refusal as the last error
	}
	w.finish(b.Points, r.written, r.rejected, 0)
	if r.rejected > 0 {
		w.log.Error("InfluxDB refused points for good; they are dead-lettered",
			"status", r.status, "error", r.msg, "points", b.Points, "rejected", r.rejected, "requests", r.requests,
			"dead_letter", w.cfg.DeadLetter)
	}
	return true
}

// sendResult is what became of a run of lines.
type sendResult struct {
	written, rejected int
	done              bool // false: ctx ended first
	requests          int
	status            int    // of the last refusal
	msg               string // of the last refusal
}

func (r *sendResult) add(o sendResult) {
	r.written += o.written
	r.rejected += o.rejected
	r.requests += o.requests
	r.done = o.done
	if o.msg != "" {
		r.status, r.msg = o.status, o.msg
	}
}

// sendLines writes points lines (whole lines), retrying failures; on a
// permanent refusal it bisects. depth is the split level, for the log.
func (w *Writer) sendLines(ctx context.Context, lines []byte, points, depth int) sendResult {
	var res sendResult
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return res
		}
		start := time.Now()
		w.lastAttempt.Store(start.UnixNano())
		err := w.post(ctx, lines)
		res.requests++
		w.m.duration.Observe(time.Since(start).Seconds())
		if err == nil {
			w.setHealthy(true, "")
			w.m.batch.Observe(float64(points))
			w.batches.Add(1)
			if attempt > 0 {
				w.log.Info("InfluxDB write succeeded after retries", "points", points, "attempts", attempt+1)
			}
			res.written, res.done = points, true
			return res
		}
		if ctx.Err() != nil {
			continue // reported by the caller
		}
		status, retryAfter, msg := classify(err)
		code := "network"
		if status != 0 {
			code = strconv.Itoa(status)
		}
		w.m.errors.WithLabelValues(code).Inc()
		w.errs.Add(1)
		if permanent(status) {
			w.setHealthy(true, msg) // reachable, but the points were refused
			w.m.batch.Observe(float64(points))
			w.batches.Add(1)
			// Refused as a whole (one point, or a partial write that
			// dropped every point): dead-letter it all. Else split.
			if points == 1 || strings.Contains(msg, "partial write") && rejectedPoints(msg, points) == points && status != http.StatusRequestEntityTooLarge {
				w.deadLetter(lines, status, msg)
				res.rejected, res.done, res.status, res.msg = points, true, status, msg
				return res
			}
			w.log.Debug("InfluxDB refused a batch; splitting it", "status", status, "error", msg, "points", points, "depth", depth)
			half := points / 2
			mid := lineOffset(lines, half)
			res.add(w.sendLines(ctx, lines[:mid], half, depth+1))
			if !res.done {
				return res
			}
			res.add(w.sendLines(ctx, lines[mid:], points-half, depth+1))
			return res
		}
		w.setHealthy(false, err.Error())
		delay := w.backoff(attempt)
		if retryAfter > 0 {
			delay = min(retryAfter, w.cfg.MaxRetryAfter.D())
		}
		level := slog.LevelWarn
		if attempt > 0 {
			level = slog.LevelDebug
		}
		w.log.Log(ctx, level, "InfluxDB write failed; retrying",
			"status", code, "error", msg, "points", points, "attempt", attempt+1, "retry_in", delay)
		w.retries.Add(1)
		w.m.retries.Inc()
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// lineOffset returns the offset in lines just after its n-th newline.
func lineOffset(lines []byte, n int) int {
	off := 0
	for range n {
		i := bytes.IndexByte(lines[off:], '\n')
		if i < 0 {
			return len(lines)
		}
		off += i + 1
	}
	return off
}

// deadLetter appends refused lines to the dead-letter file, after a comment
// line with the time and the server's answer. Without a file, or once the
// file has reached DeadLetterMaxBytes, the lines are only counted (and the
// refusal logged by send).
func (w *Writer) deadLetter(lines []byte, status int, msg string) {
	if w.cfg.DeadLetter == "" {
		return
	}
	w.dlMu.Lock()
	defer w.dlMu.Unlock()
	if w.dlFile == nil {
		f, err := os.OpenFile(w.cfg.DeadLetter, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			w.log.Error("cannot open the dead-letter file", "file", w.cfg.DeadLetter, "error", err)
			return
		}
		st, err := f.Stat()
		if err == nil {
			w.dlSize = st.Size()
		}
		w.dlFile = f
	}
	comment := fmt.Sprintf("# %s InfluxDB HTTP %d: %s\n", time.Now().UTC().Format(time.RFC3339), status,
		strings.Join(strings.Fields(msg), " "))
	size := int64(len(comment) + len(lines) + 1)
	if w.dlSize+size > int64(w.cfg.DeadLetterMaxBytes) {
		if !w.dlFullLogged {
			w.dlFullLogged = true
			w.log.Error("dead-letter file is full; further refused points are only counted", "file", w.cfg.DeadLetter,
				"max_bytes", w.cfg.DeadLetterMaxBytes)
		}
		return
	}
	buf := make([]byte, 0, size)
	buf = append(buf, comment...)
	buf = append(buf, lines...)
	if len(lines) > 0 && lines[len(lines)-1] != '\n' {
		buf = append(buf, '\n')
	}
	if _, err := w.dlFile.Write(buf); err != nil {
		w.log.Error("cannot write the dead-letter file", "file", w.cfg.DeadLetter, "error", err)
		return
	}
	w.dlSize += int64(len(buf))
}

// finish accounts for a batch that is done with.
func (w *Writer) finish(points, written, rejected, dropped int) {
	w.written.Add(int64(written))
	w.rejected.Add(int64(rejected))
	w.dropped.Add(int64(dropped))
	w.m.written.Add(float64(written))
	w.m.rejected.Add(float64(rejected))
	w.m.dropped.Add(float64(dropped))
	w.queued.Add(-int64(points))
	w.m.queue.Sub(float64(points))
	w.mu.Lock()
	close(w.progress)
	w.progress = make(chan struct{})
	w.mu.Unlock()
}

func (w *Writer) setHealthy(ok bool, errText string) {
	w.healthy.Store(ok)
	if ok {
		w.m.up.Set(1)
	} else {
		w.m.up.Set(0)
	}
	w.mu.Lock()
	w.lastErr = errText
	if ok && errText == "" {
		w.lastWrite = time.Now()
	}
	w.mu.Unlock()
}

// backoff is RetryInterval·2^attempt capped at MaxRetryInterval, with jitter:
// a uniformly random delay in [d/2, d].
func (w *Writer) backoff(attempt int) time.Duration {
	d := w.cfg.RetryInterval.D()
	for i := 0; i < attempt && d < w.cfg.MaxRetryInterval.D(); i++ {
		d *= 2
	}
	d = min(d, w.cfg.MaxRetryInterval.D())
	half := d / 2
	return half + rand.N(d-half+1)
}

// classify extracts the HTTP status (0: no answer), the Retry-After delay and
// the server's message from a write error.
// post sends lines to the write endpoint through the client's HTTP service,
// compressed at cfg.GzipLevel in this goroutine (the client's own gzip
// option compresses at the default level, three times the CPU, through a
// pipe and a goroutine, after copying the body twice). The body handed to
// the transport is a fresh buffer: after a failed request the transport may
// still be reading it, while lines goes back to its source.
func (w *Writer) post(ctx context.Context, lines []byte) error {
	var body []byte
	gz := !w.cfg.DisableGzip
	if gz {
		zw, _ := w.gzips.Get().(*gzip.Writer)
		out := bytes.NewBuffer(make([]byte, 0, len(lines)/8+512))
		if zw == nil {
			zw, _ = gzip.NewWriterLevel(out, w.cfg.GzipLevel) // level checked by setDefaults
		} else {
			zw.Reset(out)
		}
		zw.Write(lines) // writes to a bytes.Buffer do not fail
		zw.Close()
		w.gzips.Put(zw)
		body = out.Bytes()
	} else {
		body = bytes.Clone(lines)
	}
	if err := w.http.DoPostRequest(ctx, w.url, bytes.NewReader(body), func(req *http.Request) {
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
	}, func(r *http.Response) error {
		_, err := io.Copy(io.Discard, r.Body) // drained: the connection is reused
		return errors.Join(err, r.Body.Close())
	}); err != nil {
		return err
	}
	return nil
}

func classify(err error) (status int, retryAfter time.Duration, msg string) {
	var he *http2.Error
	if errors.As(err, &he) {
		msg = he.Message
		if msg == "" {
			msg = he.Error()
		}
		return he.StatusCode, time.Duration(he.RetryAfter) * time.Second, msg
	}
	return 0, 0, err.Error()
}

// permanent reports whether an HTTP status means the batch will never be
// accepted as it is. Authentication (401, 403) and a missing database or
// bucket (404) are configuration problems an operator fixes: they are retried
// so that nothing is lost meanwhile, as are 408, 429 and every 5xx.
func permanent(status int) bool {
	switch {
	case status == 0:
		return false
	case status == http.StatusUnauthorized, status == http.StatusForbidden,
		status == http.StatusNotFound, status == http.StatusRequestTimeout,
		status == http.StatusTooManyRequests:
		return false
	case status >= 400 && status < 500:
		return true
	}
	return false
}

var droppedRE = regexp.MustCompile(`dropped=(\d+)`)

// rejectedPoints returns how many of a batch's points a permanent error
// refused. InfluxDB 1.8 writes what it can of a batch: a "partial write" with
// "dropped=N" refused N points (a field type conflict, say); points that did
// not parse are reported one "unable to parse" each; anything else refused
// the whole batch.
func rejectedPoints(msg string, points int) int {
	if strings.Contains(msg, "partial write") {
		if m := droppedRE.FindStringSubmatch(msg); m != nil {
			if n, err := strconv.Atoi(m[1]); err == nil && n > 0 {
				return min(n, points)
			}
		}
		if n := strings.Count(msg, "unable to parse"); n > 0 {
			return min(n, points)
		}
	}
	return points
}

// healthLoop pings InfluxDB when no write was attempted for HealthInterval,
// so Healthy follows the server while there is nothing to write.
func (w *Writer) healthLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.HealthInterval.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, w.lastAttempt.Load())) >= w.cfg.HealthInterval.D() {
			w.ping(ctx)
		}
	}
}

func (w *Writer) ping(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout.D())
	defer cancel()
	_, err := w.client.Ping(ctx)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("InfluxDB is not reachable", "error", err)
		}
		w.healthy.Store(false)
		w.m.up.Set(0)
		return
	}
	w.healthy.Store(true)
	w.m.up.Set(1)
}

// Flush seals the current batch and waits until every line added before the
// call is written, rejected or dropped, or ctx ends. It needs Run running.
func (w *Writer) Flush(ctx context.Context) error {
	target := w.accepted.Load()
	for {
		w.mu.Lock()
		progress := w.progress
		w.mu.Unlock()
		if w.written.Load()+w.rejected.Load()+w.dropped.Load() >= target {
			return nil
		}
		w.queue.sealNow()
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("flushing InfluxDB writer: %w", ctx.Err())
		}
	}
}

// Healthy reports whether the last write or ping reached InfluxDB.
func (w *Writer) Healthy() bool { return w.healthy.Load() }

// Stats returns a snapshot of the writer's counters.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	lastErr, lastWrite := w.lastErr, w.lastWrite
	w.mu.Unlock()
	return Stats{
		Accepted:  w.accepted.Load(),
		Written:   w.written.Load(),
		Rejected:  w.rejected.Load(),
		Dropped:   w.dropped.Load(),
		Queued:    w.queued.Load(),
		Batches:   w.batches.Load(),
		Errors:    w.errs.Load(),
		Retries:   w.retries.Load(),
		LastError: lastErr,
		LastWrite: lastWrite,
	}
}

// redactURL hides a password given in the URL's user info.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}

// Close releases the client's idle connections and the dead-letter file;
// call it after Run returned.
func (w *Writer) Close() {
	w.client.Close()
	w.dlMu.Lock()
	if w.dlFile != nil {
		w.dlFile.Close()
		w.dlFile = nil
	}
	w.dlMu.Unlock()
}
