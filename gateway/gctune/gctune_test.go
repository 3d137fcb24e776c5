package gctune

import (
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"1024", 1024, true}, {"600MiB", 600 << 20, true}, {"2GiB", 2 << 30, true},
		{"1TiB", 1 << 40, true}, {"512KiB", 512 << 10, true}, {"100B", 100, true},
		{"", 0, false}, {"600MB", 0, false}, {"-1", 0, false}, {"1.5GiB", 0, false}, {"MiB", 0, false},
		{"99999999999TiB", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		limit, headroom string
		ok              bool
	}{
		{"", "", true}, {"auto", "", true}, {"off", "", true}, {"300MiB", "", true}, {"300 MB", "", false}, {"lots", "", false},
		{"", "off", true}, {"", "32MiB", true}, {"", "1MiB", true}, {"", "512KiB", false}, {"", "auto", false}, {"", "64 MiB", false},
	} {
		err := (Config{MemoryLimit: tc.limit, GCHeadroom: tc.headroom}).Validate()
		if (err == nil) != tc.ok {
			t.Errorf("memory_limit %q, gc_headroom %q: %v", tc.limit, tc.headroom, err)
		}
		if err != nil && tc.headroom != "" && !strings.Contains(err.Error(), "gc_headroom") {
			t.Errorf("gc_headroom %q: the error does not name the field: %v", tc.headroom, err)
		}
	}
}

// TestTuner runs the tuner against the real runtime: the limit it sets is
// the live heap plus the runtime's other memory plus the headroom, never
// above the static limit, and nothing once it is off or the environment
// set GOMEMLIMIT.
func TestTuner(t *testing.T) {
	oldLimit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(oldLimit) })
	keep := make([]byte, 32<<20) // some live heap
	runtime.GC()
	live := func() int64 {
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(s)
		return int64(s[0].Value.Uint64())
	}
	tu := NewTuner()
	if got := tu.Adjust(); got != 0 {
		t.Fatalf("a tuner not yet Set adjusted the limit to %d", got)
	}
	const headroom = 16 << 20
	tu.Set(Settings{MemoryLimit: math.MaxInt64, LimitFrom: "none", Headroom: headroom})
	got, l := debug.SetMemoryLimit(-1), live()
	if got < l+headroom || got > l+headroom+64<<20 {
		t.Errorf("limit %d MiB for a live heap of %d MiB and %d MiB headroom", got>>20, l>>20, headroom>>20)
	}
	tu.Set(Settings{MemoryLimit: 40 << 20, LimitFrom: "config", Headroom: headroom})
	if got := debug.SetMemoryLimit(-1); got != 40<<20 {
		t.Errorf("limit %d above the configured 40 MiB", got)
	}
	debug.SetMemoryLimit(math.MaxInt64)
	for _, s := range []Settings{
		{MemoryLimit: math.MaxInt64, LimitFrom: "none"},
		{MemoryLimit: math.MaxInt64, LimitFrom: "env", Headroom: headroom},
	} {
		tu.Set(s)
		if got := tu.Adjust(); got != 0 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
			t.Errorf("%+v: the tuner set a limit (%d)", s, got)
		}
	}
	runtime.KeepAlive(keep)
}

// TestApply sets the runtime's real goal and limit from configurations,
// environments and cgroup files, and reads them back from the runtime.
func TestApply(t *testing.T) {
	oldGC, oldLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(oldGC); debug.SetMemoryLimit(oldLimit) })
	dir := t.TempDir()
	write := func(name, content string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	v2 := write("memory.max", "1073741824\n")
	v2max := write("memory.max.unlimited", "max\n")
	v1 := write("memory.limit_in_bytes", "524288000\n")
	v1unlimited := write("memory.limit_in_bytes.unlimited", "9223372036854771712\n")
	ptr := func(i int) *int { return &i }
	ratio := AutoLimitRatio // a variable: the products are not constants, as in Apply
	gib90, v1limit90 := int64(float64(1<<30)*ratio), int64(float64(524288000)*ratio)
	env := func(vars map[string]string, files ...string) Env {
		return Env{Getenv: func(k string) string { return vars[k] }, CgroupFiles: files}
	}
	for _, tc := range []struct {
		name string
		c    Config
		env  Env
		want Settings
	}{
		{"defaults, no cgroup limit", Config{}, env(nil, filepath.Join(dir, "absent"), v2max), Settings{DefaultGCPercent, "default", math.MaxInt64, "none", DefaultHeadroom}},
		{"auto from cgroup v2", Config{MemoryLimit: "auto"}, env(nil, v2, v1), Settings{DefaultGCPercent, "default", gib90, "cgroup", DefaultHeadroom}},
		{"auto from cgroup v1", Config{}, env(nil, filepath.Join(dir, "absent"), v1), Settings{DefaultGCPercent, "default", v1limit90, "cgroup", DefaultHeadroom}},
		{"v1 unlimited", Config{}, env(nil, v1unlimited), Settings{DefaultGCPercent, "default", math.MaxInt64, "none", DefaultHeadroom}},
		{"configured", Config{GCPercent: ptr(30), MemoryLimit: "256MiB"}, env(nil, v2), Settings{30, "config", 256 << 20, "config", DefaultHeadroom}},
		{"off", Config{MemoryLimit: "off"}, env(nil, v2), Settings{DefaultGCPercent, "default", math.MaxInt64, "none", DefaultHeadroom}},
		{"headroom configured", Config{GCHeadroom: "32MiB"}, env(nil, v2max), Settings{DefaultGCPercent, "default", math.MaxInt64, "none", 32 << 20}},
		{"headroom off", Config{GCHeadroom: "off"}, env(nil, v2max), Settings{DefaultGCPercent, "default", math.MaxInt64, "none", 0}},
		{"environment wins", Config{GCPercent: ptr(30), MemoryLimit: "256MiB"}, env(map[string]string{"GOGC": "80", "GOMEMLIMIT": "1GiB"}, v2), Settings{80, "env", 123 << 20, "env", 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want.GCFrom == "env" {
				// What the runtime read from the environment at start-up.
				debug.SetGCPercent(80)
				debug.SetMemoryLimit(123 << 20)
			}
			got, err := Apply(tc.c, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Apply = %+v, want %+v", got, tc.want)
			}
			if gc := debug.SetGCPercent(-1); gc != tc.want.GCPercent {
				t.Errorf("runtime GOGC %d, want %d", gc, tc.want.GCPercent)
			}
			debug.SetGCPercent(tc.want.GCPercent)
			if l := debug.SetMemoryLimit(-1); l != tc.want.MemoryLimit {
				t.Errorf("runtime memory limit %d, want %d", l, tc.want.MemoryLimit)
			}
		})
	}
	if _, err := Apply(Config{MemoryLimit: "huge"}, env(nil)); err == nil {
		t.Error("a bad memory_limit was applied")
	}
}
