package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/citygw/citygw/caseclient"
	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/admin"
	"github.com/citygw/citygw/gateway/config"
	"github.com/citygw/citygw/gateway/influx"
	"github.com/citygw/citygw/gateway/lastseen"
	"github.com/citygw/citygw/gateway/modbuspoll"
	"github.com/citygw/citygw/gateway/mqttsub"
	"github.com/citygw/citygw/gateway/pipeline"
	"github.com/citygw/citygw/gateway/statuspage"
	"github.com/citygw/citygw/gateway/wal"
	"github.com/citygw/citygw/rules"
)

// Gateway is one build of the gateway's components from a Deployment:
// sources, pipeline, write-ahead log, InfluxDB writer, rule engine, case
// client and status page, with their metrics on a registry of their own. A
// reload that changes the deployment stops it (run returns), closes it and
// builds the next one; the state they keep on disk carries over.
type Gateway struct {
	d       *Deployment
	log     *slog.Logger
	reg     *prometheus.Registry
	writer  *influx.Writer
	wal     *wal.WAL // nil when the log is off
	engine  *rules.Engine
	cases   *caseclient.Client
	poller  *modbuspoll.Poller
	sub     *mqttsub.Subscriber
	page    *statuspage.Page
	pageH   http.Handler
	checks  map[string]admin.Check
	drain   func(context.Context) error
	closers []func()
	built   time.Time
}

// build makes the components of d. Nothing runs until run; on error what
// was opened is closed again.
func build(d *Deployment, log *slog.Logger) (*Gateway, error) {
	c := d.Config
	g := &Gateway{d: d, log: log, reg: prometheus.NewRegistry(), checks: map[string]admin.Check{}, built: time.Now()}
	ok := false
	defer func() {
		if !ok {
			g.close()
		}
	}()
	if err := os.MkdirAll(c.Gateway.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	wc, err := c.InfluxWriter()
	if err != nil {
		return nil, err
	}
	if c.WAL.On() {
		wc.DeadLetter = c.WAL.DeadLetterPath()
	}
	if g.writer, err = influx.NewWriter(wc, g.reg, log.With("component", "influx")); err != nil {
		return nil, fmt.Errorf("starting the InfluxDB writer: %w", err)
	}
	g.closers = append(g.closers, g.writer.Close)
	// Readings go to the write-ahead log (durable before the source is
	// told, so MQTT acknowledges only what is on disk) and the writer
	// drains it; without the log, to the writer's bounded memory queue.
	var lines pipeline.LineWriter = g.writer
	g.drain = g.writer.Run
	if c.WAL.On() {
		if g.wal, err = wal.Open(c.WAL, g.reg, log.With("component", "wal")); err != nil {
			return nil, fmt.Errorf("opening the write-ahead log: %w", err)
		}
		w := g.wal
		g.closers = append(g.closers, func() {
			if err := w.Close(); err != nil {
				log.Error("closing the write-ahead log", "err", err)
			}
		})
		lines = g.wal
		g.drain = func(ctx context.Context) error { return g.writer.Drain(ctx, w) }
	}
	enc := influx.NewEncoder(c.Gateway.ID)
	enc.Prepare(d.Inventory)

	var sink rules.Sink = transitionLog{log.With("component", "rules")}
	if c.Cases != nil {
		ccfg, err := c.CaseClient()
		if err != nil {
			return nil, err
		}
		if g.cases, err = caseclient.New(ccfg, d.Codes, d.Inventory, g.reg, log.With("component", "cases")); err != nil {
			return nil, fmt.Errorf("starting the case client: %w", err)
		}
		cs := g.cases
		g.closers = append(g.closers, func() {
			if err := cs.Close(); err != nil {
				log.Error("closing the case outbox", "err", err)
			}
		})
		if exprs, err := caseclient.RuleExpressions(d.RuleFiles...); err == nil {
			g.cases.SetRuleExpressions(exprs)
		}
		sink = g.cases
	}
	if len(d.RuleFiles) > 0 {
		var seen rules.SeenElsewhere
		if c.Rules.Absence == config.AbsenceShared {
			timeout := wc.Timeout.D()
			if timeout <= 0 {
				timeout = 10 * time.Second
			}
			seen = lastseen.New(wc.URL, wc.Bucket, wc.Token, timeout)
		}
		g.engine, err = rules.NewEngine(rules.Options{
			SeenElsewhere:    seen,
			Location:         c.Gateway.Location,
			Sink:             sink,
			Silences:         c.Rules.Silences,
			EvalBudget:       c.Rules.EvalBudget.D(),
			QuarantineAfter:  c.Rules.QuarantineAfter,
			QuarantineWindow: c.Rules.QuarantineWindow.D(),
			DisplaySamples:   c.Rules.DisplayHistory(),
			StatePath:        c.Gateway.DataDir + "/rules.db",
		}, d.Catalog, d.Inventory, g.reg, log.With("component", "rules"))
		if err != nil {
			return nil, fmt.Errorf("starting the rule engine: %w", err)
		}
		e := g.engine
		g.closers = append(g.closers, func() {
			if err := e.Close(); err != nil {
				log.Error("closing the rule engine state", "err", err)
			}
		})
		if err := g.engine.Load(d.RuleFiles...); err != nil {
			return nil, fmt.Errorf("loading rules: %w", err)
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
		return nil, err
	}
	if mb := d.assets(devices.Modbus); len(mb) > 0 {
		if g.poller, err = modbuspoll.New(c.ModbusPoller(), mb, pipe, g.reg, log.With("component", "modbus")); err != nil {
			return nil, fmt.Errorf("starting the Modbus poller: %w", err)
		}
	}
	if c.MQTT != nil {
		mc, err := c.MQTTSubscriber()
		if err != nil {
			return nil, err
		}
		if g.sub, err = mqttsub.New(mc, d.Inventory, pipe, g.reg, log.With("component", "mqtt")); err != nil {
			return nil, fmt.Errorf("starting the MQTT subscriber: %w", err)
		}
	}

	g.checks["influxdb"] = func() error {
		if !g.writer.Healthy() {
			return errors.New("last write or ping failed")
		}
		return nil
	}
	if g.wal != nil {
		g.checks["wal"] = g.wal.Ready
	}
	if g.sub != nil {
		g.checks["mqtt"] = func() error {
			if !g.sub.Connected() {
				return errors.New("not connected to the broker")
			}
			return nil
		}
	}
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
	if g.page, err = statuspage.New(popts, g.reg, log.With("component", "statuspage")); err != nil {
		return nil, fmt.Errorf("starting the status page: %w", err)
	}
	g.pageH = g.page.Handler()
	ok = true
	return g, nil
}

// run runs the components until ctx ends or a source fails. The sources
// stop first; the rules, the case client and the writer keep running until
// the sources have returned, so nothing accepted is left unwritten.
func (g *Gateway) run(ctx context.Context) error {
	writerCtx, stopWriter := context.WithCancel(context.Background())
	defer stopWriter()
	back := &errgroup.Group{}
	back.Go(func() error { return g.drain(writerCtx) })
	if g.cases != nil {
		back.Go(func() error { return g.cases.Run(writerCtx) })
	}
	if g.engine != nil {
		back.Go(func() error { return g.engine.Run(writerCtx) })
	}
	src, sctx := errgroup.WithContext(ctx)
	src.Go(func() error { return g.page.Run(sctx) })
	if g.poller != nil {
		src.Go(func() error { return g.poller.Run(sctx) })
	}
	if g.sub != nil {
		src.Go(func() error { return g.sub.Run(sctx) })
	}
	c, d := g.d.Config, g.d
	g.log.Info("gateway running", "gateway", c.Gateway.ID, "assets", d.Inventory.Len(),
		"modbus_devices", len(d.assets(devices.Modbus)), "mqtt", c.MQTT != nil, "rules", len(d.RuleFiles))
	srcErr := src.Wait()
	g.log.Info("sources stopped; flushing telemetry")
	stopWriter()
	if err := back.Wait(); err != nil && srcErr == nil {
		srcErr = err
	}
	if errors.Is(srcErr, context.Canceled) {
		srcErr = nil
	}
	return srcErr
}

// close closes what build opened, last opened first (the rule engine
// persists its state, the case outbox and the WAL close, the writer lets go
// of its connections). Call it after run returned.
func (g *Gateway) close() {
	for i := len(g.closers) - 1; i >= 0; i-- {
		g.closers[i]()
	}
	g.closers = nil
}

// reloadRules applies new rule files and silences to the running engine.
// A failure leaves the running rules as they were.
func (g *Gateway) reloadRules(d *Deployment) error {
	if g.engine == nil {
		return nil // no rule files before or after (else the components restart)
	}
	if err := g.engine.Load(d.RuleFiles...); err != nil {
		return err
	}
	if err := g.engine.SetSilences(d.Config.Rules.Silences); err != nil {
		return fmt.Errorf("rules.silences: %w", err)
	}
	if g.cases != nil {
		if exprs, err := caseclient.RuleExpressions(d.RuleFiles...); err == nil {
			g.cases.SetRuleExpressions(exprs)
		}
	}
	return nil
}

// Status is the /status document.
type Status struct {
	Gateway    string                    `json:"gateway"`
	Version    string                    `json:"version"`
	Started    time.Time                 `json:"started"`
	Applied    time.Time                 `json:"applied,omitzero"` // when the running components were built (the last component restart)
	Assets     int                       `json:"assets"`
	InfluxDB   influx.Stats              `json:"influxdb"`
	InfluxUp   bool                      `json:"influxdb_up"`
	WAL        *wal.Stats                `json:"wal,omitempty"`
	MQTT       *mqttsub.Status           `json:"mqtt,omitempty"`
	Modbus     []modbuspoll.DeviceStatus `json:"modbus,omitempty"`
	Episodes   []rules.Episode           `json:"episodes,omitempty"`
	Cases      *caseclient.Status        `json:"cases,omitempty"`
	DevicesUp  int                       `json:"modbus_devices_up"`
	Restarting bool                      `json:"restarting,omitempty"` // the components are being rebuilt after a reload
}

// status returns the components' current status.
func (g *Gateway) status() Status {
	s := Status{Gateway: g.d.Config.Gateway.ID, Version: Version, Applied: g.built, Assets: g.d.Inventory.Len(),
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
