// Package config loads the gateway's one YAML configuration file, validates
// it strictly (unknown keys are errors naming file:line:col) and resolves its
// secrets from the environment or from files, never from the file itself
// unless the operator insists.
//
// Relative paths in the file (inventory, profile and rule directories,
// secret files, data directory) are resolved against the directory of the
// configuration file, as Prometheus does for rule files.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/citygw/citygw/caseclient"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/gateway/gctune"
	"github.com/citygw/citygw/gateway/influx"
	"github.com/citygw/citygw/gateway/modbuspoll"
	"github.com/citygw/citygw/gateway/mqttsub"
	"github.com/citygw/citygw/gateway/wal"
	"github.com/citygw/citygw/rules"
)

// Config is the whole gateway configuration.
type Config struct {
	Gateway   Gateway    `yaml:"gateway"`
	Inventory string     `yaml:"inventory"`          // YAML or CSV asset inventory
	Profiles  []string   `yaml:"profiles,omitempty"` // extra profile directories besides the built-in ones
	Admin     Admin      `yaml:"admin,omitempty"`
	Log       Log        `yaml:"log,omitempty"`
	InfluxDB  InfluxDB   `yaml:"influxdb"`
	MQTT      *MQTT      `yaml:"mqtt,omitempty"`
	Modbus    *Modbus    `yaml:"modbus,omitempty"`
	Rules     Rules      `yaml:"rules,omitempty"`
	Cases     *Cases     `yaml:"cases,omitempty"`
	WAL       wal.Config `yaml:"wal,omitempty"` // the telemetry write-ahead log; on by default
	Time      TimeCheck  `yaml:"timestamps,omitempty"`
	// Runtime tunes Go's garbage collector (gc_percent, memory_limit,
	// gc_headroom); the GOGC and GOMEMLIMIT environment variables win
	// over it.
	Runtime gctune.Config `yaml:"runtime,omitempty"`

	// File is the path the configuration was loaded from.
	File string `yaml:"-"`
}

// Gateway identifies this gateway.
type Gateway struct {
	// ID is written as the "gateway" tag of every point.
	ID string `yaml:"id"`
	// Timezone is the city's IANA time zone for time-of-day rules (default Asia/Shanghai).
	Timezone string `yaml:"timezone,omitempty"`
	// DataDir holds the gateway's state (rule engine state; later the WAL and case outbox).
	DataDir string `yaml:"data_dir,omitempty"`

	Location *time.Location `yaml:"-"`
}

// Admin is the admin HTTP listener: /metrics, /healthz, /readyz, /status.
type Admin struct {
	// Listen is host:port, 127.0.0.1:9273 by default: loopback unless the
	// operator opens it on purpose.
	Listen string `yaml:"listen,omitempty"`
	// Token, when set, is required as "Authorization: Bearer …" on every
	// endpoint but /healthz and /readyz.
	Token Secret `yaml:"token,omitempty"`
}

// Log configures log/slog output.
type Log struct {
	Level  string `yaml:"level,omitempty"`  // debug, info (default), warn, error
	Format string `yaml:"format,omitempty"` // text (default) or json
}

// InfluxDB is the telemetry sink.
type InfluxDB struct {
	influx.WriterConfig `yaml:",inline"`
	Token               Secret `yaml:"token,omitempty"`
}

// MQTT is the MQTT source.
type MQTT struct {
	mqttsub.Config `yaml:",inline"`
	Password       Secret `yaml:"password,omitempty"`
}

// Modbus is the Modbus source's settings (devices come from the inventory).
type Modbus struct {
	Interval             yamlconf.Duration                  `yaml:"interval,omitempty"`
	Timeout              yamlconf.Duration                  `yaml:"timeout,omitempty"`
	OfflineAfter         int                                `yaml:"offline_after,omitempty"`
	BackoffMin           yamlconf.Duration                  `yaml:"backoff_min,omitempty"`
	BackoffMax           yamlconf.Duration                  `yaml:"backoff_max,omitempty"`
	PauseAfterConnect    yamlconf.Duration                  `yaml:"pause_after_connect,omitempty"`
	PauseBetweenRequests yamlconf.Duration                  `yaml:"pause_between_requests,omitempty"`
	CloseAfterPoll       bool                               `yaml:"close_after_poll,omitempty"`
	Profiles             map[string]modbuspoll.PlanOverride `yaml:"profiles,omitempty"`
	Serial               modbuspoll.SerialDefaults          `yaml:"serial,omitempty"`
}

// Rules configures the rule engine.
type Rules struct {
	// Files are rule files or glob patterns.
	Files []string `yaml:"files,omitempty"`
	// Silences are maintenance windows: matching episodes keep their state
	// but open no case while the silence lasts.
	Silences []rules.Silence `yaml:"silences,omitempty"`
	// EvalBudget: a reading whose rules take longer is counted
	// (citygw_rule_eval_over_budget_total) and logged, and its asset's next
	// readings are timed rule by rule: a rule over the budget
	// QuarantineAfter times within QuarantineWindow is quarantined (no longer
	// evaluated) until the next reload. Default 50ms, 0s = off.
	EvalBudget       *yamlconf.Duration `yaml:"eval_budget,omitempty"`
	QuarantineAfter  int                `yaml:"quarantine_after,omitempty"`  // default 3
	QuarantineWindow yamlconf.Duration  `yaml:"quarantine_window,omitempty"` // default 10m
	// DisplaySamples is how many recent values of every numeric field of
	// every asset the gateway keeps for the status page's sparklines
	// (default 8, about 24 bytes per field and asset; 0 = off). 126,000
	// assets at 16 took 86 MB in the city benchmark; 8 halves that.
	DisplaySamples *int `yaml:"display_samples,omitempty"`
	// Absence says what an absence rule (absent:) counts as hearing from
	// an asset: "local" (the default), readings this gateway received;
	// "shared", also readings any gateway stored in the InfluxDB database
	// of influxdb.url and bucket, asked (gateway/lastseen) before an asset
	// this gateway has not heard from is called silent. For replicas
	// sharing a subscription under a sticky broker policy (EMQX
	// hash_topic), where each replica receives only its share of the
	// assets (gateway/DEPLOYMENT.md).
	Absence string `yaml:"absence,omitempty"`
}

// The values of rules.absence.
const (
	AbsenceLocal  = "local"
	AbsenceShared = "shared"
)

// DisplayHistory is DisplaySamples as rules.Options wants it (negative: off).
func (r Rules) DisplayHistory() int {
	switch {
	case r.DisplaySamples == nil:
		return 8
	case *r.DisplaySamples <= 0:
		return -1
	}
	return *r.DisplaySamples
}

// Cases configures the case client: where anomaly episodes become cases.
type Cases struct {
	caseclient.Config `yaml:",inline"`
	// Codes is the city code table (configs/citycodes.yaml).
	Codes string `yaml:"codes"`
	// Secrets gives each sink's credentials from the environment or files,
	// keyed by sink name; they replace api_key/secret written in the sink.
	Secrets map[string]SinkSecrets `yaml:"secrets,omitempty"`
}

// SinkSecrets are one case sink's credentials.
type SinkSecrets struct {
	APIKey Secret `yaml:"api_key,omitempty"` // Open311 api_key
	Secret Secret `yaml:"secret,omitempty"`  // webhook signing secret (whsec_…)
}

// TimeCheck is the plausibility window for device timestamps.
type TimeCheck struct {
	MaxClockSkew yamlconf.Duration `yaml:"max_clock_skew,omitempty"` // default 5m
	MaxClockAge  yamlconf.Duration `yaml:"max_clock_age,omitempty"`  // default 24h
}

// Secret is a credential given by environment variable name, by file, or
// (discouraged, for tests) inline. Resolve returns its value; String never
// reveals it.
type Secret struct {
	Env   string `yaml:"env,omitempty"`
	File  string `yaml:"file,omitempty"`
	Value string `yaml:"value,omitempty"`
}

// IsSet reports whether the secret is configured at all.
func (s Secret) IsSet() bool { return s.Env != "" || s.File != "" || s.Value != "" }

// Resolve returns the secret's value.
func (s Secret) Resolve() (string, error) {
	switch {
	case s.Env != "":
		v, ok := os.LookupEnv(s.Env)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", s.Env)
		}
		return v, nil
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return "", fmt.Errorf("reading secret file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return s.Value, nil
}

// String describes where the secret comes from, never its value.
func (s Secret) String() string {
	switch {
	case s.Env != "":
		return "env:" + s.Env
	case s.File != "":
		return "file:" + s.File
	case s.Value != "":
		return "inline:<redacted>"
	}
	return "<unset>"
}

// Load reads, validates and completes a configuration file.
func Load(file string) (*Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(file, data)
}

// Parse decodes and validates configuration data read from file.
func Parse(file string, data []byte) (*Config, error) {
	var c Config
	doc, err := yamlconf.Decode(file, data, &c)
	if err != nil {
		return nil, err
	}
	c.File = file
	if errs := c.validate(doc, filepath.Dir(file)); len(errs) > 0 {
		return nil, errs
	}
	return &c, nil
}

func (c *Config) validate(doc *yamlconf.Doc, base string) yamlconf.Errors {
	var errs yamlconf.Errors
	add := func(path, field, format string, args ...any) {
		errs = append(errs, doc.Errorf(path, field, format, args...))
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	if err := gctune.ValidateMemoryLimit(c.Runtime.MemoryLimit); err != nil {
		add("$.runtime.memory_limit", "runtime.memory_limit", "%v", err)
	}
	if err := gctune.ValidateHeadroom(c.Runtime.GCHeadroom); err != nil {
		add("$.runtime.gc_headroom", "runtime.gc_headroom", "%v", err)
	}
	if c.Gateway.ID == "" {
		add("$.gateway", "gateway.id", "required: it tags every point this gateway writes")
	} else if strings.ContainsAny(c.Gateway.ID, " ,=\\\"\n") {
		add("$.gateway.id", "gateway.id", "must not contain spaces, commas, '=', quotes or backslashes")
	}
	if c.Gateway.Timezone == "" {
		c.Gateway.Timezone = "Asia/Shanghai"
	}
	loc, err := time.LoadLocation(c.Gateway.Timezone)
	if err != nil {
		add("$.gateway.timezone", "gateway.timezone", "unknown time zone %q", c.Gateway.Timezone)
	}
	c.Gateway.Location = loc
	if c.Gateway.DataDir == "" {
		c.Gateway.DataDir = "data"
	}
	c.Gateway.DataDir = abs(c.Gateway.DataDir)
	if c.Inventory == "" {
		add("$", "inventory", "required: the asset inventory file (.yaml or .csv)")
	}
	c.Inventory = abs(c.Inventory)
	for i := range c.Profiles {
		c.Profiles[i] = abs(c.Profiles[i])
	}
	for i := range c.Rules.Files {
		c.Rules.Files[i] = abs(c.Rules.Files[i])
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = "127.0.0.1:9273"
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		add("$.log.level", "log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		add("$.log.format", "log.format", "want text or json, got %q", c.Log.Format)
	}
	if c.InfluxDB.URL == "" {
		add("$.influxdb", "influxdb.url", "required")
	}
	if c.InfluxDB.Bucket == "" {
		add("$.influxdb", "influxdb.bucket", "required (database/retention-policy for InfluxDB 1.8)")
	}
	for _, s := range []struct {
		path string
		sec  *Secret
	}{{"$.admin.token", &c.Admin.Token}, {"$.influxdb.token", &c.InfluxDB.Token}, {"$.mqtt.password", mqttPassword(c)}} {
		if s.sec == nil {
			continue
		}
		n := 0
		for _, v := range []string{s.sec.Env, s.sec.File, s.sec.Value} {
			if v != "" {
				n++
			}
		}
		if n > 1 {
			add(s.path, strings.TrimPrefix(s.path, "$."), "give one of env, file or value")
		}
		s.sec.File = abs(s.sec.File)
		if _, err := s.sec.Resolve(); s.sec.IsSet() && err != nil {
			add(s.path, strings.TrimPrefix(s.path, "$."), "%v", err)
		}
	}
	for i := range c.Rules.Silences {
		if err := c.Rules.Silences[i].Validate(); err != nil {
			add(fmt.Sprintf("$.rules.silences[%d]", i), fmt.Sprintf("rules.silences[%d]", i), "%v", err)
		}
	}
	if c.Rules.EvalBudget == nil {
		d := yamlconf.Duration(50 * time.Millisecond)
		c.Rules.EvalBudget = &d
	}
	switch c.Rules.Absence {
	case "":
		c.Rules.Absence = AbsenceLocal
	case AbsenceLocal, AbsenceShared:
	default:
		add("$.rules.absence", "rules.absence", "want local or shared, got %q", c.Rules.Absence)
	}
	if c.Rules.QuarantineAfter < 0 || c.Rules.QuarantineWindow < 0 {
		add("$.rules.quarantine_after", "rules.quarantine_after", "quarantine_after and quarantine_window must not be negative")
	}
	if c.WAL.Dir == "" {
		c.WAL.Dir = filepath.Join(c.Gateway.DataDir, "wal") // DataDir is resolved already
	} else {
		c.WAL.Dir = abs(c.WAL.Dir)
	}
	if err := c.WAL.Validate(); err != nil {
		add("$.wal", "wal", "%v", err)
	}
	if cs := c.Cases; cs != nil {
		if cs.Codes == "" {
			add("$.cases", "cases.codes", "required: the city code table file")
		}
		cs.Codes = abs(cs.Codes)
		if cs.Outbox == "" {
			cs.Outbox = filepath.Join(c.Gateway.DataDir, "cases.db") // DataDir is resolved already
		} else {
			cs.Outbox = abs(cs.Outbox)
		}
		names := map[string]bool{}
		for _, sk := range cs.Sinks {
			names[sk.Name] = true
		}
		for name, sec := range cs.Secrets {
			at := "$.cases.secrets." + name
			if !names[name] {
				add(at, "cases.secrets."+name, "no sink named %q", name)
			}
			for _, p := range []*Secret{&sec.APIKey, &sec.Secret} {
				p.File = abs(p.File)
				if _, err := p.Resolve(); p.IsSet() && err != nil {
					add(at, "cases.secrets."+name, "%v", err)
				}
			}
			cs.Secrets[name] = sec
		}
	}
	if m := c.MQTT; m != nil {
		m.TLS.CAFile, m.TLS.CertFile, m.TLS.KeyFile = abs(m.TLS.CAFile), abs(m.TLS.CertFile), abs(m.TLS.KeyFile)
		if m.Broker == "" {
			add("$.mqtt", "mqtt.broker", "required when the mqtt section is present")
		}
		if len(m.Subscriptions) == 0 {
			add("$.mqtt", "mqtt.subscriptions", "at least one topic template, e.g. city/bins/{asset}/telemetry")
		}
	}
	return errs
}

func mqttPassword(c *Config) *Secret {
	if c.MQTT == nil {
		return nil
	}
	return &c.MQTT.Password
}

// RuleFiles expands the rule file patterns, sorted, without duplicates.
func (c *Config) RuleFiles() ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, pat := range c.Rules.Files {
		matches, err := filepath.Glob(pat)
		if err != nil {
			return nil, fmt.Errorf("rule file pattern %q: %w", pat, err)
		}
		if len(matches) == 0 && !strings.ContainsAny(pat, "*?[") {
			return nil, fmt.Errorf("rule file %s: %w", pat, os.ErrNotExist)
		}
		for _, m := range matches {
			if !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	return out, nil
}

// ModbusPoller returns the poller configuration.
func (c *Config) ModbusPoller() modbuspoll.Config {
	m := c.Modbus
	if m == nil {
		m = &Modbus{}
	}
	return modbuspoll.Config{
		DefaultInterval:      m.Interval.D(),
		DefaultTimeout:       m.Timeout.D(),
		OfflineAfter:         m.OfflineAfter,
		BackoffMin:           m.BackoffMin.D(),
		BackoffMax:           m.BackoffMax.D(),
		PauseAfterConnect:    m.PauseAfterConnect.D(),
		PauseBetweenRequests: m.PauseBetweenRequests.D(),
		CloseAfterPoll:       m.CloseAfterPoll,
		Plans:                m.Profiles,
		RTU:                  m.Serial,
		MaxClockSkew:         c.Time.MaxClockSkew.D(),
		MaxClockAge:          c.Time.MaxClockAge.D(),
	}
}

// MQTTSubscriber returns the subscriber configuration with its password resolved.
func (c *Config) MQTTSubscriber() (mqttsub.Config, error) {
	if c.MQTT == nil {
		return mqttsub.Config{}, errors.New("no mqtt section")
	}
	mc := c.MQTT.Config
	pw, err := c.MQTT.Password.Resolve()
	if err != nil {
		return mc, fmt.Errorf("mqtt password: %w", err)
	}
	mc.Password = pw
	if mc.MaxClockSkew == 0 {
		mc.MaxClockSkew = c.Time.MaxClockSkew
	}
	if mc.MaxClockAge == 0 {
		mc.MaxClockAge = c.Time.MaxClockAge
	}
	return mc, nil
}

// CaseClient returns the case client configuration with the sinks'
// secrets resolved.
func (c *Config) CaseClient() (caseclient.Config, error) {
	if c.Cases == nil {
		return caseclient.Config{}, errors.New("no cases section")
	}
	cc := c.Cases.Config
	cc.Sinks = append([]caseclient.SinkConfig(nil), cc.Sinks...)
	for i := range cc.Sinks {
		sec, ok := c.Cases.Secrets[cc.Sinks[i].Name]
		if !ok {
			continue
		}
		if sec.APIKey.IsSet() {
			v, err := sec.APIKey.Resolve()
			if err != nil {
				return cc, fmt.Errorf("cases sink %s api_key: %w", cc.Sinks[i].Name, err)
			}
			cc.Sinks[i].APIKey = caseclient.Secret(v)
		}
		if sec.Secret.IsSet() {
			v, err := sec.Secret.Resolve()
			if err != nil {
				return cc, fmt.Errorf("cases sink %s secret: %w", cc.Sinks[i].Name, err)
			}
			cc.Sinks[i].Secret = caseclient.Secret(v)
		}
	}
	return cc, nil
}

// InfluxWriter returns the writer configuration with its token resolved.
func (c *Config) InfluxWriter() (influx.WriterConfig, error) {
	wc := c.InfluxDB.WriterConfig
	tok, err := c.InfluxDB.Token.Resolve()
	if err != nil {
		return wc, fmt.Errorf("influxdb token: %w", err)
	}
	wc.Token = tok
	return wc, nil
}
