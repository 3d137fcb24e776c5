package mqttsub

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices/yamlconf"
)

// Config configures a Subscriber. The zero values of the optional fields
// select the defaults documented on each field. The yaml tags let the
// gateway's configuration file embed it; Password is never read from YAML:
// the caller resolves it from the environment or a file.
type Config struct {
	// Broker is the broker URL: tcp://host:1883, ssl://host:8883 (also
	// tls://, mqtts://), ws://host/path or wss://host/path.
	Broker string `yaml:"broker"`
	// ClientID must be stable across restarts: the broker keeps the
	// persistent session, and the messages not yet acknowledged, under it.
	// Required unless CleanSession is set.
	ClientID string `yaml:"client_id"`
	Username string `yaml:"username,omitempty"`
	// Password is resolved by the caller and never logged.
	Password string    `yaml:"-"`
	TLS      TLSConfig `yaml:"tls,omitempty"`
	// CleanSession false (the default) asks for a persistent session: the
	// broker queues messages while the gateway is away and redelivers the
	// ones it did not acknowledge. With true, refused messages are lost.
	CleanSession bool `yaml:"clean_session,omitempty"`
	// KeepAlive is the MQTT keep-alive interval (default 30s).
	KeepAlive yamlconf.Duration `yaml:"keep_alive,omitempty"`
	// ConnectTimeout bounds a connection attempt and a subscribe (default 10s).
	ConnectTimeout yamlconf.Duration `yaml:"connect_timeout,omitempty"`
	// MaxReconnectInterval caps the reconnection backoff (default 30s).
	MaxReconnectInterval yamlconf.Duration `yaml:"max_reconnect_interval,omitempty"`
	// Subscriptions are topic templates (see ParseTemplate).
	Subscriptions []Subscription `yaml:"subscriptions"`
	// MaxPayloadBytes: bigger payloads are counted, logged and dropped
	// (default 64 KiB).
	MaxPayloadBytes int `yaml:"max_payload_bytes,omitempty"`
	// MaxMessagesPerAsset caps one asset's messages per second (bursts of
	// two seconds' worth pass); beyond it messages are counted
	// (result="rate_limited"), logged and dropped, so one flooding sensor
	// cannot crowd out the city. Default 10; a negative value turns it off.
	MaxMessagesPerAsset float64 `yaml:"max_messages_per_asset,omitempty"`
	// Workers decode in parallel, each owning the assets that hash to it, so
	// that one asset's readings stay in order (default GOMAXPROCS).
	Workers int `yaml:"workers,omitempty"`
	// QueueSize is each worker's queue length (default 1024). When the
	// queues are full the subscriber stops reading from the broker, which
	// holds the backlog.
	QueueSize int `yaml:"queue_size,omitempty"`
	// A payload timestamp is used when it is at most MaxClockSkew ahead of
	// the receive time (default 5m) and at most MaxClockAge behind it
	// (default 24h); otherwise the receive time is.
	MaxClockSkew yamlconf.Duration `yaml:"max_clock_skew,omitempty"`
	MaxClockAge  yamlconf.Duration `yaml:"max_clock_age,omitempty"`
	// RedeliverAfter: MQTT brokers resend an unacknowledged message only
	// when the client reconnects. When the Handler refused messages and they
	// are still unacknowledged after this long, the subscriber reconnects so
	// that the broker redelivers them (default 30s; persistent sessions only).
	RedeliverAfter yamlconf.Duration `yaml:"redeliver_after,omitempty"`
	// LogInterval is the rate limit of problem logs: one line per asset and
	// problem per interval, with the count suppressed in between (default 1m).
	LogInterval yamlconf.Duration `yaml:"log_interval,omitempty"`

	// ReadingsTotal and DecodeErrorsTotal, when set, are used for
	// citygw_readings_total and citygw_decode_errors_total (labels source,
	// kind) instead of registering new ones; other sources (the Modbus
	// poller) count into the same vectors. When nil, the subscriber
	// registers them and, if they already are registered with the same
	// help and labels, uses the registered ones.
	ReadingsTotal     *prometheus.CounterVec `yaml:"-"`
	DecodeErrorsTotal *prometheus.CounterVec `yaml:"-"`
}

// TLSConfig are the TLS options for ssl:// and wss:// brokers.
type TLSConfig struct {
	CAFile             string `yaml:"ca_file,omitempty"`   // PEM CA bundle; default: the system roots
	CertFile           string `yaml:"cert_file,omitempty"` // client certificate (PEM), with KeyFile
	KeyFile            string `yaml:"key_file,omitempty"`
	ServerName         string `yaml:"server_name,omitempty"` // default: the broker's host
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify,omitempty"`
}

// Subscription is one topic template and the QoS to subscribe with.
type Subscription struct {
	// Topic is a template such as city/bins/{asset}/telemetry.
	Topic string `yaml:"topic"`
	// QoS is 0, 1 or 2 (default 1). Only QoS 1 and 2 messages are
	// acknowledged after the Handler accepted them; QoS 0 may be lost.
	QoS *int `yaml:"qos,omitempty"`
}

// QoS returns a pointer to q, for Subscription.QoS.
func QoS(q int) *int { return &q }

func (s Subscription) qos() byte {
	if s.QoS == nil {
		return 1
	}
	return byte(*s.QoS)
}

// Defaults.
const (
	DefaultKeepAlive       = 30 * time.Second
	DefaultConnectTimeout  = 10 * time.Second
	DefaultMaxReconnect    = 30 * time.Second
	DefaultMaxPayloadBytes = 64 << 10
	DefaultMaxPerAsset     = 10
	DefaultQueueSize       = 1024
	DefaultMaxClockSkew    = 5 * time.Minute
	DefaultMaxClockAge     = 24 * time.Hour
	DefaultRedeliverAfter  = 30 * time.Second
	DefaultLogInterval     = time.Minute
)

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// withDefaults validates c and fills in the defaults.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	u, err := url.Parse(c.Broker)
	switch {
	case c.Broker == "":
		errs = append(errs, errors.New("broker: required (tcp://host:1883, ssl://host:8883, ws://host/path)"))
	case err != nil:
		errs = append(errs, fmt.Errorf("broker: %w", err))
	default:
		switch u.Scheme {
		case "tcp", "mqtt", "ssl", "tls", "mqtts", "tcps", "ws", "wss":
		default:
			errs = append(errs, fmt.Errorf("broker: unsupported scheme %q (tcp, ssl, tls, mqtts, ws, wss)", u.Scheme))
		}
		if u.Host == "" {
			errs = append(errs, fmt.Errorf("broker: %q has no host", c.Broker))
		}
		if u.User != nil {
			errs = append(errs, errors.New("broker: put credentials in username and the password setting, not in the URL"))
		}
	}
	if c.ClientID == "" && !c.CleanSession {
		errs = append(errs, errors.New("client_id: required for a persistent session (set a stable id, or clean_session: true)"))
	}
	if len(c.ClientID) > 65535 {
		errs = append(errs, errors.New("client_id: too long"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls: cert_file and key_file go together"))
	}
	for i, s := range c.Subscriptions {
		if s.QoS != nil && (*s.QoS < 0 || *s.QoS > 2) {
			errs = append(errs, fmt.Errorf("subscriptions[%d].qos: want 0, 1 or 2, got %d", i, *s.QoS))
		}
	}
	if c.MaxPayloadBytes < 0 || c.Workers < 0 || c.QueueSize < 0 {
		errs = append(errs, errors.New("max_payload_bytes, workers and queue_size must not be negative"))
	}
	setDefault(&c.KeepAlive, yamlconf.Duration(DefaultKeepAlive))
	setDefault(&c.ConnectTimeout, yamlconf.Duration(DefaultConnectTimeout))
	setDefault(&c.MaxReconnectInterval, yamlconf.Duration(DefaultMaxReconnect))
	setDefault(&c.MaxPayloadBytes, DefaultMaxPayloadBytes)
	setDefault(&c.MaxMessagesPerAsset, DefaultMaxPerAsset)
	setDefault(&c.Workers, runtime.GOMAXPROCS(0))
	setDefault(&c.QueueSize, DefaultQueueSize)
	setDefault(&c.MaxClockSkew, yamlconf.Duration(DefaultMaxClockSkew))
	setDefault(&c.MaxClockAge, yamlconf.Duration(DefaultMaxClockAge))
	setDefault(&c.RedeliverAfter, yamlconf.Duration(DefaultRedeliverAfter))
	setDefault(&c.LogInterval, yamlconf.Duration(DefaultLogInterval))
	return c, errors.Join(errs...)
}

// tlsConfig builds the client TLS configuration, or nil when none is set.
func (c *Config) tlsConfig() (*tls.Config, error) {
	t := c.TLS
	if t == (TLSConfig{}) {
		return nil, nil
	}
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // an explicit operator choice, documented as unsafe
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificates found", t.CAFile)
		}
		conf.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: loading client certificate: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}
