package caseclient

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Backoff is exponential backoff with jitter: attempt n (0-based) waits a
// random duration in [d/2, d] where d = min(Base·2ⁿ, Max).
type Backoff struct {
	Base time.Duration
	Max  time.Duration
}

// Delay returns the wait before retry number attempt (0 = first retry).
// rnd is a uniform sample in [0,1).
func (b Backoff) Delay(attempt int, rnd float64) time.Duration {
	d := b.Base
	for i := 0; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d/2 + time.Duration(rnd*float64(d/2))
}

// next returns the wait before the next attempt: the server's Retry-After
// when it gave one, else the jittered backoff.
func (b Backoff) next(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, max(b.Max, time.Hour))
	}
	return b.Delay(attempt, rand.Float64())
}

// ParseRetryAfter reads a Retry-After header value: delay seconds or an
// HTTP-date (relative to now). It returns 0 when absent or unparsable; a
// date in the past is 0 too.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, 24*time.Hour)
		}
	}
	return 0
}

// Breaker is a per-sink circuit breaker: after Threshold consecutive
// failures it opens for Cooldown; then one probe is allowed (half-open): its
// success closes the breaker, its failure opens it again.
type Breaker struct {
	Threshold int
	Cooldown  time.Duration

	mu       sync.Mutex
	fails    int
	openTill time.Time
	probing  bool
}

// BreakerState is a breaker's state.
type BreakerState string

// Breaker states.
const (
	BreakerClosed   BreakerState = "closed"
	BreakerOpen     BreakerState = "open"
	BreakerHalfOpen BreakerState = "half-open"
)

// Allow reports whether a request may be sent at now; in the half-open
// state it grants one probe until Success or Failure is reported.
func (b *Breaker) Allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Threshold <= 0 || b.fails < b.Threshold {
		return true
	}
	if now.Before(b.openTill) || b.probing {
		return false
	}
	b.probing = true
	return true
}

// Success records a request the sink answered as it should.
func (b *Breaker) Success() {
	b.mu.Lock()
	b.fails, b.probing = 0, false
	b.mu.Unlock()
}

// Failure records a failed request at now.
func (b *Breaker) Failure(now time.Time) {
	b.mu.Lock()
	b.fails++
	b.probing = false
	if b.Threshold > 0 && b.fails >= b.Threshold {
		b.openTill = now.Add(b.Cooldown)
	}
	b.mu.Unlock()
}

// State returns the breaker's state at now.
func (b *Breaker) State(now time.Time) BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.Threshold <= 0 || b.fails < b.Threshold:
		return BreakerClosed
	case now.Before(b.openTill):
		return BreakerOpen
	}
	return BreakerHalfOpen
}
