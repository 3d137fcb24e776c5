package modbuspoll

import (
	"fmt"
	"time"
)

// Config is the poller's configuration. Zero fields take the defaults noted.
// The yaml tags are the keys of the gateway configuration's modbus section
// (durations as Go duration strings, "500ms", "1m").
type Config struct {
	// DefaultInterval is the polling interval of a device whose address has
	// none (1s).
	DefaultInterval time.Duration `yaml:"interval,omitempty"`
	// DefaultTimeout is how long to wait for a reply (also to connect) when
	// the device's address sets no timeout (1s).
	DefaultTimeout time.Duration `yaml:"timeout,omitempty"`
	// OfflineAfter is how many consecutive failed polls mark a device offline
	// (2: one lost frame on a noisy RS-485 line does not flip a device's
	// state, two in a row do).
	OfflineAfter int `yaml:"offline_after,omitempty"`
	// BackoffMin and BackoffMax bound the wait before polling a failing
	// device again: it starts at BackoffMin, doubles with every further
	// failure up to BackoffMax, with ±20% jitter, and is never shorter than
	// the device's interval (1s, 60s).
	BackoffMin time.Duration `yaml:"backoff_min,omitempty"`
	BackoffMax time.Duration `yaml:"backoff_max,omitempty"`
	// ReconnectMin and ReconnectMax bound the wait between attempts to
	// (re)connect an endpoint, doubling likewise (BackoffMin, BackoffMax).
	ReconnectMin time.Duration `yaml:"reconnect_min,omitempty"`
	ReconnectMax time.Duration `yaml:"reconnect_max,omitempty"`
	// MaxClockSkew and MaxClockAge are the plausibility window for device
	// time: a device timestamp more than MaxClockSkew ahead of the receive
	// time or more than MaxClockAge behind it is ignored in favour of the
	// receive time (5m, 24h).
	MaxClockSkew time.Duration `yaml:"max_clock_skew,omitempty"`
	MaxClockAge  time.Duration `yaml:"max_clock_age,omitempty"`
	// RTU holds serial line defaults for devices whose address leaves them
	// unset (9600 baud, 8 data bits, no parity, 1 stop bit).
	RTU SerialDefaults `yaml:"rtu,omitempty"`
	// PauseAfterConnect waits after a connection is opened before the first
	// request, for devices that drop requests sent too early (0).
	PauseAfterConnect time.Duration `yaml:"pause_after_connect,omitempty"`
	// PauseBetweenRequests waits between the requests of one poll, for slow
	// devices (0).
	PauseBetweenRequests time.Duration `yaml:"pause_between_requests,omitempty"`
	// CloseAfterPoll closes the connection after every device poll, for
	// devices or converters that serve one connection badly over time.
	CloseAfterPoll bool `yaml:"close_after_poll,omitempty"`
	// Plans overrides the request planning of a profile, keyed by model.
	Plans map[string]PlanOverride `yaml:"profiles,omitempty"`
	// LogEvery is the least time between two decode or exception log lines
	// of one device; the lines in between are counted and the count is
	// reported in the next line (1m).
	LogEvery time.Duration `yaml:"log_every,omitempty"`
}

// SerialDefaults are Modbus RTU line settings.
type SerialDefaults struct {
	Baud     int    `yaml:"baud,omitempty"`
	DataBits int    `yaml:"data_bits,omitempty"`
	Parity   string `yaml:"parity,omitempty"` // N, E or O
	StopBits int    `yaml:"stop_bits,omitempty"`
}

func (c Config) withDefaults() (Config, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.DefaultInterval, time.Second)
	def(&c.DefaultTimeout, time.Second)
	def(&c.BackoffMin, time.Second)
	def(&c.BackoffMax, time.Minute)
	def(&c.ReconnectMin, c.BackoffMin)
	def(&c.ReconnectMax, c.BackoffMax)
	def(&c.MaxClockSkew, 5*time.Minute)
	def(&c.MaxClockAge, 24*time.Hour)
	def(&c.LogEvery, time.Minute)
	if c.OfflineAfter <= 0 {
		c.OfflineAfter = 2
	}
	if c.RTU.Baud == 0 {
		c.RTU.Baud = 9600
	}
	if c.RTU.DataBits == 0 {
		c.RTU.DataBits = 8
	}
	if c.RTU.Parity == "" {
		c.RTU.Parity = "N"
	}
	if c.RTU.StopBits == 0 {
		c.RTU.StopBits = 1
	}
	if c.BackoffMax < c.BackoffMin {
		return c, fmt.Errorf("modbus backoff max %v is below min %v", c.BackoffMax, c.BackoffMin)
	}
	if c.ReconnectMax < c.ReconnectMin {
		return c, fmt.Errorf("modbus reconnect max %v is below min %v", c.ReconnectMax, c.ReconnectMin)
	}
	switch c.RTU.Parity {
	case "N", "E", "O":
	default:
		return c, fmt.Errorf("modbus rtu parity: want N, E or O, got %q", c.RTU.Parity)
	}
	return c, nil
}
