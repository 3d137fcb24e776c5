package rules

import (
	"math"
	"sync"
	"sync/atomic"

	"github.com/citygw/citygw/devices"
)

// assetState is what the engine keeps per asset: its last reading (and the
// one before when a loaded rule of its kind reads prev()), the history of
// the fields window functions read, and the display history. A city keeps
// one per asset, so the values are stored compactly rather than as
// devices.Value (40 bytes a field):
//
//   - words holds a reading as one word per field (an int or bool's int64,
//     a float's IEEE bits, 0 for a string or a missing field) followed by
//     the fields' types, 4 bits each; the previous reading follows in the
//     same layout when it is kept;
//   - strs holds the string values of the last reading in field order, then
//     the previous reading's;
//   - hist holds one ring per field some loaded rule reads through a window
//     function, in place (no pointer per field).
//
// A waste bin (10 fields, one of them a string, one 10-minute window rule,
// the default 8-reading display history) costs about 812 bytes, 2,316
// before this layout: see BenchmarkStateMemory and rules/README.md.
type assetState struct {
	mu     sync.Mutex
	lastNs int64 // time of the last reading, 0 before the first
	seen   atomic.Int64
	words  []uint64
	strs   []string
	hist   []ring
	nf     uint16  // fields of the last reading (len(Reading.Values)); 0 before the first
	nstr   uint16  // strs[:nstr] are the last reading's; the rest the previous one's
	prev   bool    // words and strs hold the previous reading too
	slow   bool    // the last reading's rules took longer than the rule budget: time the next one's rule by rule
	disp   display // display history (its buffer is allocated on the first reading)
}

func (s *assetState) seenNs() int64 { return s.seen.Load() }

// typeWords is how many words the types of nf fields take (4 bits each).
func typeWords(nf int) int { return (nf + 15) / 16 }

// record keeps a reading's values at sample time now; seenAt is when the
// gateway received it (what absence rules and age() measure from). It
// allocates only when the asset's layout changes (its first reading, a
// reload that starts or stops keeping prev() or a window).
func (s *assetState) record(vals []devices.Value, now, seenAt int64, ks *kindSet, limit int) {
	s.save(vals, ks != nil && ks.usesPrev)
	s.lastNs = now
	s.seen.Store(seenAt)
	if ks == nil {
		return
	}
	for j := 0; j < len(s.hist); {
		// A reload dropped the window rules of this field: free its ring.
		if f := int(s.hist[j].field); f >= len(ks.keep) || ks.keep[f] == 0 {
			last := len(s.hist) - 1
			s.hist[j] = s.hist[last]
			s.hist[last] = ring{}
			s.hist = s.hist[:last]
			continue
		}
		j++
	}
	for i, keep := range ks.keep {
		if keep == 0 || i >= len(vals) || !vals[i].Valid() {
			continue
		}
		r := s.ringOf(i)
		if r == nil {
			s.hist = append(s.hist, ring{field: uint16(i)})
			r = &s.hist[len(s.hist)-1]
		}
		r.push(now, vals[i], keep, limit)
	}
}

// ringOf returns the history of field i, nil when none is kept.
func (s *assetState) ringOf(i int) *ring {
	for j := range s.hist {
		if int(s.hist[j].field) == i {
			return &s.hist[j]
		}
	}
	return nil
}

// save stores vals as the last reading; with keepPrev the last one
// becomes the previous reading.
func (s *assetState) save(vals []devices.Value, keepPrev bool) {
	nf := len(vals)
	half := nf + typeWords(nf)
	if !keepPrev && len(s.words) == half {
		s.saveLast(vals)
		return
	}
	same := int(s.nf) == nf && s.nf > 0 // the old last reading has this layout
	need := half
	if keepPrev {
		need = 2 * half
	}
	if len(s.words) != need {
		w := make([]uint64, need)
		if keepPrev && same {
			copy(w[half:], s.words[:half])
		}
		s.words = w
	} else if keepPrev {
		copy(s.words[half:], s.words[:half])
	}
	// Strings: the new reading's, then (with keepPrev) the old last's.
	k := 0
	for i := range vals {
		if vals[i].Type == devices.String {
			k++
		}
	}
	old := 0
	if keepPrev && same {
		old = int(s.nstr)
	}
	total := k + old
	if cap(s.strs) < total {
		ns := make([]string, total)
		copy(ns[k:], s.strs[:old])
		s.strs = ns
	} else {
		n := len(s.strs)
		s.strs = s.strs[:total]
		copy(s.strs[k:], s.strs[:old])
		if n > total {
			clear(s.strs[total:n]) // do not pin old strings
		}
	}
	w, types := s.words[:nf], s.words[nf:half]
	clear(types)
	k = 0
	for i := range vals {
		v := &vals[i]
		if v.Type == devices.String {
			s.strs[k] = v.S
			k++
		}
		w[i] = valueWord(v)
		types[i/16] |= uint64(v.Type&15) << (4 * (i % 16))
	}
	s.nf, s.nstr, s.prev = uint16(nf), uint16(k), keepPrev
}

// valueWord is a value's word in the packed last reading: the integer
// (bools as 0 or 1) or the float's bits; strings are kept beside the words.
func valueWord(v *devices.Value) uint64 {
	switch v.Type {
	case devices.Bool, devices.Int:
		return uint64(v.I)
	case devices.Float:
		return math.Float64bits(v.F)
	}
	return 0
}

// saveLast is save without the previous reading when the layout is
// unchanged (the common case): one pass over the values.
func (s *assetState) saveLast(vals []devices.Value) {
	nf := len(vals)
	w, types := s.words[:nf:nf], s.words[nf:]
	clear(types)
	n := len(s.strs)
	s.strs = s.strs[:0]
	for i := range vals {
		v := &vals[i]
		if v.Type == devices.String {
			s.strs = append(s.strs, v.S)
		}
		w[i] = valueWord(v)
		types[i>>4] |= uint64(v.Type&15) << (4 * (i & 15))
	}
	if len(s.strs) < n {
		clear(s.strs[len(s.strs):n]) // do not pin old strings
	}
	s.nf, s.nstr, s.prev = uint16(nf), uint16(len(s.strs)), false
}

// value decodes field i of the reading stored at words (nf value words,
// then the types) with strings strs.
func value(words []uint64, strs []string, nf, i int) devices.Value {
	types := words[nf:]
	switch t := devices.Type(types[i/16] >> (4 * (i % 16)) & 15); t {
	case devices.Bool, devices.Int:
		return devices.Value{Type: t, I: int64(words[i])}
	case devices.Float:
		return devices.Value{Type: t, F: math.Float64frombits(words[i])}
	case devices.String:
		slot := 0
		for j := 0; j < i; j++ {
			if devices.Type(types[j/16]>>(4*(j%16))&15) == devices.String {
				slot++
			}
		}
		if slot < len(strs) {
			return devices.StringValue(strs[slot])
		}
	}
	return devices.Value{}
}

// lastLen is the number of fields of the last reading (0 before the first).
func (s *assetState) lastLen() int { return int(s.nf) }

// lastValues decodes the last reading into dst (grown as needed).
func (s *assetState) lastValues(dst []devices.Value) []devices.Value {
	nf := int(s.nf)
	if cap(dst) < nf {
		dst = make([]devices.Value, nf)
	}
	dst = dst[:nf]
	for i := range dst {
		dst[i] = value(s.words, s.strs[:s.nstr], nf, i)
	}
	return dst
}

// prevValue is field i of the previous reading; invalid when it lacked the
// field, before the second reading, or when no loaded rule reads prev().
func (s *assetState) prevValue(i int) devices.Value {
	nf := int(s.nf)
	if !s.prev || i < 0 || i >= nf {
		return devices.Value{}
	}
	half := nf + typeWords(nf)
	return value(s.words[half:], s.strs[s.nstr:], nf, i)
}
