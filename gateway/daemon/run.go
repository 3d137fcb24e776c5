package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/citygw/citygw/gateway/admin"
	"github.com/citygw/citygw/gateway/config"
	"github.com/citygw/citygw/gateway/gctune"
	"github.com/citygw/citygw/rules"
)

// Run runs the gateway until ctx ends. A receive on reload (SIGHUP) or a
// POST /-/reload reloads the whole deployment from d.Config.File; see
// (*runner).reload. ready, when non-nil, receives the admin listener's
// address once it listens.
func Run(ctx context.Context, d *Deployment, log *slog.Logger, reload <-chan struct{}, ready chan<- string) error {
	r := &runner{d: d, log: log, stable: prometheus.NewRegistry(), reqs: make(chan reloadRequest), quit: make(chan struct{}), started: time.Now(),
		tuner: gctune.NewTuner()}
	r.m = newReloadMetrics()
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "citygw_build_info", Help: "Gateway build and identity."}, []string{"version", "gateway"})
	buildInfo.WithLabelValues(Version, d.Config.Gateway.ID).Set(1)
	r.stable.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo,
		r.m.success, r.m.failures, r.m.lastOK, r.m.lastOKTime, r.m.restarts)
	r.m.lastOK.Set(1)
	r.m.lastOKTime.SetToCurrentTime()

	token, err := d.Config.Admin.Token.Resolve()
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	gc := tuneRuntime(d.Config.Runtime, log)
	r.adm = admin.New(prometheus.GathererFunc(r.gather), token, log.With("component", "admin"))
	r.adm.SetStatus(r.status)
	r.adm.HandleLifecycle("POST /-/reload", http.HandlerFunc(r.serveReload))

	g, err := build(d, log)
	if err != nil {
		return err
	}
	// Loading a city's inventory leaves hundreds of MB of parse garbage;
	// return it to the OS now rather than over the scavenger's minutes.
	debug.FreeOSMemory()
	// The headroom only from now: while the deployment was built the heap
	// grew faster than a once-a-second tuner follows, and the collector
	// would have run over and over at a limit just above the old live heap.
	r.tuner.Set(gc)
	go r.tuner.Run(ctx, time.Second)
	// The status page's routes stay on the admin server across component
	// restarts and serve the current page.
	g.page.Mount(routeRecorder(func(pattern string) { r.adm.Handle(pattern, http.HandlerFunc(r.servePage)) }))

	l, err := net.Listen("tcp", d.Config.Admin.Listen)
	if err != nil {
		g.close()
		return fmt.Errorf("admin listener: %w", err)
	}
	if ready != nil {
		ready <- l.Addr().String()
	}
	r.start(ctx, g)
	r.admErr = make(chan error, 1)
	r.serveAdmin(ctx, l)
	defer r.stopAdmin()
	defer close(r.quit) // before the admin server stops: pending reloads answer 503

	for {
		select {
		case err := <-r.genDone:
			r.retire()
			return err
		case err := <-r.admErr:
			r.stopGen()
			return err
		case <-reload:
			r.reload(ctx, nil)
		case req := <-r.reqs:
			r.reload(ctx, req.reply)
		}
		if r.fatal != nil {
			r.stopGen()
			return r.fatal
		}
	}
}

// runner keeps what outlives a component restart: the admin server (its
// listener, token and the reload metrics on a registry of their own) and the
// running deployment; the components of the current generation are
// swapped under mu.
type runner struct {
	d       *Deployment // what runs; only the Run goroutine touches it
	log     *slog.Logger
	stable  *prometheus.Registry
	m       reloadMetrics
	adm     *admin.Server
	reqs    chan reloadRequest
	quit    chan struct{} // closed when Run stops taking reloads
	started time.Time
	tuner   *gctune.Tuner // the garbage collector's headroom (runtime.gc_headroom)

	mu  sync.RWMutex
	cur *Gateway // nil while the components restart
	// d (above) is written under mu too: status reads it.

	genCancel context.CancelFunc
	genDone   chan error
	running   *Gateway // the generation genDone belongs to

	admCancel context.CancelFunc
	admDone   chan struct{}
	admErr    chan error

	fatal error // set when a restart failed and the previous deployment could not be restored
}

type reloadMetrics struct {
	success, failures, restarts prometheus.Counter
	lastOK, lastOKTime          prometheus.Gauge
}

func newReloadMetrics() reloadMetrics {
	return reloadMetrics{
		success: prometheus.NewCounter(prometheus.CounterOpts{Name: "citygw_reload_success_total",
			Help: "Deployment reloads (SIGHUP, POST /-/reload) that were applied."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "citygw_reload_failures_total",
			Help: "Deployment reloads refused (invalid config, profiles, inventory, rules or code table) or not applied; the previous deployment kept running."}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "citygw_component_restarts_total",
			Help: "In-process restarts of the gateway's components to apply a changed deployment (component metrics restart from zero)."}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "citygw_config_last_reload_successful",
			Help: "1 when the last deployment reload (or the start) succeeded, 0 when it was refused."}),
		lastOKTime: prometheus.NewGauge(prometheus.GaugeOpts{Name: "citygw_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful deployment reload (or of the start)."}),
	}
}

// gather is the admin server's metrics: the stable registry and the
// current components' registry.
func (r *runner) gather() ([]*dto.MetricFamily, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	gs := prometheus.Gatherers{r.stable}
	if r.cur != nil {
		gs = append(gs, r.cur.reg)
	}
	return gs.Gather()
}

func (r *runner) status() any {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.cur == nil {
		return Status{Gateway: r.d.Config.Gateway.ID, Version: Version, Started: r.started, Restarting: true}
	}
	s := r.cur.status()
	s.Started = r.started
	return s
}

func (r *runner) servePage(w http.ResponseWriter, req *http.Request) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.cur == nil {
		http.Error(w, "the gateway's components are restarting after a reload; try again in a moment", http.StatusServiceUnavailable)
		return
	}
	r.cur.pageH.ServeHTTP(w, req)
}

// routeRecorder is a statuspage.Mux that only learns the page's patterns.
type routeRecorder func(pattern string)

func (f routeRecorder) Handle(pattern string, _ http.Handler) { f(pattern) }

// check is the readiness check name of the current components.
func (r *runner) check(name string) admin.Check {
	return func() error {
		r.mu.RLock()
		defer r.mu.RUnlock()
		if r.cur == nil {
			return errors.New("the components are restarting after a reload")
		}
		c := r.cur.checks[name]
		if c == nil {
			return errors.New("no such component")
		}
		return c()
	}
}

// start makes g the current generation and runs it.
func (r *runner) start(ctx context.Context, g *Gateway) {
	checks := map[string]admin.Check{}
	for name := range g.checks {
		checks[name] = r.check(name)
	}
	r.adm.SetChecks(checks)
	r.mu.Lock()
	r.cur = g
	r.mu.Unlock()
	gctx, cancel := context.WithCancel(ctx)
	r.genCancel, r.genDone, r.running = cancel, make(chan error, 1), g
	go func() { r.genDone <- g.run(gctx) }()
}

// stopGen stops the running generation, waits for it to flush, and closes it.
func (r *runner) stopGen() {
	if r.running == nil {
		return
	}
	r.genCancel()
	if err := <-r.genDone; err != nil {
		r.log.Error("the gateway's components failed while stopping", "err", err)
	}
	r.retire()
}

// retire takes the stopped generation out of service and closes it.
func (r *runner) retire() {
	r.adm.SetChecks(map[string]admin.Check{"gateway": func() error {
		return errors.New("the components are stopped (restarting after a reload, or shutting down)")
	}})
	r.mu.Lock() // waits for requests reading the old components
	r.cur = nil
	r.mu.Unlock()
	r.running.close()
	r.genCancel()
	r.running = nil
}

func (r *runner) serveAdmin(ctx context.Context, l net.Listener) {
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	r.admCancel, r.admDone = cancel, done
	go func() {
		defer close(done)
		if err := r.adm.ServeListener(actx, l); err != nil {
			select {
			case r.admErr <- err:
			default:
			}
		}
	}()
}

func (r *runner) stopAdmin() {
	r.admCancel()
	<-r.admDone
}

// reloadRequest is a POST /-/reload waiting for its answer.
type reloadRequest struct{ reply chan<- reloadResult }

// reloadResult is the answer to a reload.
type reloadResult struct {
	Code    int      `json:"-"`
	OK      bool     `json:"ok"`
	Applied string   `json:"applied"` // none, rules, components
	Changes []string `json:"changes,omitempty"`
	Files   []string `json:"rule_files,omitempty"`
	Errors  []string `json:"errors,omitempty"`
}

func (r *runner) serveReload(w http.ResponseWriter, req *http.Request) {
	reply := make(chan reloadResult, 1)
	select {
	case r.reqs <- reloadRequest{reply}:
	case <-r.quit:
		http.Error(w, "the gateway is stopping", http.StatusServiceUnavailable)
		return
	case <-req.Context().Done():
		return
	}
	res := <-reply
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(res.Code)
	json.NewEncoder(w).Encode(res)
}

// reload loads the whole deployment again (config, profiles, inventory,
// rules, code table) and applies it, the way Prometheus reloads: everything
// is validated first, and an invalid deployment changes nothing. What
// changed decides how it is applied: rule files and silences in place by
// the rule engine; the admin token in place; anything else by an in-process
// restart of the components (sources stop, the rules and the writer flush,
// the WAL, rule state and case outbox close, and the components are built
// again from the new deployment; state on disk carries over, and the MQTT
// persistent session holds messages meanwhile). A moved admin listener
// moves after the answer is sent.
func (r *runner) reload(ctx context.Context, reply chan<- reloadResult) {
	var next net.Listener
	res := r.apply(ctx, &next)
	debug.FreeOSMemory() // loading the deployment again left its parse garbage, as at start
	if res.OK {
		r.m.success.Inc()
		r.m.lastOK.Set(1)
		r.m.lastOKTime.SetToCurrentTime()
		r.log.Info("deployment reloaded", "applied", res.Applied, "changes", strings.Join(res.Changes, "; "))
	} else {
		r.m.failures.Inc()
		r.m.lastOK.Set(0)
		r.log.Error("deployment reload failed; the previous deployment keeps running", "err", strings.Join(res.Errors, "\n"))
	}
	if reply != nil {
		reply <- res
	}
	if next != nil {
		// Shutting the old listener down waits for the reload's answer.
		r.stopAdmin()
		r.serveAdmin(ctx, next)
	}
}

func (r *runner) apply(ctx context.Context, next *net.Listener) reloadResult {
	fail := func(code int, err error) reloadResult {
		return reloadResult{Code: code, Applied: "none", Errors: strings.Split(err.Error(), "\n")}
	}
	nd, err := Load(r.d.Config.File)
	if err != nil {
		r.recordRuleFailure()
		return fail(http.StatusUnprocessableEntity, err)
	}
	ch := Diff(r.d, nd)
	res := reloadResult{Code: http.StatusOK, OK: true, Applied: "none", Changes: ch.Lines(), Files: nd.RuleFiles}
	token, err := nd.Config.Admin.Token.Resolve()
	if err != nil {
		return fail(http.StatusUnprocessableEntity, fmt.Errorf("admin token: %w", err))
	}
	if ch.AdminListen {
		l, err := net.Listen("tcp", nd.Config.Admin.Listen)
		if err != nil {
			return fail(http.StatusUnprocessableEntity, fmt.Errorf("%s: admin.listen: %w", nd.Config.File, err))
		}
		*next = l
	}
	switch {
	case len(ch.Restart) > 0:
		if err := r.restart(ctx, nd); err != nil {
			if *next != nil {
				(*next).Close()
				*next = nil
			}
			return fail(http.StatusInternalServerError, err)
		}
		res.Applied = "components"
	case ch.Rules:
		if err := r.running.reloadRules(nd); err != nil {
			if *next != nil {
				(*next).Close()
				*next = nil
			}
			return fail(http.StatusUnprocessableEntity, err)
		}
		// The running components keep the objects they were built with;
		// the files behind them did not change.
		nd.Catalog, nd.Inventory, nd.Codes = r.d.Catalog, r.d.Inventory, r.d.Codes
		res.Applied = "rules"
	default:
		nd.Catalog, nd.Inventory, nd.Codes = r.d.Catalog, r.d.Inventory, r.d.Codes
	}
	if ch.AdminToken {
		r.adm.SetToken(token)
	}
	if ch.Runtime {
		r.tuner.Set(tuneRuntime(nd.Config.Runtime, r.log))
	}
	r.mu.Lock()
	r.d = nd
	r.mu.Unlock()
	return res
}

// recordRuleFailure: when a refused reload's rule files do not compile
// against the running catalog and inventory either, the running engine is
// asked to load them, which it refuses, keeping its rules; its own metrics
// (citygw_rules_last_reload_success) then say so, as they do for a broken
// file its watch found.
func (r *runner) recordRuleFailure() {
	g := r.running
	if g == nil || g.engine == nil {
		return
	}
	cfg, err := config.Load(r.d.Config.File)
	if err != nil {
		return
	}
	files, err := cfg.RuleFiles()
	if err != nil || len(files) == 0 {
		return
	}
	if rules.CheckWith(g.d.Catalog, g.d.Inventory, files...) != nil {
		g.engine.Load(files...) //nolint:errcheck // refused, as checked; logged by the engine
	}
}

// restart replaces the running components by ones built from nd. When the
// new ones cannot be built, the previous deployment is built again and the
// error returned; when that fails too, Run ends with it.
func (r *runner) restart(ctx context.Context, nd *Deployment) error {
	r.log.Info("restarting the gateway's components to apply the new deployment")
	r.stopGen()
	r.m.restarts.Inc()
	g, err := build(nd, r.log)
	if err != nil {
		r.log.Error("building the new deployment failed; restoring the previous one", "err", err)
		prev, perr := build(r.d, r.log)
		if perr != nil {
			r.fatal = fmt.Errorf("applying the new deployment: %w; restoring the previous one: %w", err, perr)
			return r.fatal
		}
		r.start(ctx, prev)
		return fmt.Errorf("applying the new deployment (the previous deployment was restored): %w", err)
	}
	r.start(ctx, g)
	return nil
}

// tuneRuntime applies the configuration's garbage-collector settings
// (gateway/gctune), logs what is in force and returns it for the tuner.
func tuneRuntime(c gctune.Config, log *slog.Logger) gctune.Settings {
	s, err := gctune.Apply(c, gctune.SystemEnv())
	if err != nil { // validated with the configuration: not expected
		log.Error("runtime settings not applied", "err", err)
		return s
	}
	limit, headroom := "none", "off"
	if s.MemoryLimit != math.MaxInt64 {
		limit = strconv.FormatInt(s.MemoryLimit>>20, 10) + "MiB"
	}
	if s.Headroom > 0 && s.LimitFrom != "env" {
		headroom = strconv.FormatInt(s.Headroom>>20, 10) + "MiB"
	}
	log.Info("garbage collector", "gc_percent", s.GCPercent, "gc_percent_from", s.GCFrom, "memory_limit", limit, "memory_limit_from", s.LimitFrom, "gc_headroom", headroom)
	return s
}
