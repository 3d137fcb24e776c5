package rules

import (
	"math"
	"time"

	"github.com/citygw/citygw/devices"
)

// display is one asset's display history: its last N readings' numeric
// fields (int, float, bool as 0/1) for the status page's sparklines. It is
// kept for every asset whatever the rules read, so it is compact: one
// buffer allocated on the asset's first reading holds N time offsets
// (uint32 milliseconds after base, one per reading, shared by the fields)
// followed by N rows of float32 values, one per numeric field (NaN where
// the reading lacked the field). After the first reading a push allocates
// nothing.
//
// Memory per asset: 40 bytes in the engine's per-asset state for everyone
// (this struct), plus on the first reading one buffer of 4·N·(1+F) bytes,
// rounded up to Go's allocation size class, where F is the kind's numeric
// fields. With the default N=16 and the shipped profiles (measured by
// TestDisplayMemoryPerAsset): streetlight F=13 -> 896+40 B, cabinet F=20 ->
// 1408+40 B, gas station F=13 -> 896+40 B, waste bin F=9 -> 640+40 B. A
// city of 126,000 assets, mostly lamps, needs about 118 MB at N=16 and
// about 61 MB at N=8 (448+40 B a lamp).
type display struct {
	buf   []uint32 // [0,n): time offsets; [n, n+n*len(cols)): float32 bits, row by row
	base  int64    // unix milliseconds the offsets count from
	head  uint16   // row of the oldest sample
	count uint16   // rows in use
}

// numericFields counts a kind's numeric fields: the display history's
// columns, in schema order.
func numericFields(s *devices.Schema) int {
	k := 0
	for _, f := range s.Fields {
		if f.Type != devices.String {
			k++
		}
	}
	return k
}

// push appends a reading at unix nanoseconds tNs, allocating the buffer on
// the first call. n is the history length (at most 65535) and s the
// asset's schema; both must be the same on every call.
func (d *display) push(tNs int64, vals []devices.Value, n int, s *devices.Schema) {
	if n <= 0 {
		return
	}
	if d.buf == nil {
		k := numericFields(s)
		if k == 0 {
			return
		}
		d.buf = make([]uint32, n*(1+k))
	}
	ncols := len(d.buf)/n - 1
	ms := tNs / 1e6
	if d.count == 0 {
		d.base = ms
	}
	off := ms - d.base
	if off < 0 || off > math.MaxUint32 {
		d.rebase(ms, n)
		off = ms - d.base
	}
	var row int
	if int(d.count) < n {
		row = int(d.head) + int(d.count)
		if row >= n {
			row -= n
		}
		d.count++
	} else {
		row = int(d.head)
		d.head++
		if int(d.head) == n {
			d.head = 0
		}
	}
	d.buf[row] = uint32(off)
	vs := d.buf[n+row*ncols : n+(row+1)*ncols]
	k := 0
	for i := range s.Fields {
		if s.Fields[i].Type == devices.String {
			continue
		}
		f := float32(math.NaN())
		if i < len(vals) {
			switch v := vals[i]; v.Type {
			case devices.Bool, devices.Int:
				f = float32(v.I)
			case devices.Float:
				f = float32(v.F)
			}
		}
		vs[k] = math.Float32bits(f)
		if k++; k == ncols {
			break
		}
	}
}

// rebase moves base so that ms and the samples kept fit the offsets; when
// they cannot (a gap of more than 49 days, or a clock jump), the samples
// kept are dropped.
func (d *display) rebase(ms int64, n int) {
	lo, hi := ms, ms
	for j := 0; j < int(d.count); j++ {
		t := d.timeAt(j, n)
		lo, hi = min(lo, t), max(hi, t)
	}
	if hi-lo > math.MaxUint32 {
		d.head, d.count, d.base = 0, 0, ms
		return
	}
	for j := 0; j < int(d.count); j++ {
		row := d.row(j, n)
		d.buf[row] = uint32(d.base + int64(d.buf[row]) - lo)
	}
	d.base = lo
}

func (d *display) row(j, n int) int {
	row := int(d.head) + j
	if row >= n {
		row -= n
	}
	return row
}

// timeAt is the unix milliseconds of the j-th oldest sample.
func (d *display) timeAt(j, n int) int64 { return d.base + int64(d.buf[d.row(j, n)]) }

// valueAt is column k of the j-th oldest sample.
func (d *display) valueAt(j, k, n, ncols int) float32 {
	return math.Float32frombits(d.buf[n+d.row(j, n)*ncols+k])
}

// DisplayHistory returns an asset's display history, oldest first: the
// values of each numeric field (int, float, bool) in its last readings (at
// most Options.DisplaySamples), one series per field that has any, whatever
// the loaded rules read. Values are kept as float32 and times to the
// millisecond; a reading that lacked a field leaves a gap in its series.
// Unknown assets, assets without a reading since the engine started and an
// engine with the display history off give nil.
func (e *Engine) DisplayHistory(id string) (fields []string, series [][]Sample) {
	a := e.inv.Lookup(id)
	st := e.stateOf(a)
	if st == nil || a.Schema == nil {
		return nil, nil
	}
	n := e.opts.DisplaySamples
	st.mu.Lock()
	defer st.mu.Unlock()
	d := &st.disp
	if d.count == 0 || n <= 0 {
		return nil, nil
	}
	ncols := len(d.buf)/n - 1
	k := -1
	for i, sf := range a.Schema.Fields {
		if sf.Type == devices.String {
			continue
		}
		if k++; k == ncols {
			break
		}
		var ss []Sample
		for j := 0; j < int(d.count); j++ {
			f := d.valueAt(j, k, n, ncols)
			if f != f { // NaN: the reading lacked the field
				continue
			}
			if ss == nil {
				ss = make([]Sample, 0, d.count)
			}
			v := devices.FloatValue(float64(f))
			switch sf.Type {
			case devices.Bool:
				v = devices.BoolValue(f != 0)
			case devices.Int:
				v = devices.IntValue(int64(f))
			}
			ss = append(ss, Sample{Time: time.UnixMilli(d.timeAt(j, n)), Value: v})
		}
		if ss != nil {
			fields = append(fields, a.Schema.Fields[i].Name)
			series = append(series, ss)
		}
	}
	return fields, series
}
