package wal

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"

	"github.com/citygw/citygw/devices/yamlconf"
)

// SyncMode says when appended lines are fsynced.
type SyncMode string

const (
	// SyncAlways fsyncs before Append returns: safe against a power cut,
	// slower (one fsync per group of concurrent appends).
	SyncAlways SyncMode = "always"
	// SyncInterval fsyncs every SyncInterval in the background: a process
	// crash loses nothing, a power cut at most the last interval.
	SyncInterval SyncMode = "interval"
	// SyncNone never fsyncs (the kernel writes back when it likes): a process
	// crash loses nothing, a power cut loses what the kernel had not written.
	SyncNone SyncMode = "none"
)

// FullPolicy says what Append does when the backlog reaches MaxBytes, or the
// disk is full.
type FullPolicy string

const (
	// Block makes Append wait until InfluxDB has taken enough of the backlog
	// (or the caller's context ends): the MQTT source then does not
	// acknowledge, so the broker holds the backlog, and Modbus polls wait.
	Block FullPolicy = "block"
	// DropOldest deletes the oldest segment of the backlog; every point lost
	// is counted in citygw_wal_dropped_points_total and logged.
	DropOldest FullPolicy = "drop_oldest"
)

// Config configures a WAL. Zero fields take the defaults noted. The gateway
// configuration embeds it under "wal:".
type Config struct {
	// Enabled turns the log on; it is on unless set to false. Off, the
	// InfluxDB writer's bounded memory queue is used instead.
	Enabled *bool `yaml:"enabled,omitempty"`
	// Dir holds the segment files, the ack file and dead_letter.lp.
	Dir string `yaml:"dir"`
	// Sync is always, interval (default) or none.
	Sync SyncMode `yaml:"sync,omitempty"`
	// SyncInterval is the group fsync period of sync "interval", default 100ms.
	SyncInterval yamlconf.Duration `yaml:"sync_interval,omitempty"`
	// MaxBytes bounds the unacknowledged backlog, default 1GiB. Disk use may
	// exceed it by one segment (the partly acknowledged oldest one).
	MaxBytes ByteSize `yaml:"max_bytes,omitempty"`
	// SegmentBytes is the size at which a new segment file is started,
	// default 16MiB (at most a quarter of MaxBytes).
	SegmentBytes ByteSize `yaml:"segment_bytes,omitempty"`
	// OnFull is block (default) or drop_oldest.
	OnFull FullPolicy `yaml:"on_full,omitempty"`
	// BatchSize is the number of lines that makes a batch due at once,
	// default 5000; a smaller batch is due when its oldest line is
	// FlushInterval old (default 1s).
	BatchSize     int               `yaml:"batch_size,omitempty"`
	FlushInterval yamlconf.Duration `yaml:"flush_interval,omitempty"`
	// MaxBatchLines and MaxBatchBytes bound one batch when a backlog is
	// drained, default BatchSize (5000 lines) and 16MiB (keep it under
	// InfluxDB's max-body-size, 25MB by default).
	MaxBatchLines int      `yaml:"max_batch_lines,omitempty"`
	MaxBatchBytes ByteSize `yaml:"max_batch_bytes,omitempty"`
	// MaxRecordBytes is the largest line accepted, default 1MiB (at most
	// SegmentBytes).
	MaxRecordBytes ByteSize `yaml:"max_record_bytes,omitempty"`
	// LogInterval is how often dropped points and a full disk are logged,
	// default 10s.
	LogInterval yamlconf.Duration `yaml:"log_interval,omitempty"`
}

// On reports whether the WAL is enabled (the default).
func (c Config) On() bool { return c.Enabled == nil || *c.Enabled }

// DeadLetterPath is where the InfluxDB writer keeps points InfluxDB refused
// for good: dead_letter.lp in Dir.
func (c Config) DeadLetterPath() string { return joinPath(c.Dir, DeadLetterFile) }

// DeadLetterFile is the name of the dead-letter file in the WAL directory.
const DeadLetterFile = "dead_letter.lp"

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return strings.TrimRight(dir, "/") + "/" + name
}

func (c *Config) setDefaults() {
	def := func(d *yamlconf.Duration, v time.Duration) {
		if *d <= 0 {
			*d = yamlconf.Duration(v)
		}
	}
	if c.Sync == "" {
		c.Sync = SyncInterval
	}
	if c.OnFull == "" {
		c.OnFull = Block
	}
	def(&c.SyncInterval, 100*time.Millisecond)
	def(&c.FlushInterval, time.Second)
	def(&c.LogInterval, 10*time.Second)
	if c.MaxBytes <= 0 {
		c.MaxBytes = 1 << 30
	}
	if c.SegmentBytes <= 0 {
		c.SegmentBytes = min(16<<20, c.MaxBytes/4)
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 5000
	}
	if c.MaxBatchLines <= 0 {
		// The live batch size. Twice it was the default while the InfluxDB
		// writer sent one batch at a time; with two in flight (its
		// max_in_flight default) the burst drained as fast with live-size
		// batches (15.8k against 15.9k points/s) and the gateway peaked at
		// 87 MB RSS instead of 97: every batch buffer the WAL cycles through
		// (in flight, being filled, kept for reuse) is half the size. Far
		// bigger batches are worse: 50,000 lines timed out on a loaded
		// 2-core machine, and each timeout resent them all.
		c.MaxBatchLines = c.BatchSize
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 16 << 20
	}
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = min(1<<20, c.SegmentBytes)
	}
}

// Validate checks the configuration as Open does, defaults applied; a
// disabled WAL is not checked. For the gateway's check command.
func (c Config) Validate() error {
	if !c.On() {
		return nil
	}
	c.setDefaults()
	return c.validate()
}

// validate checks a configuration after defaults are applied.
func (c *Config) validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("wal.dir is required"))
	}
	switch c.Sync {
	case SyncAlways, SyncInterval, SyncNone:
	default:
		errs = append(errs, fmt.Errorf("wal.sync %q: want always, interval or none", c.Sync))
	}
	switch c.OnFull {
	case Block, DropOldest:
	default:
		errs = append(errs, fmt.Errorf("wal.on_full %q: want block or drop_oldest", c.OnFull))
	}
	if c.SegmentBytes > c.MaxBytes/4 {
		errs = append(errs, fmt.Errorf("wal.segment_bytes %d: at most a quarter of max_bytes (%d)", c.SegmentBytes, c.MaxBytes))
	}
	if c.MaxRecordBytes > maxPayload {
		errs = append(errs, fmt.Errorf("wal.max_record_bytes %d: at most %d", c.MaxRecordBytes, maxPayload))
	}
	if c.MaxRecordBytes > c.SegmentBytes {
		errs = append(errs, fmt.Errorf("wal.max_record_bytes %d: at most segment_bytes (%d)", c.MaxRecordBytes, c.SegmentBytes))
	}
	if c.MaxBatchLines < c.BatchSize {
		errs = append(errs, fmt.Errorf("wal.max_batch_lines %d: at least batch_size (%d)", c.MaxBatchLines, c.BatchSize))
	}
	return errors.Join(errs...)
}

// ByteSize is a size in bytes, written in YAML as an integer or with a unit:
// 512KiB, 16MiB, 1GiB (or KB, MB, GB, powers of 1000).
type ByteSize int64

var units = []struct {
	suffix string
	mult   int64
}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}

// ParseByteSize parses "1GiB", "500MB", "4096".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q (use bytes or a unit: 512KiB, 16MiB, 1GiB, 500MB)", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML implements yaml.NodeUnmarshaler so that errors keep the node's position.
func (b *ByteSize) UnmarshalYAML(n ast.Node) error {
	text := n.String()
	if s, ok := n.(*ast.StringNode); ok {
		text = s.Value
	}
	v, err := ParseByteSize(text)
	if err != nil {
		e := &yamlconf.Error{Msg: err.Error()}
		if tk := n.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
		return e
	}
	*b = v
	return nil
}

// MarshalYAML writes the size as an integer.
func (b ByteSize) MarshalYAML() (any, error) { return int64(b), nil }
