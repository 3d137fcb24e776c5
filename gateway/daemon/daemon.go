// Package daemon assembles a running gateway from its configuration: it
// loads and checks the deployment (config, profiles, inventory, rules), then
// wires the sources (Modbus poller, MQTT subscriber) through the pipeline to
// the InfluxDB writer and the rule engine, serves the admin endpoints, and
// shuts everything down in order: sources first, then the rules, then the
// writer's last flush.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/citygw/citygw/caseclient"
	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/gateway/admin"
	"github.com/citygw/citygw/gateway/config"
	"github.com/citygw/citygw/gateway/influx"
	"github.com/citygw/citygw/gateway/modbuspoll"
	"github.com/citygw/citygw/gateway/mqttsub"
	"github.com/citygw/citygw/gateway/pipeline"
	"github.com/citygw/citygw/gateway/statuspage"
	"github.com/citygw/citygw/gateway/wal"
	"github.com/citygw/citygw/rules"
)

// Deployment is everything a gateway runs with, loaded and validated.
type Deployment struct {
	Config    *config.Config
	Catalog   *devices.Catalog
	Inventory *devices.Inventory
	RuleFiles []string
	Codes     *caseclient.CodeTable // nil without a cases section
}

// Load reads the configuration and everything it names, reporting every
// problem found (file:line:col and field), not only the first.
func Load(cfgFile string) (*Deployment, error) {
	cfg, err := config.Load(cfgFile)
	if err != nil {
		return nil, err
	}
	d := &Deployment{Config: cfg}
	var errs []error
	d.Catalog, err = devices.LoadCatalogDirs(cfg.Profiles...)
	if err != nil {
		return nil, err
	}
	d.Inventory, err = devices.LoadInventory(cfg.Inventory, d.Catalog)
	if err != nil {
		errs = append(errs, err)
	}
	if d.RuleFiles, err = cfg.RuleFiles(); err != nil {
		errs = append(errs, err)
	} else if len(d.RuleFiles) > 0 && d.Inventory != nil {
		if err := rules.CheckWith(d.Catalog, d.Inventory, d.RuleFiles...); err != nil {
			errs = append(errs, err)
		}
	}
	if cs := cfg.Cases; cs != nil {
		if d.Codes, err = caseclient.LoadCodeTable(cs.Codes); err != nil {
			errs = append(errs, err)
		} else if err := d.checkCodes(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.Inventory != nil {
		if n := len(d.assets(devices.MQTT)); n > 0 && cfg.MQTT == nil {
			errs = append(errs, fmt.Errorf("%s: the inventory has %d MQTT assets but the config has no mqtt section", cfg.File, n))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return d, nil
}

// checkCodes makes sure every service the rules name is in the city code
// table, with a service code for every Open311 sink.
func (d *Deployment) checkCodes() error {
	var services []string
	seen := map[string]bool{}
	for _, f := range d.RuleFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("reading rule file: %w", err)
		}
		var rf rules.RuleFile
		if _, err := yamlconf.Decode(f, data, &rf); err != nil {
			return err
		}
		for _, r := range rf.Rules {
			if r != nil && r.Case.Service != "" && !seen[r.Case.Service] {
				seen[r.Case.Service] = true
				services = append(services, r.Case.Service)
			}
		}
	}
	var sinks []string
	for _, s := range d.Config.Cases.Sinks {
		if s.Type == "open311" {
			sinks = append(sinks, s.Name)
		}
	}
	if err := d.Codes.Check(services, sinks); err != nil {
		return fmt.Errorf("%s: %w", d.Config.Cases.Codes, err)
	}
	return nil
}

func (d *Deployment) assets(t devices.Transport) []*devices.Asset {
	var out []*devices.Asset
	for _, a := range d.Inventory.Assets {
		if a.Profile != nil && a.Profile.Transport == t {
			out = append(out, a)
		}
	}
	return out
}

// Summary writes what the deployment contains, for `gateway check`.
func (d *Deployment) Summary(w io.Writer) {
	c := d.Config
	fmt.Fprintf(w, "config     %s (gateway %s, time zone %s)\n", c.File, c.Gateway.ID, c.Gateway.Location)
	fmt.Fprintf(w, "profiles   %d models, kinds: ", len(d.Catalog.Profiles))
	for i, k := range d.Catalog.KindNames() {
		if i > 0 {
			fmt.Fprint(w, ", ")
		}
		fmt.Fprintf(w, "%s (%d fields)", k, len(d.Catalog.Kinds[k].Fields))
	}
	fmt.Fprintln(w)
	byKind := map[string]int{}
	endpoints := map[string]bool{}
	for _, a := range d.Inventory.Assets {
		byKind[a.Kind]++
		if a.Modbus != nil {
			endpoints[a.Modbus.Endpoint()] = true
		}
	}
	kinds := make([]string, 0, len(byKind))
	for k := range byKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	fmt.Fprintf(w, "inventory  %s: %d assets (", c.Inventory, d.Inventory.Len())
	for i, k := range kinds {
		if i > 0 {
			fmt.Fprint(w, ", ")
		}
		fmt.Fprintf(w, "%d %s", byKind[k], k)
	}
	fmt.Fprintf(w, "); %d Modbus devices on %d endpoints, %d MQTT assets\n", len(d.assets(devices.Modbus)), len(endpoints), len(d.assets(devices.MQTT)))
	fmt.Fprintf(w, "influxdb   %s bucket %s (token %s)\n", c.InfluxDB.URL, c.InfluxDB.Bucket, c.InfluxDB.Token)
	if c.WAL.On() {
		fmt.Fprintf(w, "wal        %s (sync %s, on full: %s)\n", c.WAL.Dir, orDefault(string(c.WAL.Sync), "interval"), orDefault(string(c.WAL.OnFull), "block"))
	} else {
		fmt.Fprintln(w, "wal        off: telemetry is buffered in memory only")
	}
	if c.MQTT != nil {
		fmt.Fprintf(w, "mqtt       %s as %s, %d subscriptions (password %s)\n", c.MQTT.Broker, c.MQTT.ClientID, len(c.MQTT.Subscriptions), c.MQTT.Password)
	}
	fmt.Fprintf(w, "rules      %d files\n", len(d.RuleFiles))
	if cs := c.Cases; cs != nil {
		fmt.Fprintf(w, "cases      %d services in %s; outbox %s; sinks:", len(d.Codes.Services), cs.Codes, cs.Outbox)
		for _, s := range cs.Sinks {
			fmt.Fprintf(w, " %s (%s %s)", s.Name, s.Type, s.URL)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "admin      http://%s\n", c.Admin.Listen)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// NewLogger returns the logger the config asks for, writing to w.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// transitionLog is the rule engine's sink until a case client is
// configured: it logs every episode transition.
type transitionLog struct{ log *slog.Logger }

func (t transitionLog) Transitions(_ context.Context, ts []rules.Transition) error {
	for _, tr := range ts {
		t.log.Info("episode", "rule", tr.Rule, "group", tr.GroupKey, "from", tr.From, "to", tr.To, "episode", tr.EpisodeID, "shadow", tr.Shadow)
	}
	return nil
}

// Gateway is a running gateway's parts, exposed for the status endpoint and tests.
type Gateway struct {
	d       *Deployment
	reg     *prometheus.Registry
	writer  *influx.Writer
	wal     *wal.WAL // nil when the log is off
	engine  *rules.Engine
	cases   *caseclient.Client
	poller  *modbuspoll.Poller
	sub     *mqttsub.Subscriber
	started time.Time
}

// Run runs the gateway until ctx ends. reload, when it receives, makes the
// rule engine reload its files (SIGHUP). ready, when non-nil, receives the
// admin listener's address once it listens.
func Run(ctx context.Context, d *Deployment, log *slog.Logger, reload <-chan struct{}, ready chan<- string) error {
	c := d.Config
	g := &Gateway{d: d, reg: prometheus.NewRegistry(), started: time.Now()}
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "citygw_build_info", Help: "Gateway build and identity."}, []string{"version", "gateway"})
	buildInfo.WithLabelValues(Version, c.Gateway.ID).Set(1)
	g.reg.MustRegister(buildInfo)
	if err := os.MkdirAll(c.Gateway.DataDir, 0o750); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}

	wc, err := c.InfluxWriter()
	if err != nil {
		return err
	}
	if c.WAL.On() {
		wc.DeadLetter = c.WAL.DeadLetterPath()
	}
	if g.writer, err = influx.NewWriter(wc, g.reg, log.With("component", "influx")); err != nil {
		return fmt.Errorf("starting the InfluxDB writer: %w", err)
	}
	defer g.writer.Close()
	// Readings go to the write-ahead log (durable before the source is
	// told, so MQTT acknowledges only what is on disk) and the writer
	// drains it; without the log, to the writer's bounded memory queue.
	var lines pipeline.LineWriter = g.writer
	drain := func(ctx context.Context) error { return g.writer.Run(ctx) }
	if c.WAL.On() {
		if g.wal, err = wal.Open(c.WAL, g.reg, log.With("component", "wal")); err != nil {
			return fmt.Errorf("opening the write-ahead log: %w", err)
		}
		defer g.wal.Close()
		lines = g.wal
		drain = func(ctx context.Context) error { return g.writer.Drain(ctx, g.wal) }
	}
	enc := influx.NewEncoder(c.Gateway.ID)
	enc.Prepare(d.Inventory)

	var sink rules.Sink = transitionLog{log.With("component", "rules")}
	if c.Cases != nil {
		ccfg, err := c.CaseClient()
		if err != nil {
			return err
		}
		if g.cases, err = caseclient.New(ccfg, d.Codes, d.Inventory, g.reg, log.With("component", "cases")); err != nil {
			return fmt.Errorf("starting the case client: %w", err)
		}
		defer g.cases.Close()
		if exprs, err := caseclient.RuleExpressions(d.RuleFiles...); err == nil {
			g.cases.SetRuleExpressions(exprs)
		}
		sink = g.cases
	}
	if len(d.RuleFiles) > 0 {
		g.engine, err = rules.NewEngine(rules.Options{
			Location:   c.Gateway.Location,
			Sink:       sink,
			Silences:   c.Rules.Silences,
			EvalBudget: c.Rules.EvalBudget.D(),
			StatePath:  c.Gateway.DataDir + "/rules.db",
		}, d.Catalog, d.Inventory, g.reg, log.With("component", "rules"))
		if err != nil {
			return fmt.Errorf("starting the rule engine: %w", err)
		}
		defer g.engine.Close()
		if err := g.engine.Load(d.RuleFiles...); err != nil {
			return fmt.Errorf("loading rules: %w", err)
		}
	}
	var eval pipeline.Evaluator
	var tracker *statuspage.Tracker // last-seen times for the status page when no rules run
	if g.engine != nil {
		eval = g.engine
	} else {
		tracker = statuspage.NewTracker(d.Inventory.Len())
		eval = tracker
	}
	pipe, err := pipeline.New(enc, lines, eval, g.reg)
	if err != nil {
		return err
	}

	if mb := d.assets(devices.Modbus); len(mb) > 0 {
		if g.poller, err = modbuspoll.New(c.ModbusPoller(), mb, pipe, g.reg, log.With("component", "modbus")); err != nil {
			return fmt.Errorf("starting the Modbus poller: %w", err)
		}
	}
	if c.MQTT != nil {
		mc, err := c.MQTTSubscriber()
		if err != nil {
			return err
		}
		if g.sub, err = mqttsub.New(mc, d.Inventory, pipe, g.reg, log.With("component", "mqtt")); err != nil {
			return fmt.Errorf("starting the MQTT subscriber: %w", err)
		}
	}

	token, err := c.Admin.Token.Resolve()
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	adm := admin.New(g.reg, token, log.With("component", "admin"))
	adm.AddCheck("influxdb", func() error {
		if !g.writer.Healthy() {
			return errors.New("last write or ping failed")
		}
		return nil
	})
	if g.wal != nil {
		adm.AddCheck("wal", g.wal.Ready)
	}
	if g.sub != nil {
		adm.AddCheck("mqtt", func() error {
			if !g.sub.Connected() {
				return errors.New("not connected to the broker")
			}
			return nil
		})
	}
	adm.SetStatus(g.Status)
	popts := statuspage.Options{Gateway: c.Gateway.ID, Inventory: d.Inventory, Influx: g.writer,
		ModbusInterval: c.ModbusPoller().DefaultInterval, Location: c.Gateway.Location}
	// Only parts that exist: a nil pointer in an interface is not nil.
	if g.engine != nil {
		popts.Rules = g.engine
	} else {
		popts.Seen = tracker
	}
	if g.poller != nil {
		popts.Modbus = g.poller
	}
	if g.sub != nil {
		popts.MQTT = g.sub
	}
	if g.wal != nil {
		popts.WAL = g.wal
	}
	if g.cases != nil {
		popts.Cases = g.cases
	}
	page, err := statuspage.New(popts, g.reg, log.With("component", "statuspage"))
	if err != nil {
		return fmt.Errorf("starting the status page: %w", err)
	}
	page.Mount(adm)
	if g.engine != nil {
		adm.HandleLifecycle("POST /-/reload", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			g.reload(w, log)
		}))
	}

	// Sources stop with ctx; the rules and the writer keep running until the
	// sources have returned, so nothing accepted is left unwritten.
	writerCtx, stopWriter := context.WithCancel(context.Background())
	defer stopWriter()
	back := &errgroup.Group{}
	back.Go(func() error { return drain(writerCtx) })
	if g.cases != nil {
		back.Go(func() error { return g.cases.Run(writerCtx) })
	}
	if g.engine != nil {
		back.Go(func() error { return g.engine.Run(writerCtx) })
		back.Go(func() error {
			for {
				select {
				case <-writerCtx.Done():
					return nil
				case <-reload:
					g.reload(nil, log)
				}
			}
		})
	}
	src, sctx := errgroup.WithContext(ctx)
	src.Go(func() error { return adm.Serve(sctx, c.Admin.Listen, ready) })
	src.Go(func() error { return page.Run(sctx) })
	if g.poller != nil {
		src.Go(func() error { return g.poller.Run(sctx) })
	}
	if g.sub != nil {
		src.Go(func() error { return g.sub.Run(sctx) })
	}
	log.Info("gateway running", "gateway", c.Gateway.ID, "assets", d.Inventory.Len(),
		"modbus_devices", len(d.assets(devices.Modbus)), "mqtt", c.MQTT != nil, "rules", len(d.RuleFiles))
	srcErr := src.Wait()
	log.Info("sources stopped; flushing telemetry")
	stopWriter()
	if err := back.Wait(); err != nil && srcErr == nil {
		srcErr = err
	}
	if errors.Is(srcErr, context.Canceled) {
		srcErr = nil
	}
	return srcErr
}

// reload reloads the rules (SIGHUP or POST /-/reload) and, for HTTP,
// answers with the check result: 200 and the rule count, or 422 and the
// errors (file:line:col) while the previous rules keep running.
func (g *Gateway) reload(w http.ResponseWriter, log *slog.Logger) {
	// Expand the patterns again so that a rule file added since the start
	// is picked up (the engine's file watch only sees the files it loaded).
	files, err := g.d.Config.RuleFiles()
	if err == nil {
		err = g.engine.Load(files...)
	}
	if err != nil {
		log.Error("rule reload failed; the previous rules keep running", "err", err)
	} else {
		log.Info("rules reloaded")
	}
	if w == nil {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	res := struct {
		OK     bool     `json:"ok"`
		Files  []string `json:"files"`
		Errors []string `json:"errors,omitempty"`
	}{OK: err == nil, Files: files}
	if err != nil {
		res.Errors = strings.Split(err.Error(), "\n")
		w.WriteHeader(http.StatusUnprocessableEntity)
	}
	json.NewEncoder(w).Encode(res)
}

// Status is the /status document.
type Status struct {
	Gateway   string                    `json:"gateway"`
	Version   string                    `json:"version"`
	Started   time.Time                 `json:"started"`
	Assets    int                       `json:"assets"`
	InfluxDB  influx.Stats              `json:"influxdb"`
	InfluxUp  bool                      `json:"influxdb_up"`
	WAL       *wal.Stats                `json:"wal,omitempty"`
	MQTT      *mqttsub.Status           `json:"mqtt,omitempty"`
	Modbus    []modbuspoll.DeviceStatus `json:"modbus,omitempty"`
	Episodes  []rules.Episode           `json:"episodes,omitempty"`
	Cases     *caseclient.Status        `json:"cases,omitempty"`
	DevicesUp int                       `json:"modbus_devices_up"`
}

// Status returns the gateway's current status.
func (g *Gateway) Status() any {
	s := Status{Gateway: g.d.Config.Gateway.ID, Version: Version, Started: g.started, Assets: g.d.Inventory.Len(),
		InfluxDB: g.writer.Stats(), InfluxUp: g.writer.Healthy()}
	if g.sub != nil {
		st := g.sub.Status()
		s.MQTT = &st
	}
	if g.wal != nil {
		st := g.wal.Stats()
		s.WAL = &st
	}
	if g.poller != nil {
		s.Modbus = g.poller.Status()
		for _, d := range s.Modbus {
			if d.Up {
				s.DevicesUp++
			}
		}
	}
	if g.engine != nil {
		s.Episodes = g.engine.Episodes()
	}
	if g.cases != nil {
		st := g.cases.Status()
		s.Cases = &st
	}
	return s
}

// Version is set at build time with -ldflags "-X github.com/citygw/citygw/gateway/daemon.Version=…".
var Version = "dev"
