package rules

import (
	"math"

	"github.com/citygw/citygw/devices"
)

// ring is one field's recent samples of one asset, oldest first, bounded in
// time by the longest window any loaded rule uses on the field and in count
// by a hard cap. It grows by doubling up to the cap, so steady state appends
// allocate nothing.
type ring struct {
	t    []int64 // unix nanoseconds
	v    []devices.Value
	head int // index of the oldest sample
	n    int
}

func (r *ring) at(i int) (int64, *devices.Value) {
	j := r.head + i
	if j >= len(r.t) {
		j -= len(r.t)
	}
	return r.t[j], &r.v[j]
}

// push appends a sample and evicts those older than now-keep. When the ring
// is full at max samples, the oldest is overwritten.
func (r *ring) push(t int64, v devices.Value, keep int64, max int) {
	for r.n > 0 {
		ot, _ := r.at(0)
		if ot > t-keep && ot <= t {
			break
		}
		r.head++
		if r.head == len(r.t) {
			r.head = 0
		}
		r.n--
	}
	if r.n == len(r.t) {
		if len(r.t) >= max {
			// Full at the cap: drop the oldest.
			r.head++
			if r.head == len(r.t) {
				r.head = 0
			}
			r.n--
		} else {
			size := 2 * len(r.t)
			if size < 8 {
				size = 8
			}
			if size > max {
				size = max
			}
			nt, nv := make([]int64, size), make([]devices.Value, size)
			for i := 0; i < r.n; i++ {
				nt[i], nv[i] = r.t[(r.head+i)%len(r.t)], r.v[(r.head+i)%len(r.t)]
			}
			r.t, r.v, r.head = nt, nv, 0
		}
	}
	j := r.head + r.n
	if j >= len(r.t) {
		j -= len(r.t)
	}
	r.t[j], r.v[j] = t, v
	r.n++
}

// Window operations.
type aggOp uint8

const (
	opAvg aggOp = iota
	opMin
	opMax
	opSum
	opCount
	opDelta
	opRate
	opChanges
)

var aggNames = map[string]aggOp{"avg": opAvg, "min": opMin, "max": opMax, "sum": opSum, "count": opCount,
	"delta": opDelta, "rate": opRate, "changes": opChanges}

// aggregate computes op over the samples in (now-window, now]. ok is false
// when there are too few samples for a meaningful answer (no data).
func (r *ring) aggregate(op aggOp, now, window int64) (float64, bool) {
	from := now - window
	var (
		n             int
		sum           float64
		mn, mx        = math.Inf(1), math.Inf(-1)
		firstT, lastT int64
		first, last   float64
		changes       int
		prev          *devices.Value
		isBool        bool
	)
	for i := 0; i < r.n; i++ {
		t, v := r.at(i)
		if t <= from || t > now || !v.Valid() {
			continue
		}
		if op == opChanges {
			if prev != nil && !prev.Equal(*v) {
				changes++
			}
			prev = v
			n++
			continue
		}
		x := v.Float64()
		isBool = v.Type == devices.Bool
		if n == 0 {
			firstT, first = t, x
		}
		lastT, last = t, x
		n++
		sum += x
		mn, mx = math.Min(mn, x), math.Max(mx, x)
	}
	switch op {
	case opAvg:
		if n == 0 {
			return 0, false
		}
		return sum / float64(n), true
	case opMin:
		return mn, n > 0
	case opMax:
		return mx, n > 0
	case opSum:
		return sum, true
	case opCount:
		if isBool {
			return sum, true // bools: how many samples were true
		}
		return float64(n), true
	case opDelta:
		return last - first, n >= 2
	case opRate:
		if n < 2 || lastT == firstT {
			return 0, false
		}
		return (last - first) / (float64(lastT-firstT) / 1e9), true
	case opChanges:
		return float64(changes), true
	}
	return 0, false
}
