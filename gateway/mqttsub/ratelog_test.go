package mqttsub

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestRateLog(t *testing.T) {
	r := newRateLog(time.Minute)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := rateKey{resultDecodeError, "bin-1"}
	steps := []struct {
		key        rateKey
		at         time.Duration
		ok         bool
		suppressed int
	}{
		{a, 0, true, 0},
		{a, time.Second, false, 0},
		{a, 30 * time.Second, false, 0},
		{rateKey{resultOversize, "bin-1"}, 31 * time.Second, true, 0},    // another problem of the asset
		{rateKey{resultDecodeError, "bin-2"}, 32 * time.Second, true, 0}, // another asset
		{a, 61 * time.Second, true, 2},                                   // the interval passed: one line, with what was suppressed
		{a, 62 * time.Second, false, 0},
		{a, 200 * time.Second, true, 1},
	}
	for i, s := range steps {
		ok, n := r.allow(s.key, t0.Add(s.at))
		if ok != s.ok || n != s.suppressed {
			t.Errorf("step %d (%v at %v): allow = %v, %d; want %v, %d", i, s.key, s.at, ok, n, s.ok, s.suppressed)
		}
	}
}

func TestRateLogCapsUnknownKeys(t *testing.T) {
	r := newRateLog(time.Minute)
	r.maxKeys = 10
	now := time.Now()
	logged := 0
	for i := range 1000 {
		if ok, _ := r.allow(rateKey{resultUnknownAsset, fmt.Sprintf("junk-%d", i)}, now); ok {
			logged++
		}
	}
	if len(r.m) > r.maxKeys+1 {
		t.Errorf("%d keys kept, cap %d", len(r.m), r.maxKeys)
	}
	if logged != 11 { // ten own keys, then one shared line for the rest
		t.Errorf("%d lines logged for 1000 unknown ids, want 11", logged)
	}
	// After the interval, stale keys are pruned and new ids get their own line again.
	if ok, _ := r.allow(rateKey{resultUnknownAsset, "fresh"}, now.Add(2*time.Minute)); !ok {
		t.Error("a new id after the interval was suppressed")
	}
}

func TestRateLogWritesSuppressedCount(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, nil))
	r := newRateLog(time.Minute)
	t0 := time.Now()
	k := rateKey{resultOversize, "bin-7"}
	for i := range 5 {
		r.log(l, k, t0.Add(time.Duration(i)*time.Second), "too big", "asset", "bin-7")
	}
	r.log(l, k, t0.Add(2*time.Minute), "too big", "asset", "bin-7")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || strings.Contains(lines[0], "suppressed") || !strings.Contains(lines[1], "suppressed=4") {
		t.Errorf("log lines:\n%s", buf.String())
	}
}
