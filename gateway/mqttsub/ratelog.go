package mqttsub

import (
	"log/slog"
	"time"
)

// rateKey names one stream of problem logs: a problem for an asset (or, for
// messages without a known asset, the id or topic they carried).
// problemClock is the rate-limit problem of implausible device timestamps
// (not a message result: the message is still used).
const problemClock = nResults

type rateKey struct {
	problem result
	who     string
}

type rateEntry struct {
	last       time.Time
	suppressed int
}

// rateLog lets one line per key through per interval and counts the rest. A
// worker owns one (no locking): the assets it sees are its own. The number of
// keys is capped because unknown ids come from outside; beyond the cap,
// problems share one key per problem.
type rateLog struct {
	every   time.Duration
	maxKeys int
	m       map[rateKey]*rateEntry
}

func newRateLog(every time.Duration) *rateLog {
	return &rateLog{every: every, maxKeys: 4096, m: map[rateKey]*rateEntry{}}
}

// allow reports whether to log now and how many lines were suppressed since
// the last one for the key.
func (r *rateLog) allow(k rateKey, now time.Time) (bool, int) {
	e := r.m[k]
	if e == nil && len(r.m) >= r.maxKeys {
		r.prune(now)
		if len(r.m) >= r.maxKeys {
			k.who = "*"
			e = r.m[k]
		}
	}
	if e == nil {
		r.m[k] = &rateEntry{last: now}
		return true, 0
	}
	if now.Sub(e.last) < r.every {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return true, n
}

// prune forgets keys whose interval passed without suppressed lines.
func (r *rateLog) prune(now time.Time) {
	for k, e := range r.m {
		if now.Sub(e.last) >= r.every && e.suppressed == 0 {
			delete(r.m, k)
		}
	}
}

// log writes one rate-limited warning.
func (r *rateLog) log(l *slog.Logger, k rateKey, now time.Time, msg string, attrs ...any) {
	ok, n := r.allow(k, now)
	if !ok {
		return
	}
	if n > 0 {
		attrs = append(attrs, "suppressed", n)
	}
	l.Warn(msg, attrs...)
}
