package statuspage

import (
	"compress/gzip"
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/caseclient"
	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/influx"
	"github.com/citygw/citygw/gateway/modbuspoll"
	"github.com/citygw/citygw/gateway/mqttsub"
	"github.com/citygw/citygw/gateway/wal"
	"github.com/citygw/citygw/rules"
)

// RuleView is what the page reads from the rule engine; *rules.Engine
// implements it.
type RuleView interface {
	Episodes() []rules.Episode
	AssetRules(id string) []rules.AssetRule
	AssetHistory(id string) (fields []string, series [][]rules.Sample)
	DisplayHistory(id string) (fields []string, series [][]rules.Sample)
	LastReading(id string) (devices.Reading, bool)
}

// SeenSource writes each asset's last receive time (unix ns by asset Seq,
// 0 for never) into dst and returns it. *rules.Engine and *Tracker
// implement it.
type SeenSource interface {
	LastSeen(dst []int64) []int64
}

// ModbusSource is the Modbus poller (*modbuspoll.Poller).
type ModbusSource interface {
	Status() []modbuspoll.DeviceStatus
}

// MQTTSource is the MQTT subscriber (*mqttsub.Subscriber).
type MQTTSource interface {
	Status() mqttsub.Status
}

// InfluxSource is the InfluxDB writer (*influx.Writer).
type InfluxSource interface {
	Stats() influx.Stats
	Healthy() bool
}

// WALSource is the write-ahead log (*wal.WAL).
type WALSource interface {
	Stats() wal.Stats
}

// CaseSource is the case client (*caseclient.Client): its outbox, sinks and
// the cases of the episodes.
type CaseSource interface {
	Status() caseclient.Status
}

// Options configure a Page. Leave a source nil when the gateway runs
// without it (never a typed nil pointer in an interface).
type Options struct {
	Gateway   string // the gateway's id, shown in the title
	Inventory *devices.Inventory

	Rules  RuleView
	Seen   SeenSource // default: Rules, when it implements SeenSource
	Modbus ModbusSource
	MQTT   MQTTSource
	Influx InfluxSource
	WAL    WALSource
	Cases  CaseSource

	// ModbusInterval is the poller's default interval, for assets whose
	// inventory entry sets none.
	ModbusInterval time.Duration
	// SilentAfter is the least time without a reading before an asset is
	// silent; an asset polled every interval is silent after
	// max(3 × interval, SilentAfter). Default 10m.
	SilentAfter time.Duration
	// Refresh is how often the state is recomputed and the page refreshes
	// itself. Default 5s.
	Refresh time.Duration
	// MaxPoints is the most assets drawn as circles; beyond it the map
	// bins them into cells. Default 2000.
	MaxPoints int
	// MaxEpisodes caps the episode list. Default 200.
	MaxEpisodes int
	// Location is the time zone times are shown in. Default UTC.
	Location *time.Location
	Now      func() time.Time
}

func (o *Options) loc() *time.Location {
	if o.Location == nil {
		return time.UTC
	}
	return o.Location
}

func (o *Options) defaults() {
	if o.SilentAfter <= 0 {
		o.SilentAfter = 10 * time.Minute
	}
	if o.Refresh <= 0 {
		o.Refresh = 5 * time.Second
	}
	if o.MaxPoints <= 0 {
		o.MaxPoints = 2000
	}
	if o.MaxEpisodes <= 0 {
		o.MaxEpisodes = 200
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Seen == nil {
		if s, ok := o.Rules.(SeenSource); ok {
			o.Seen = s
		}
	}
}

// Page is the status page. Its handlers are safe for concurrent use.
type Page struct {
	opts    Options
	log     *slog.Logger
	idx     *index
	refs    assetRefs
	started time.Time

	mu      sync.Mutex // serialises refreshes; guards seen
	seen    []int64
	snap    atomic.Pointer[snapshot]
	stopped chan struct{}
	stop    sync.Once

	bins sync.Pool // *binCounts
	outs sync.Pool // *out
	gz   sync.Pool // *gzip.Writer

	m pageMetrics
}

type pageMetrics struct {
	refresh  prometheus.Histogram
	requests *prometheus.CounterVec
	streams  prometheus.Gauge
}

// New returns the page for an inventory. reg receives the page's metrics.
func New(opts Options, reg prometheus.Registerer, log *slog.Logger) (*Page, error) {
	if opts.Inventory == nil {
		return nil, errors.New("status page: an inventory is required")
	}
	opts.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	p := &Page{opts: opts, log: log, started: opts.Now(), stopped: make(chan struct{})}
	p.idx = newIndex(opts.Inventory, opts.ModbusInterval, opts.SilentAfter)
	ids := make([]string, opts.Inventory.Len())
	for i, a := range opts.Inventory.Assets {
		ids[i] = a.ID
	}
	p.refs = newAssetRefs(ids)
	p.bins.New = func() any { return &binCounts{} }
	p.outs.New = func() any { return &out{b: make([]byte, 0, 64<<10)} }
	p.gz.New = func() any {
		zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
		return zw
	}
	p.m = pageMetrics{
		refresh: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "citygw_statuspage_refresh_seconds",
			Help: "Time to classify every asset's state for the status page.", Buckets: prometheus.ExponentialBuckets(1e-4, 4, 8)}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_statuspage_requests_total",
			Help: "Status page requests by route."}, []string{"route"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "citygw_statuspage_event_streams",
			Help: "Open server-sent event streams of the status page."}),
	}
	for _, c := range []prometheus.Collector{p.m.refresh, p.m.requests, p.m.streams} {
		if err := reg.Register(c); err != nil {
			return nil, errors.Join(errors.New("registering status page metrics"), err)
		}
	}
	return p, nil
}

// Mux is where the page's routes are mounted: *http.ServeMux, or the admin
// server (which adds its token check).
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Mount adds the page's routes: GET / (the city), GET /assets/{id} (one
// asset), GET /api/summary (JSON) and GET /events (server-sent events).
// Links between the pages are relative, so the routes may also be mounted
// under a prefix with http.StripPrefix.
func (p *Page) Mount(mux Mux) {
	mux.Handle("GET /{$}", p.count("city", http.HandlerFunc(p.serveCity)))
	mux.Handle("GET /assets/{id}", p.count("asset", http.HandlerFunc(p.serveAsset)))
	mux.Handle("GET /api/summary", p.count("summary", http.HandlerFunc(p.serveSummary)))
	mux.Handle("GET /events", p.count("events", http.HandlerFunc(p.serveEvents)))
}

// Handler returns the page's routes on their own mux.
func (p *Page) Handler() http.Handler {
	mux := http.NewServeMux()
	p.Mount(mux)
	return mux
}

func (p *Page) count(route string, h http.Handler) http.Handler {
	c := p.m.requests.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.Inc()
		h.ServeHTTP(w, r)
	})
}

// Run recomputes the state every refresh interval until ctx ends, then
// ends the open event streams (so the admin server's shutdown is not held
// up by them). Without Run the state is recomputed on demand.
func (p *Page) Run(ctx context.Context) error {
	defer p.stop.Do(func() { close(p.stopped) })
	t := time.NewTicker(p.opts.Refresh)
	defer t.Stop()
	p.refresh()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			p.refresh()
		}
	}
}

// current returns a snapshot no older than the refresh interval.
func (p *Page) current() *snapshot {
	if s := p.snap.Load(); s != nil && p.opts.Now().Sub(s.at) < p.opts.Refresh {
		return s
	}
	return p.refresh()
}

// refresh classifies every asset and gathers the sources' health.
func (p *Page) refresh() *snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.opts.Now()
	if s := p.snap.Load(); s != nil && now.Sub(s.at) < p.opts.Refresh/2 {
		return s // another request just did it
	}
	t0 := time.Now()
	s := &snapshot{at: now, state: make([]State, p.idx.n)}
	if p.opts.Rules != nil {
		s.episodes = p.opts.Rules.Episodes()
	}
	var flags []uint8
	if len(s.episodes) > 0 {
		flags = make([]uint8, p.idx.n)
		markEpisodes(flags, s.episodes, p.opts.Inventory)
	}
	if p.opts.Seen != nil {
		p.seen = p.opts.Seen.LastSeen(p.seen)
	} else {
		p.seen = p.seen[:0]
	}
	classifyAll(s.state, p.seen, flags, p.idx.silentNs, now.UnixNano(), p.started.UnixNano())
	for _, st := range s.state {
		s.counts[st]++
	}
	s.health = p.health()
	if p.opts.Cases != nil {
		s.cases = map[string]*caseclient.CaseStatus{}
		for i := range s.health.cases.Cases {
			c := &s.health.cases.Cases[i]
			s.cases[c.Episode] = c
		}
	}
	sort.SliceStable(s.episodes, func(i, j int) bool {
		a, b := s.episodes[i], s.episodes[j]
		if a.State != b.State {
			return a.State > b.State // firing first
		}
		if a.Shadow != b.Shadow {
			return !a.Shadow
		}
		return a.Start.After(b.Start)
	})
	s.version = versionOf(s)
	p.snap.Store(s)
	p.m.refresh.Observe(time.Since(t0).Seconds())
	return s
}

// versionOf hashes what the page shows, so the browser refetches only
// when something changed.
func versionOf(s *snapshot) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	for _, b := range s.state {
		h = (h ^ uint64(b)) * prime
	}
	for _, e := range s.episodes {
		for i := 0; i < len(e.ID); i++ {
			h = (h ^ uint64(e.ID[i])) * prime
		}
		h = (h ^ uint64(e.State)) * prime
	}
	hb := s.health
	// Queue depths move all the time on a busy gateway: the event stream
	// carries them and the page updates them in place (see Counters), so
	// they do not make the browser fetch the whole page again.
	for _, x := range []float64{float64(hb.ModbusUp), float64(hb.ModbusTotal), b2f(hb.MQTTConnected), b2f(hb.InfluxUp),
		b2f(hb.WALDiskFull), float64(hb.DeadLetters), float64(hb.SinksOK)} {
		h = (h ^ math.Float64bits(x)) * prime
	}
	for _, c := range hb.cases.Cases {
		for _, sc := range c.Sinks {
			for i := 0; i < len(sc.ID); i++ {
				h = (h ^ uint64(sc.ID[i])) * prime
			}
			for i := 0; i < len(sc.Status); i++ {
				h = (h ^ uint64(sc.Status[i])) * prime
			}
		}
	}
	return h
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// close ends the event streams (tests; Run does it when its context ends).
func (p *Page) close() { p.stop.Do(func() { close(p.stopped) }) }
