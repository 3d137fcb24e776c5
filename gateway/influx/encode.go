// Package influx encodes Readings as InfluxDB line protocol and writes them
// in batches with github.com/influxdata/influxdb-client-go/v2.
//
// # Schema
//
// One Reading is one point:
//
//	measurement  the asset's kind (streetlight, cabinet, gas_station, waste_bin)
//	tags         asset    the asset id
//	             circuit  the asset's "circuit" attribute, when it has one (lamps, cabinets)
//	             district the asset's 6-digit district code
//	             gateway  the id of the gateway that read it
//	             grid     the asset's unit-grid code
//	fields       every valid value of the reading, named as in the kind's schema:
//	             bool → true/false, int → 123i, float → shortest round-trip
//	             decimal (an integral float stays a float: 3 not 3i), string → "quoted"
//	timestamp    Reading.Time in nanoseconds (Received when Time is zero)
//
// Tags are written sorted by key and omitted when empty. Tag values never
// contain control characters or backslashes (they are replaced by '_' and
// '/'), because line protocol cannot carry them in tags. Float fields that are
// NaN or ±Inf are left out: line protocol has no spelling for them.
//
// # Writing
//
// A Writer accepts encoded lines (Add), cuts them into batches of BatchSize
// lines or FlushInterval age, and sends each batch as one gzip-compressed
// request, retrying failures with exponential backoff and jitter until
// InfluxDB accepts or permanently rejects it. Batches come from a
// BatchSource: the Writer's own bounded memory queue by default, or any other
// source (issue 5's write-ahead log) through Drain.
package influx

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/citygw/citygw/devices"
)

// Tag keys, in the sorted order they are written.
const (
	TagAsset    = "asset"
	TagCircuit  = "circuit"
	TagDistrict = "district"
	TagGateway  = "gateway"
	TagGrid     = "grid"
)

// CircuitAttr is the asset attribute written as the circuit tag.
const CircuitAttr = "circuit"

// Encoder turns Readings into line protocol. It caches each asset's line
// start (indexed by devices.Asset.Seq), so Append does not allocate once an
// asset has been seen. It is safe for concurrent use.
//
// The cache is shaped for a city's worth of assets: what is the same for
// many assets (the measurement, the tags after asset, the field keys) is
// built once per distinct combination and shared, and an asset's own entry
// holds only the escaped id when escaping changed it. At 126,000 assets that
// is about 40 bytes an asset instead of 150 for a whole prefix each.
type Encoder struct {
	gateway string

	mu      sync.Mutex // serialises cache growth, tail and schema key building
	chunks  atomic.Pointer[[]*prefixChunk]
	tails   map[tailKey]*tail
	schemas map[*devices.Schema]*schemaKeys
}

const chunkBits = 10
const chunkSize = 1 << chunkBits

type prefixChunk [chunkSize]atomic.Pointer[assetPrefix]

// assetPrefix is one asset's cached line start: tail.head, the escaped id
// (id, or the asset's own ID when escaping left it as it was), tail.rest.
type assetPrefix struct {
	asset *devices.Asset
	tail  *tail
	id    string
}

// tail is the part of a line start that many assets share: the measurement
// and ",asset=" before the id, the other tags and the space after it, and
// the kind's field keys.
type tail struct {
	head []byte // "measurement,asset=" ("measurement" for an asset without id)
	rest []byte // ",circuit=…,district=…,gateway=…,grid=… "
	keys *schemaKeys
}

// tailKey is what a tail is built from (the gateway tag is the encoder's).
type tailKey struct {
	kind, circuit, district, grid string
	schema                        *devices.Schema
	noID                          bool
}

// schemaKeys holds each schema field's escaped key between ',' and '='
// (",key="; the first field written leaves the comma out).
type schemaKeys struct {
	keys [][]byte
}

// NewEncoder returns an encoder that tags every point with gatewayID.
func NewEncoder(gatewayID string) *Encoder {
	return &Encoder{gateway: gatewayID, tails: map[tailKey]*tail{}, schemas: map[*devices.Schema]*schemaKeys{}}
}

// Prepare builds the cached prefixes of every asset of inv, so that even the
// first reading of an asset is encoded without allocating.
func (e *Encoder) Prepare(inv *devices.Inventory) {
	for _, a := range inv.Assets {
		e.lookup(a)
	}
}

// lookup returns a's cached prefix, building it on a miss. An entry is valid
// only for the very asset it was built for: a reloaded inventory reuses Seq
// numbers for new Asset values, which replace the old entries.
func (e *Encoder) lookup(a *devices.Asset) *assetPrefix {
	seq := a.Seq
	if seq < 0 {
		return e.build(a)
	}
	if cs := e.chunks.Load(); cs != nil && seq>>chunkBits < len(*cs) {
		if p := (*cs)[seq>>chunkBits][seq&(chunkSize-1)].Load(); p != nil && p.asset == a {
			return p
		}
	}
	p := e.build(a)
	e.mu.Lock()
	var cs []*prefixChunk
	if old := e.chunks.Load(); old != nil {
		cs = *old
	}
	if need := seq>>chunkBits + 1; need > len(cs) {
		grown := make([]*prefixChunk, need)
		copy(grown, cs)
		for i := len(cs); i < need; i++ {
			grown[i] = new(prefixChunk)
		}
		e.chunks.Store(&grown)
		cs = grown
	}
	cs[seq>>chunkBits][seq&(chunkSize-1)].Store(p)
	e.mu.Unlock()
	return p
}

func (e *Encoder) build(a *devices.Asset) *assetPrefix {
	id := a.ID
	if esc := string(appendEscaped(nil, sanitizeTag(id), escTag)); esc != id {
		id = esc
	}
	k := tailKey{kind: a.Kind, circuit: a.Attr(CircuitAttr), district: a.District, grid: a.Grid, schema: a.Schema, noID: a.ID == ""}
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.tails[k]
	if t == nil {
		t = e.newTailLocked(k)
		e.tails[k] = t
	}
	return &assetPrefix{asset: a, tail: t, id: id}
}

// newTailLocked builds the shared part of the line starts of k's assets.
func (e *Encoder) newTailLocked(k tailKey) *tail {
	t := &tail{head: appendEscaped(nil, k.kind, escMeasurement)}
	if !k.noID {
		t.head = append(t.head, ","+TagAsset+"="...)
	}
	var b []byte
	tag := func(k, v string) {
		if v == "" {
			return
		}
		b = append(b, ',')
		b = append(b, k...)
		b = append(b, '=')
		b = appendEscaped(b, sanitizeTag(v), escTag)
	}
	tag(TagCircuit, k.circuit)
	tag(TagDistrict, k.district)
	tag(TagGateway, e.gateway)
	tag(TagGrid, k.grid)
	t.rest = append(b, ' ')
	if k.schema != nil {
		sk := e.schemas[k.schema]
		if sk == nil || len(sk.keys) != len(k.schema.Fields) {
			sk = &schemaKeys{keys: make([][]byte, len(k.schema.Fields))}
			for i, f := range k.schema.Fields {
				key := appendEscaped([]byte{','}, f.Name, escTag)
				sk.keys[i] = append(key, '=')
			}
			e.schemas[k.schema] = sk
		}
		t.keys = sk
	}
	return t
}

// Append appends r as one line of line protocol, terminated by '\n', to dst
// and returns the extended slice. A reading without any valid field (or
// without an asset and schema) appends nothing.
func (e *Encoder) Append(dst []byte, r *devices.Reading) []byte {
	a := r.Asset
	if a == nil || a.Schema == nil {
		return dst
	}
	p := e.lookup(a)
	t := p.tail
	if t.keys == nil {
		return dst
	}
	start := len(dst)
	dst = append(dst, t.head...)
	dst = append(dst, p.id...)
	dst = append(dst, t.rest...)
	n := 0
	vals, keys := r.Values, t.keys.keys
	if len(vals) > len(keys) {
		vals = vals[:len(keys)]
	}
	keys = keys[:len(vals)]
	for i := range vals {
		v := &vals[i]
		key := keys[i]
		if n == 0 {
			key = key[1:]
		}
		switch v.Type {
		case devices.Bool:
			dst = append(dst, key...)
			if v.I != 0 {
				dst = append(dst, "true"...)
			} else {
				dst = append(dst, "false"...)
			}
		case devices.Int:
			dst = append(dst, key...)
			dst = appendInt(dst, v.I)
			dst = append(dst, 'i')
		case devices.Float:
			if math.IsNaN(v.F) || math.IsInf(v.F, 0) {
				continue
			}
			dst = append(dst, key...)
			dst = appendFloat(dst, v.F)
		case devices.String:
			dst = append(dst, key...)
			dst = appendQuoted(dst, v.S)
		default:
			continue
		}
		n++
	}
	if n == 0 {
		return dst[:start]
	}
	if ts := timestamp(r); !ts.IsZero() {
		dst = append(dst, ' ')
		dst = appendInt(dst, ts.UnixNano())
	}
	return append(dst, '\n')
}

func timestamp(r *devices.Reading) time.Time {
	if !r.Time.IsZero() {
		return r.Time
	}
	return r.Received
}

// Which characters appendEscaped escapes: a measurement's commas and spaces,
// or a tag key's, tag value's or field key's commas, equals signs and spaces.
const (
	escMeasurement = false
	escTag         = true
)

// appendEscaped appends s with line protocol's backslash escapes.
func appendEscaped(dst []byte, s string, equals bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ',' || c == ' ' || c == '=' && equals {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return dst
}

// sanitizeTag replaces what line protocol cannot carry in a tag value:
// control characters become '_' and backslashes '/'.
func sanitizeTag(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f || s[i] == '\\' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case c < 0x20 || c == 0x7f:
			b[i] = '_'
		case c == '\\':
			b[i] = '/'
		}
	}
	return string(b)
}

// appendQuoted appends s as a line-protocol string field value: in double
// quotes, with '"' and '\' escaped by a backslash. Other bytes are written as
// they are (InfluxDB accepts newlines inside a quoted string).
func appendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '"' || c == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}

// decimalPow10 are the exact powers of ten appendFloat's fast path uses.
var decimalPow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6}

// appendFloat appends x as strconv.AppendFloat(dst, x, 'g', -1, 64) does,
// the shortest text that reads back as x. Sensor values are mostly short
// decimals (73.5, 3.61): for 1e-4 <= |x| < 1e6 with at most six decimals
// it finds the fewest decimals k whose rounding m = round(|x|·10^k) reads
// back as x (m/10^k == |x|, the correctly rounded parse) and writes m with
// k decimals, several times cheaper than the general shortest-digits
// search. A test and a fuzz target check it against strconv.
func appendFloat(dst []byte, x float64) []byte {
	ax := math.Abs(x)
	if ax >= 1e-4 && ax < 1e6 {
		for k, p := range decimalPow10 {
			// math.Round(y) for 0 < y < 1e12: y's fraction is exact.
			y := ax * p
			m := float64(int64(y))
			if y-m >= 0.5 {
				m++
			}
			if m/p != ax {
				continue
			}
			return appendDecimal(dst, uint64(m), k, x < 0)
		}
	}
	return strconv.AppendFloat(dst, x, 'g', -1, 64)
}

// appendInt appends v in decimal, as strconv.AppendInt(dst, v, 10) does.
func appendInt(dst []byte, v int64) []byte {
	if v < 0 {
		return appendDecimal(dst, uint64(-v), 0, true) // -MinInt64 wraps to 1<<63, its magnitude
	}
	return appendDecimal(dst, uint64(v), 0, false)
}

// appendDecimal appends m/10^k written with exactly k decimals (none and no
// point for k = 0), with a minus sign when neg: the digits are produced
// right to left into a buffer on the stack and appended at once.
func appendDecimal(dst []byte, m uint64, k int, neg bool) []byte {
	var buf [24]byte
	i := len(buf)
	for ; k >= 2; k -= 2 {
		d := m % 100 * 2
		m /= 100
		i -= 2
		buf[i], buf[i+1] = digitPairs[d], digitPairs[d+1]
	}
	if k == 1 {
		i--
		buf[i] = byte('0' + m%10)
		m /= 10
	}
	if i < len(buf) {
		i--
		buf[i] = '.'
	}
	for m >= 100 {
		d := m % 100 * 2
		m /= 100
		i -= 2
		buf[i], buf[i+1] = digitPairs[d], digitPairs[d+1]
	}
	if m >= 10 {
		i -= 2
		buf[i], buf[i+1] = digitPairs[m*2], digitPairs[m*2+1]
	} else {
		i--
		buf[i] = byte('0' + m)
	}
	if neg {
		i--
		buf[i] = '-'
	}
	return append(dst, buf[i:]...)
}

// digitPairs holds "00" to "99".
const digitPairs = "00010203040506070809" + "10111213141516171819" + "20212223242526272829" + "30313233343536373839" +
	"40414243444546474849" + "50515253545556575859" + "60616263646566676869" + "70717273747576777879" +
	"80818283848586878889" + "90919293949596979899"
