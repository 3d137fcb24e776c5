// Package gctune sets the Go garbage collector's goal and soft memory limit
// for a gateway, from its configuration, the environment and the memory
// limit of the cgroup it runs in.
//
// A gateway's heap is mostly long-lived per-asset state (rule windows,
// last values, the inventory) with little garbage per point, so the
// runtime's default goal — collect when the heap has doubled since the
// last live mark (GOGC=100) — leaves the process at about twice its live
// memory for no gain: the city benchmark's 10,000-asset burst peaked at
// 211 MB RSS with GOGC=100 and 88 MB with GOGC=50, at the same gateway CPU
// (gateway/citybench, BENCHMARKS.md). The gateway therefore runs at 50
// unless told otherwise, as Prometheus runs at 75, and, like Prometheus'
// --auto-gomemlimit, sets the soft memory limit to 90% of its cgroup's
// memory limit when it has one, so that the collector works harder before
// the kernel's OOM killer does.
//
// A percentage goal scales the garbage the heap may hold with the live
// heap: right for a small gateway, wasteful for a city's. At 126,000 assets
// the live heap is about 220 MB and GOGC=50 let the process sit at about
// 360 MB RSS. So the gateway also bounds the garbage in bytes, gc_headroom (64 MiB
// by default): a Tuner keeps the soft memory limit at the live heap plus
// the runtime's other memory plus the headroom, so the collector runs
// before the garbage exceeds it. A small heap never reaches that limit and
// is collected by GOGC as before; a large one is collected more often,
// which costs CPU. In gateway/citybench's memory scenario (126,000 bins at
// ten times their real rate, about 20 MB/s of garbage, nearly all of it
// paho's per message) the gateway held 270 MB RSS instead of 356, for
// 39.9 gateway CPU seconds per million points instead of 30.9
// (BENCHMARKS.md, memory; GOMEMLIMIT=off in the environment turns the
// headroom off). At the city's real rate the collector runs a tenth as
// often.
//
// The environment wins: with GOGC or GOMEMLIMIT set the runtime's own
// reading of them stands and the configuration is not applied (with
// GOMEMLIMIT set, no headroom either).
package gctune

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultGCPercent is the gateway's GOGC when neither the configuration nor
// the environment sets one.
const DefaultGCPercent = 50

// DefaultHeadroom is gc_headroom when the configuration sets none.
const DefaultHeadroom = 64 << 20

// AutoLimitRatio is the share of the cgroup's memory limit that "auto"
// sets as the soft memory limit.
const AutoLimitRatio = 0.9

// Config is the runtime section of a gateway configuration.
type Config struct {
	// GCPercent is GOGC: how far the heap may grow past the live heap
	// before a collection, in percent (default 50; negative: off).
	GCPercent *int `yaml:"gc_percent,omitempty"`
	// MemoryLimit is GOMEMLIMIT: "auto" (the default: 90% of the cgroup's
	// memory limit when it has one, else none), "off", or a size in bytes
	// with an optional unit B, KiB, MiB, GiB or TiB, as GOMEMLIMIT takes it.
	MemoryLimit string `yaml:"memory_limit,omitempty"`
	// GCHeadroom bounds, in bytes, how much garbage the heap may hold
	// beyond its live objects: a size with an optional unit as for
	// memory_limit (default 64MiB), or "off" to leave it to gc_percent
	// alone. The lower of the two bounds applies.
	GCHeadroom string `yaml:"gc_headroom,omitempty"`
}

// Validate checks the configuration: memory_limit and gc_headroom can be
// wrong, and the error names which.
func (c Config) Validate() error {
	if err := ValidateMemoryLimit(c.MemoryLimit); err != nil {
		return fmt.Errorf("memory_limit: %w", err)
	}
	if err := ValidateHeadroom(c.GCHeadroom); err != nil {
		return fmt.Errorf("gc_headroom: %w", err)
	}
	return nil
}

// ValidateMemoryLimit checks a memory_limit value.
func ValidateMemoryLimit(s string) error {
	switch s {
	case "", "auto", "off":
		return nil
	}
	_, err := ParseSize(s)
	return err
}

// ValidateHeadroom checks a gc_headroom value.
func ValidateHeadroom(s string) error {
	switch s {
	case "", "off":
		return nil
	}
	n, err := ParseSize(s)
	if err == nil && n < 1<<20 {
		err = fmt.Errorf("%s is under 1MiB: the collector would run all the time (\"off\" turns the headroom off)", s)
	}
	return err
}

// Settings are what Apply did, for the log.
type Settings struct {
	GCPercent   int    // the goal in force (from GOGC when GCFrom is "env")
	GCFrom      string // "env", "config" or "default"
	MemoryLimit int64  // bytes; math.MaxInt64 is none
	LimitFrom   string // "env", "config", "cgroup" or "none"
	Headroom    int64  // bytes of garbage allowed beyond the live heap; 0: none
}

// Env is how Apply reads the environment and the cgroup (os.Getenv and the
// real files in a gateway; tests give their own).
type Env struct {
	Getenv func(string) string
	// CgroupFiles are read in order for a memory limit: cgroup v2's
	// memory.max, then v1's memory.limit_in_bytes.
	CgroupFiles []string
}

// SystemEnv is the process's environment and cgroup.
func SystemEnv() Env {
	return Env{Getenv: os.Getenv, CgroupFiles: []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}}
}

// Apply sets the collector's goal and soft memory limit from c, unless the
// environment already set them, and returns what is in force.
func Apply(c Config, env Env) (Settings, error) {
	if err := c.Validate(); err != nil {
		return Settings{}, fmt.Errorf("runtime: %w", err)
	}
	var s Settings
	if env.Getenv("GOGC") != "" {
		s.GCFrom = "env"
		s.GCPercent = debug.SetGCPercent(-1) // read it back: there is no getter
		debug.SetGCPercent(s.GCPercent)
	} else {
		s.GCPercent, s.GCFrom = DefaultGCPercent, "default"
		if c.GCPercent != nil {
			s.GCPercent, s.GCFrom = *c.GCPercent, "config"
		}
		debug.SetGCPercent(s.GCPercent)
	}
	if env.Getenv("GOMEMLIMIT") != "" {
		s.LimitFrom = "env"
		s.MemoryLimit = debug.SetMemoryLimit(-1) // a negative input only reads
		return s, nil
	}
	limit, from := int64(math.MaxInt64), "none"
	switch c.MemoryLimit {
	case "off":
	case "", "auto":
		if cg, ok := cgroupLimit(env.CgroupFiles); ok {
			limit, from = int64(float64(cg)*AutoLimitRatio), "cgroup"
		}
	default:
		n, _ := ParseSize(c.MemoryLimit) // validated above
		limit, from = n, "config"
	}
	debug.SetMemoryLimit(limit)
	s.MemoryLimit, s.LimitFrom = limit, from
	switch c.GCHeadroom {
	case "off":
	case "":
		s.Headroom = DefaultHeadroom
	default:
		s.Headroom, _ = ParseSize(c.GCHeadroom) // validated above
	}
	return s, nil
}

// Tuner keeps the soft memory limit at the live heap plus the runtime's
// other memory plus Settings.Headroom (never above Settings.MemoryLimit),
// so that a large heap holds at most that much garbage. The live heap is
// known after each collection; the tuner reads it every interval.
type Tuner struct {
	mu       sync.Mutex
	headroom int64 // 0: off
	ceiling  int64 // the static limit Apply set
	set      int64 // the limit the tuner set last; 0: none yet
	samples  []metrics.Sample
}

// The runtime/metrics the tuner reads, in this order.
var tunerMetrics = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
}

// NewTuner returns a tuner that does nothing until Set.
func NewTuner() *Tuner {
	t := &Tuner{}
	for _, name := range tunerMetrics {
		t.samples = append(t.samples, metrics.Sample{Name: name})
	}
	return t
}

// Set takes what Apply put in force (call it after every Apply) and
// adjusts the limit at once.
func (t *Tuner) Set(s Settings) {
	t.mu.Lock()
	t.headroom, t.ceiling, t.set = s.Headroom, s.MemoryLimit, 0
	if s.LimitFrom == "env" {
		t.headroom = 0
	}
	t.mu.Unlock()
	t.Adjust()
}

// Run adjusts the limit every interval until ctx ends.
func (t *Tuner) Run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.Adjust()
		}
	}
}

// Adjust sets the soft memory limit from the last collection's live heap
// and returns it (0: the tuner is off or no collection has run yet).
func (t *Tuner) Adjust() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.headroom <= 0 {
		return 0
	}
	metrics.Read(t.samples)
	v := func(i int) int64 {
		if t.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(t.samples[i].Value.Uint64())
	}
	live := v(0)
	if live == 0 {
		return 0
	}
	// Stacks, GC metadata and the like: what the limit counts besides
	// the heap's spans.
	other := v(1) - v(2) - v(3) - v(4) - v(5)
	limit := min(live+max(other, 0)+t.headroom, t.ceiling)
	// Small moves are not worth a call (it takes the heap lock).
	if d := limit - t.set; t.set != 0 && d < 1<<20 && d > -(1<<20) {
		return t.set
	}
	debug.SetMemoryLimit(limit)
	t.set = limit
	return limit
}

// cgroupLimit returns the first memory limit the files state; "max" (v2)
// or a number near the largest int64 (v1's "unlimited") is no limit.
func cgroupLimit(files []string) (int64, bool) {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		if v == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 || n >= math.MaxInt64/2 {
			return 0, false
		}
		return n, true
	}
	return 0, false
}

var units = []struct {
	suffix string
	mult   int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// ParseSize reads a size as GOMEMLIMIT writes it: a non-negative integer
// number of bytes with an optional unit suffix B, KiB, MiB, GiB or TiB.
func ParseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("want a size such as 600MiB (units B, KiB, MiB, GiB, TiB), got %q", s)
	}
	if n > math.MaxInt64/mult {
		return 0, errors.New("size " + s + " is too large")
	}
	return n * mult, nil
}
