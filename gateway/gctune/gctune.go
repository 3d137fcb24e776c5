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
// The environment wins: with GOGC or GOMEMLIMIT set the runtime's own
// reading of them stands and the configuration is not applied.
package gctune

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// DefaultGCPercent is the gateway's GOGC when neither the configuration nor
// the environment sets one.
const DefaultGCPercent = 50

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
}

// Validate checks the configuration. Only memory_limit can be wrong; the
// error is about it.
func (c Config) Validate() error {
	switch c.MemoryLimit {
	case "", "auto", "off":
	default:
		if _, err := ParseSize(c.MemoryLimit); err != nil {
			return err
		}
	}
	return nil
}

// Settings are what Apply did, for the log.
type Settings struct {
	GCPercent   int    // the goal in force (from GOGC when GCFrom is "env")
	GCFrom      string // "env", "config" or "default"
	MemoryLimit int64  // bytes; math.MaxInt64 is none
	LimitFrom   string // "env", "config", "cgroup" or "none"
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
		return Settings{}, fmt.Errorf("runtime memory_limit: %w", err)
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
	return s, nil
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
