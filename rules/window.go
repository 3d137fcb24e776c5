package rules

import (
	"math"

	"github.com/citygw/citygw/devices"
)

// ring is one field's recent samples of one asset, oldest first, bounded in
// time by the longest window any loaded rule uses on the field and in count
// by a hard cap. It is compact, as every asset of a kind with a window rule
// keeps one: a sample is a uint32 time (milliseconds after base, re-based
// when a sample would not fit: windows are at most 7 days, the offsets
// reach 49 days) and a float64 value for numeric and bool fields (bools as
// 0/1, the type kept once per ring so that count() and changes() know it),
// or a string for string fields. It starts at 2 samples (sparse series,
// such as bins reporting every 15-60 minutes, keep one or two), doubles up
// to 8 and then grows by half up to the cap, so steady state appends
// allocate nothing. Sample times are kept to the millisecond.
type ring struct {
	t     []uint32  // milliseconds after base; len is the capacity
	v     []float64 // numeric and bool samples (nil for a string field)
	s     *[]string // string samples (nil for a numeric field; a pointer keeps numeric rings small)
	base  int64     // unix milliseconds
	head  int32     // index of the oldest sample
	n     int32     // samples held
	field uint16    // the schema index of the field (in assetState.hist)
	typ   devices.Type
}

// msOf is the millisecond of unix nanoseconds ns (floor).
func msOf(ns int64) int64 {
	ms := ns / 1e6
	if ns < 0 && ns%1e6 != 0 {
		ms--
	}
	return ms
}

func (r *ring) idx(i int) int {
	j := int(r.head) + i
	if j >= len(r.t) {
		j -= len(r.t)
	}
	return j
}

// timeAt is the time of the i-th oldest sample in unix nanoseconds.
func (r *ring) timeAt(i int) int64 { return (r.base + int64(r.t[r.idx(i)])) * 1e6 }

// at returns the i-th oldest sample.
func (r *ring) at(i int) (int64, devices.Value) {
	j := r.idx(i)
	t := (r.base + int64(r.t[j])) * 1e6
	switch r.typ {
	case devices.String:
		return t, devices.StringValue((*r.s)[j])
	case devices.Bool:
		return t, devices.BoolValue(r.v[j] != 0)
	case devices.Int:
		return t, devices.IntValue(int64(r.v[j]))
	}
	return t, devices.FloatValue(r.v[j])
}

// push appends a sample at unix nanoseconds t and evicts those older than
// t-keep (and any later than t: the clock went back). When the ring is full
// at limit samples, the oldest is overwritten. A sample without a value is
// not kept (aggregates skip it).
func (r *ring) push(t int64, v devices.Value, keep int64, limit int) {
	if !v.Valid() {
		return
	}
	for r.n > 0 {
		ot := r.timeAt(0)
		if ot > t-keep && ot <= t {
			break
		}
		r.drop()
	}
	if (v.Type == devices.String) != (r.typ == devices.String) && r.typ != devices.Invalid {
		// The field's type changed (a profile edit): start afresh.
		*r = ring{field: r.field}
	}
	r.typ = v.Type
	ms := msOf(t)
	if r.n == 0 {
		r.head, r.base = 0, ms
	}
	if off := ms - r.base; off < 0 || off > math.MaxUint32 {
		r.rebase(ms)
	}
	if int(r.n) == len(r.t) {
		if len(r.t) >= limit {
			r.drop() // full at the cap: drop the oldest
		} else {
			r.grow(limit)
		}
	}
	j := r.idx(int(r.n))
	r.t[j] = uint32(ms - r.base)
	if r.typ == devices.String {
		(*r.s)[j] = v.S
	} else {
		r.v[j] = v.Float64()
	}
	r.n++
}

func (r *ring) drop() {
	if r.s != nil {
		(*r.s)[r.head] = "" // do not pin the string
	}
	r.head++
	if int(r.head) == len(r.t) {
		r.head = 0
	}
	r.n--
}

func (r *ring) grow(limit int) {
	size := len(r.t) + len(r.t)/2
	if len(r.t) < 8 {
		size = max(2*len(r.t), 2)
	}
	size = min(size, limit)
	nt := make([]uint32, size)
	var nv []float64
	var ns []string
	if r.typ == devices.String {
		ns = make([]string, size)
	} else {
		nv = make([]float64, size)
	}
	for i := 0; i < int(r.n); i++ {
		j := r.idx(i)
		nt[i] = r.t[j]
		if ns != nil {
			ns[i] = (*r.s)[j]
		} else {
			nv[i] = r.v[j]
		}
	}
	r.t, r.v, r.head = nt, nv, 0
	if ns != nil {
		if r.s == nil {
			r.s = new([]string)
		}
		*r.s = ns
	} else {
		r.s = nil
	}
}

// rebase moves base to the oldest sample kept, or to ms (unix
// milliseconds) with none; push has evicted everything outside
// (ms-keep, ms], and keep is at most 7 days, so the offsets fit.
func (r *ring) rebase(ms int64) {
	nb := ms
	if r.n > 0 {
		nb = min(nb, r.base+int64(r.t[r.head]))
	}
	for i := 0; i < int(r.n); i++ {
		j := r.idx(i)
		r.t[j] = uint32(r.base + int64(r.t[j]) - nb)
	}
	r.base = nb
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
// Samples are in time order, so the window's bounds are found by binary
// search; delta and rate read only its first and last samples, and each
// operation computes only what it needs.
func (r *ring) aggregate(op aggOp, now, window int64) (float64, bool) {
	lo := r.search(now - window) // first sample after now-window
	hi := r.search(now)          // first sample after now
	n := hi - lo
	if r.v == nil && op != opChanges && op != opCount {
		// Strings: only changes() (and count) may read them; others as
		// the values were NaN.
		if n == 0 {
			return r.empty(op)
		}
		return math.NaN(), op != opDelta && op != opRate || n >= 2
	}
	switch op {
	case opAvg, opSum:
		if n == 0 {
			return r.empty(op)
		}
		sum := 0.0
		for i := lo; i < hi; i++ {
			sum += r.v[r.idx(i)]
		}
		if op == opAvg {
			return sum / float64(n), true
		}
		return sum, true
	case opMin, opMax:
		if n == 0 {
			return r.empty(op)
		}
		m := math.Inf(1)
		if op == opMax {
			m = math.Inf(-1)
		}
		for i := lo; i < hi; i++ {
			if op == opMin {
				m = math.Min(m, r.v[r.idx(i)])
			} else {
				m = math.Max(m, r.v[r.idx(i)])
			}
		}
		return m, true
	case opCount:
		if r.typ != devices.Bool {
			return float64(n), true
		}
		sum := 0.0 // bools: how many samples were true
		for i := lo; i < hi; i++ {
			sum += r.v[r.idx(i)]
		}
		return sum, true
	case opDelta, opRate:
		if n < 2 {
			return 0, false
		}
		first, last := r.idx(lo), r.idx(hi-1)
		d := r.v[last] - r.v[first]
		if op == opDelta {
			return d, true
		}
		firstT, lastT := int64(r.t[first]), int64(r.t[last])
		if lastT == firstT {
			return 0, false
		}
		return d / (float64(lastT-firstT) / 1e3), true
	case opChanges:
		changes := 0
		for i := lo + 1; i < hi; i++ {
			if !r.equal(r.idx(i-1), r.idx(i)) {
				changes++
			}
		}
		return float64(changes), true
	}
	return 0, false
}

// empty is an operation's answer over a window without samples.
func (r *ring) empty(op aggOp) (float64, bool) {
	switch op {
	case opSum, opCount, opChanges:
		return 0, true
	case opMin:
		return math.Inf(1), false
	case opMax:
		return math.Inf(-1), false
	}
	return 0, false
}

// search returns the position (0 = oldest) of the first sample later than
// unix nanoseconds ns, r.n when none is.
func (r *ring) search(ns int64) int {
	lo, hi := 0, int(r.n)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.timeAt(m) <= ns {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// equal reports whether samples i and j (storage indexes) are the same
// value; NaN equals NaN, as in devices.Value.Equal.
func (r *ring) equal(i, j int) bool {
	if r.typ == devices.String {
		return (*r.s)[i] == (*r.s)[j]
	}
	a, b := r.v[i], r.v[j]
	return a == b || a != a && b != b
}
