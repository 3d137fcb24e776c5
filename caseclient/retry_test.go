package caseclient

import (
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Base: time.Second, Max: 30 * time.Second}
	cases := []struct {
		attempt  int
		rnd      float64
		min, max time.Duration
	}{
		{0, 0, 500 * time.Millisecond, 500 * time.Millisecond},
		{0, 0.999, 500 * time.Millisecond, time.Second},
		{1, 0, time.Second, time.Second},
		{3, 0.5, 4 * time.Second, 8 * time.Second},
		{4, 0.999, 8 * time.Second, 16 * time.Second},
		{5, 0, 15 * time.Second, 15 * time.Second}, // capped at Max
		{60, 0.999, 15 * time.Second, 30 * time.Second},
	}
	for _, c := range cases {
		d := b.Delay(c.attempt, c.rnd)
		if d < c.min || d > c.max {
			t.Errorf("Delay(%d, %v) = %v, want in [%v, %v]", c.attempt, c.rnd, d, c.min, c.max)
		}
	}
	if b.next(2, 7*time.Second) != 7*time.Second {
		t.Error("a Retry-After must replace the backoff")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"5", 5 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{"Thu, 26 Nov 2026 06:00:30 GMT", 30 * time.Second},
		{"Thursday, 26-Nov-26 06:01:00 GMT", time.Minute}, // RFC 850
		{"Thu Nov 26 06:00:10 2026", 10 * time.Second},    // asctime
		{"Thu, 26 Nov 2026 05:59:00 GMT", 0},              // past
		{"999999999", 24 * time.Hour},                     // capped
	}
	for _, c := range cases {
		if got := ParseRetryAfter(c.in, now); got != c.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestBreaker(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := &Breaker{Threshold: 3, Cooldown: 10 * time.Second}
	for i := range 2 {
		b.Failure(t0)
		if !b.Allow(t0) || b.State(t0) != BreakerClosed {
			t.Fatalf("breaker opened after %d failures", i+1)
		}
	}
	b.Failure(t0)
	if b.Allow(t0.Add(5*time.Second)) || b.State(t0) != BreakerOpen {
		t.Fatal("breaker should be open after 3 consecutive failures")
	}
	probeAt := t0.Add(11 * time.Second)
	if b.State(probeAt) != BreakerHalfOpen || !b.Allow(probeAt) {
		t.Fatal("after the cooldown one probe should be allowed")
	}
	if b.Allow(probeAt) {
		t.Fatal("only one probe may be in flight while half-open")
	}
	b.Failure(probeAt)
	if b.Allow(probeAt.Add(time.Second)) {
		t.Fatal("a failed probe must open the breaker again")
	}
	at := probeAt.Add(11 * time.Second)
	if !b.Allow(at) {
		t.Fatal("second probe not allowed")
	}
	b.Success()
	if b.State(at) != BreakerClosed || !b.Allow(at) || !b.Allow(at) {
		t.Fatal("a successful probe must close the breaker")
	}
	// A success in between resets the count: failures must be consecutive.
	b.Failure(at)
	b.Failure(at)
	b.Success()
	b.Failure(at)
	if b.State(at) != BreakerClosed {
		t.Fatal("non-consecutive failures opened the breaker")
	}
}
