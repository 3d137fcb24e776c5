// Package daemon assembles a running gateway from its configuration: it
// loads and checks the deployment (config, profiles, inventory, rules, code
// table), then wires the sources (Modbus poller, MQTT subscriber) through the
// pipeline to the InfluxDB writer and the rule engine, serves the admin
// endpoints, and shuts everything down in order: sources first, then the
// rules, then the writer's last flush.
//
// A reload (SIGHUP, POST /-/reload) loads and checks the whole deployment
// again and changes nothing when any of it is invalid. A valid one is
// applied by what changed (Diff): rules in place, or an in-process restart
// of the components (the same shutdown order, then a fresh build) while the
// admin server, its token and the reload metrics stay up.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"

	"github.com/citygw/citygw/caseclient"
	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/gateway/config"
	"github.com/citygw/citygw/rules"
)

// Deployment is everything a gateway runs with, loaded and validated.
type Deployment struct {
	Config    *config.Config
	Catalog   *devices.Catalog
	Inventory *devices.Inventory
	RuleFiles []string
	Codes     *caseclient.CodeTable // nil without a cases section

	sums map[string]string // digests of the files and secrets it was built from; see Diff
}

// Load reads the configuration and everything it names, reporting every
// problem found (file:line:col and field), not only the first.
func Load(cfgFile string) (*Deployment, error) {
	cfg, err := config.Load(cfgFile)
	if err != nil {
		return nil, err
	}
	d := &Deployment{Config: cfg, sums: fingerprint(cfg)}
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

// Version is set at build time with -ldflags "-X github.com/citygw/citygw/gateway/daemon.Version=…".
var Version = "dev"
