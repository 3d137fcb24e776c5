package caseclient

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/citygw/citygw/devices/yamlconf"
)

// Sink types.
const (
	SinkOpen311 = "open311"
	SinkWebhook = "webhook"
)

// Secret is a credential (API key, webhook secret). It prints and logs as
// "[redacted]"; the caller resolves it (from a file, the environment, a
// vault) before New, and it is never written to the outbox.
type Secret string

func (Secret) String() string { return "[redacted]" }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalText keeps secrets out of JSON/YAML dumps of the config.
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// UnmarshalText reads a secret.
func (s *Secret) UnmarshalText(b []byte) error { *s = Secret(b); return nil }

// SinkConfig is one case system the client delivers to.
type SinkConfig struct {
	Name string `yaml:"name"` // unique; the metric label and the key of service_codes in the code table
	Type string `yaml:"type"` // open311 or webhook
	// URL is the Open311 endpoint base (…/open311/v2, the paths
	// /requests.json etc. are appended) or the webhook's URL.
	URL          string `yaml:"url"`
	APIKey       Secret `yaml:"api_key,omitempty"`         // Open311 api_key
	Jurisdiction string `yaml:"jurisdiction_id,omitempty"` // Open311 jurisdiction_id, when the endpoint serves several
	Secret       Secret `yaml:"secret,omitempty"`          // webhook signing secret, whsec_<base64>
	// CaseURL is a link to a case on the case system for the status page;
	// {id} is replaced with its service_request_id.
	CaseURL string            `yaml:"case_url,omitempty"`
	Timeout yamlconf.Duration `yaml:"timeout,omitempty"` // per request; default Config.Timeout
}

// Config configures a Client; it is embedded in gateway.yaml under `cases:`.
type Config struct {
	Outbox string       `yaml:"outbox"` // bbolt file of the durable outbox and case state
	Sinks  []SinkConfig `yaml:"sinks"`

	// RepeatInterval is the least time between two updates of one case for
	// a severity change or a still-running episode; default 4h.
	RepeatInterval yamlconf.Duration `yaml:"repeat_interval,omitempty"`
	// Remind sends a "still active" update when an episode has been firing
	// for RepeatInterval since the last update; default on.
	Remind *bool `yaml:"remind,omitempty"`
	// ReopenWait is how long after the case system closed (or rejected) a
	// case whose anomaly persists a new case opens; default 30m.
	ReopenWait yamlconf.Duration `yaml:"reopen_wait,omitempty"`
	// PollInterval is how often the status of open Open311 requests (and
	// pending batch tokens) is read; default 5m.
	PollInterval yamlconf.Duration `yaml:"poll_interval,omitempty"`
	// TelemetryURL links a case to the asset's telemetry; {asset}, {kind},
	// {from} and {to} (RFC 3339), {from_ms} and {to_ms} (unix ms) are
	// replaced. Example: a Grafana dashboard URL.
	TelemetryURL string `yaml:"telemetry_url,omitempty"`

	Timeout         yamlconf.Duration `yaml:"timeout,omitempty"`            // per request; default 10s
	RetryBase       yamlconf.Duration `yaml:"retry_base,omitempty"`         // first retry wait; default 1s
	RetryMax        yamlconf.Duration `yaml:"retry_max,omitempty"`          // longest retry wait; default 5m
	BreakerFailures int               `yaml:"breaker_failures,omitempty"`   // consecutive failures that open a sink's breaker; default 5
	BreakerCooldown yamlconf.Duration `yaml:"breaker_cooldown,omitempty"`   // open time before a probe; default 30s
	MaxOpensPerRule int               `yaml:"max_opens_per_rule,omitempty"` // new cases per rule and sink per minute; default 10; -1 = no cap
	MaxOpensPerSink int               `yaml:"max_opens_per_sink,omitempty"` // new cases per sink per minute; default 30; -1 = no cap
	// LookupBeforeOpen makes every Open311 open look the case up by its key
	// before posting, not only after an ambiguous failure: for several
	// gateway replicas feeding one case system (one GET per new case).
	LookupBeforeOpen bool `yaml:"lookup_before_open,omitempty"`
	// Replicas declares that several gateway replicas feed the same case
	// systems. Each case then carries an anomaly key (rule id + group key,
	// the same on every replica whichever readings it saw); before its
	// first POST the client looks for an open case with the same anomaly
	// key and, if there is one, attaches its episode to that case instead
	// of opening another. Implies LookupBeforeOpen. See README.md.
	Replicas         bool              `yaml:"replicas,omitempty"`
	Retention        yamlconf.Duration `yaml:"retention,omitempty"`         // keep state of ended cases this long; default 168h
	DeliveryInterval yamlconf.Duration `yaml:"delivery_interval,omitempty"` // idle re-scan of the outbox; default 1s

	Now func() time.Time `yaml:"-"` // clock; default time.Now (tests)
}

func (c *Config) defaults() {
	def := func(d *yamlconf.Duration, v time.Duration) {
		if *d <= 0 {
			*d = yamlconf.Duration(v)
		}
	}
	def(&c.RepeatInterval, 4*time.Hour)
	def(&c.ReopenWait, 30*time.Minute)
	def(&c.PollInterval, 5*time.Minute)
	def(&c.Timeout, 10*time.Second)
	def(&c.RetryBase, time.Second)
	def(&c.RetryMax, 5*time.Minute)
	def(&c.BreakerCooldown, 30*time.Second)
	def(&c.Retention, 7*24*time.Hour)
	def(&c.DeliveryInterval, time.Second)
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 5
	}
	if c.MaxOpensPerRule == 0 {
		c.MaxOpensPerRule = 10
	}
	if c.MaxOpensPerSink == 0 {
		c.MaxOpensPerSink = 30
	}
	if c.Replicas {
		c.LookupBeforeOpen = true
	}
	if c.Remind == nil {
		t := true
		c.Remind = &t
	}
	for i := range c.Sinks {
		def(&c.Sinks[i].Timeout, c.Timeout.D())
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Outbox == "" {
		errs = append(errs, errors.New("cases.outbox: a file path is required"))
	}
	if len(c.Sinks) == 0 {
		errs = append(errs, errors.New("cases.sinks: at least one sink is required"))
	}
	seen := map[string]bool{}
	for i, s := range c.Sinks {
		at := fmt.Sprintf("cases.sinks[%d]", i)
		if s.Name == "" || seen[s.Name] || s.Name == "default" {
			errs = append(errs, fmt.Errorf("%s.name: a unique name other than \"default\" is required, got %q", at, s.Name))
		}
		seen[s.Name] = true
		if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s.url: want an http(s) URL, got %q", at, s.URL))
		}
		switch s.Type {
		case SinkOpen311:
			if s.APIKey == "" {
				errs = append(errs, fmt.Errorf("%s.api_key: required for open311", at))
			}
		case SinkWebhook:
			if _, err := decodeSecret(string(s.Secret)); err != nil {
				errs = append(errs, fmt.Errorf("%s.secret: %w", at, err))
			}
		default:
			errs = append(errs, fmt.Errorf("%s.type: want open311 or webhook, got %q", at, s.Type))
		}
	}
	return errors.Join(errs...)
}
