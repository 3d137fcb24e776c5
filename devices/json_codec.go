package devices

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"
)

// pathNode is a trie over JSON paths: object keys and array indexes.
type pathNode struct {
	children map[string]*pathNode
	// short lists the children whose keys have at most 8 bytes, each key
	// packed little-endian into a word: a payload's key is found by loading
	// it as one word and comparing words along a short list, with no
	// hashing and no byte-by-byte comparison. long lists the others.
	// Both are nil for a node with more than maxLinearChildren children,
	// which uses its map.
	short []shortKey
	long  []longKey
	order []string // the children's keys in the order the profile names them
	// shapes: the payload layouts seen (the root only).
	shapes *shapeSet
	field  int      // index in Profile.Fields, or -1
	ts     bool     // the timestamp lives here
	fast   fastKind // how scalar may store the field's common values directly
}

// fastKind names a field whose common JSON values scalar stores without
// Field.fromJSON (whose checks compare the raw type's name, a string, and
// return a Value and an error): a plain float or int, a bool, or a string.
// Values that would fail a check still go through fromJSON, for its error.
type fastKind uint8

const (
	fastNone fastKind = iota
	fastFloat
	fastInt
	fastBool
	fastString
)

// fastKindOf is the fastKind of f: only fields without enum and scale,
// whose decoded type is what their raw type says.
func fastKindOf(f *Field) fastKind {
	if f.Enum != nil || f.Scale != nil || f.divisor != 0 {
		return fastNone
	}
	switch {
	case f.Type == RawFloat && f.Out == Float:
		return fastFloat
	case f.Type == RawInt && f.Out == Int:
		return fastInt
	case f.Type == RawBool && f.Out == Bool:
		return fastBool
	case f.Type == RawString && f.Out == String:
		return fastString
	}
	return fastNone
}

type shortKey struct {
	word uint64
	n    int
	node *pathNode
}

type longKey struct {
	key  string
	node *pathNode
}

// maxLinearChildren is the most children searched by comparison; a node
// with more uses its map.
const maxLinearChildren = 12

// child returns the child for the key b[start:end], nil if none. hint is
// where in the short list to look first: objects mostly list their keys in
// the order the profile names them, so the caller passes the position after
// the previous key's match (next), and each key costs one comparison.
func (n *pathNode) child(b []byte, start, end, hint int) (_ *pathNode, next int) {
	if n == nil || n.children == nil {
		return nil, hint
	}
	if n.short == nil && n.long == nil {
		return n.children[string(b[start:end])], hint // no allocation for a map lookup
	}
	if l := end - start; l <= 8 {
		var w uint64
		if start+8 <= len(b) {
			w = binary.LittleEndian.Uint64(b[start:]) & (^uint64(0) >> (64 - 8*l))
		} else {
			w = packKey(b[start:end])
		}
		if hint < len(n.short) {
			if e := &n.short[hint]; e.word == w && e.n == l {
				return e.node, hint + 1
			}
		}
		for k := range n.short {
			if e := &n.short[k]; e.word == w && e.n == l {
				return e.node, k + 1
			}
		}
		return nil, hint
	}
	for k := range n.long {
		if e := &n.long[k]; e.key == string(b[start:end]) { // no allocation for a comparison
			return e.node, hint
		}
	}
	return nil, hint
}

// packKey packs a key of at most 8 bytes little-endian into a word.
func packKey(key []byte) uint64 {
	var w uint64
	for j := len(key) - 1; j >= 0; j-- {
		w = w<<8 | uint64(key[j])
	}
	return w
}

// index fills the children lists of n and its descendants.
func (n *pathNode) index() {
	if len(n.children) > 0 && len(n.children) <= maxLinearChildren {
		for _, k := range n.order { // the profile's order: most payloads follow it
			c := n.children[k]
			if len(k) <= 8 {
				n.short = append(n.short, shortKey{word: packKey([]byte(k)), n: len(k), node: c})
			} else {
				n.long = append(n.long, longKey{key: k, node: c})
			}
		}
	}
	for _, c := range n.children {
		c.index()
	}
}

func (p *Profile) buildTrie() *pathNode {
	root := &pathNode{field: -1}
	insert := func(parts []string) *pathNode {
		n := root
		for _, seg := range parts {
			if n.children == nil {
				n.children = map[string]*pathNode{}
			}
			c := n.children[seg]
			if c == nil {
				c = &pathNode{field: -1}
				n.children[seg] = c
				n.order = append(n.order, seg)
			}
			n = c
		}
		return n
	}
	for i := range p.Fields {
		n := insert(p.Fields[i].pathParts)
		n.field, n.fast = i, fastKindOf(&p.Fields[i])
	}
	if len(p.tsParts) > 0 {
		n := insert(p.tsParts)
		n.ts, n.fast = true, fastNone // setNumber's shortcut would skip the timestamp
	}
	root.index()
	root.shapes = new(shapeSet)
	return root
}

// DecodeJSON decodes an MQTT JSON payload into r (already Reset for its
// asset) and returns the device timestamp when the profile names one and the
// payload carries it. Fields the payload lacks, or sets to null, stay Invalid.
// A field of the wrong type is skipped and reported in the returned error,
// which joins every problem; the other fields are still decoded. A payload
// that is not a JSON object is an error with nothing decoded.
//
// DecodeJSON is safe for concurrent use. The profile remembers up to four
// payload layouts it has decoded (a copy of one payload each, see
// jsonShape); a payload laid out like one of them, as a device firmware's
// payloads are, is decoded by comparing the bytes between its values and
// parsing only the values, with the same result as a full parse.
func (p *Profile) DecodeJSON(payload []byte, r *Reading) (time.Time, error) {
	root := p.trie
	if root == nil {
		return time.Time{}, errors.New("profile " + p.Model + " is not an MQTT profile")
	}
	d := jsonDecoder{p: p, r: r, b: payload}
	if root.shapes != nil {
		for k := range root.shapes.s {
			sh := root.shapes.s[k].Load()
			if sh == nil {
				break
			}
			if d.matchShape(sh) {
				return d.result()
			}
			d.ts, d.errs = time.Time{}, d.errs[:0]
		}
		d.learn = root.shapes.wantLearn()
	}
	i := skipSpace(payload, 0)
	if i >= len(payload) || payload[i] != '{' {
		return time.Time{}, &DecodeError{Msg: "payload is not a JSON object"}
	}
	i, err := d.object(p.trie, 0, i+1)
	if err != nil {
		return time.Time{}, err
	}
	if i = skipSpace(payload, i); i != len(payload) {
		return time.Time{}, syntaxAt(i, "trailing data after the JSON object")
	}
	if d.learn {
		root.shapes.add(newShape(payload, d.slots))
	}
	return d.result()
}

func (d *jsonDecoder) result() (time.Time, error) {
	if len(d.errs) > 0 {
		return d.ts, errors.Join(d.errs...)
	}
	return d.ts, nil
}

// A jsonShape is the layout of a payload the decoder parsed: its scalar
// values (slots: where each starts, the trie node and depth it was parsed
// with) and the bytes between them (keys, punctuation, white space, empty
// objects and arrays), which are the same in every payload a device
// firmware sends. A payload whose bytes between values are exactly the
// shape's is decoded by comparing those bytes and parsing only the values,
// each with the very node and depth the full parse would use: JSON values
// end where they end whatever follows, so the full parse would see the same
// tokens in the same states and decode the same fields, errors included.
// Anything else (a byte differs, a value fails to parse) is decoded in full,
// and may become a shape.
type jsonShape struct {
	text  []byte // the payload it was learnt from (a copy)
	slots []shapeSlot
	tail  int // text[tail:] follows the last value
}

type shapeSlot struct {
	from, to int    // text[from:to] precedes the value
	lit      []byte // text[from:to]
	node     *pathNode
	depth    int
}

// shapeSet holds a profile's shapes: a few, so that a fleet on two or three
// firmware versions is served without learning again and again.
type shapeSet struct {
	s      [4]atomic.Pointer[jsonShape]
	n      atomic.Uint32 // shapes added
	misses atomic.Uint32
}

// wantLearn reports whether a payload that matched no shape should become
// one: always while there is room, then on one miss in 16 (a replacement
// allocates, so a fleet with more layouts than slots is not charged an
// allocation for every payload).
func (ss *shapeSet) wantLearn() bool {
	return ss.n.Load() < uint32(len(ss.s)) || ss.misses.Add(1)%16 == 0
}

func (ss *shapeSet) add(sh *jsonShape) {
	k := (ss.n.Add(1) - 1) % uint32(len(ss.s))
	ss.s[k].Store(sh)
}

// newShape builds the shape of payload from the slots the full parse
// recorded (from and to are the value's start and end in payload there).
func newShape(payload []byte, rec []shapeSlot) *jsonShape {
	sh := &jsonShape{text: append([]byte(nil), payload...), slots: make([]shapeSlot, len(rec))}
	prev := 0
	for k, r := range rec {
		sh.slots[k] = shapeSlot{from: prev, to: r.from, lit: sh.text[prev:r.from], node: r.node, depth: r.depth}
		prev = r.to
	}
	sh.tail = prev
	return sh
}

// matchShape decodes d.b by sh, false if it does not have sh's layout.
func (d *jsonDecoder) matchShape(sh *jsonShape) bool {
	b, i := d.b, 0
	for k := range sh.slots {
		s := &sh.slots[k]
		if len(b)-i < len(s.lit) || string(b[i:i+len(s.lit)]) != string(s.lit) {
			return false
		}
		i += len(s.lit)
		var j int
		var err error
		if i < len(b) && (b[i]-'0' < 10 || b[i] == '-') {
			j, err = d.number(s.node, i) // what value does for a number
		} else {
			j, err = d.value(s.node, s.depth, i)
		}
		if err != nil {
			return false
		}
		i = j
	}
	return string(b[i:]) == string(sh.text[sh.tail:])
}

// jsonDecoder holds what a decode keeps across values. The position in the
// payload is passed along and returned by its methods (a local in each, so
// the scans run in registers).
type jsonDecoder struct {
	p    *Profile
	r    *Reading
	b    []byte
	ts   time.Time
	errs []error
	// keyEnd is where the key parsed by key ends.
	keyEnd int
	// learn: record the scalar values' positions in slots (from and to
	// are the value's start and end), to make the payload a shape.
	learn bool
	slots []shapeSlot
}

const maxJSONDepth = 32

// syntaxAt is a syntax error at byte i of the payload.
func syntaxAt(i int, msg string) error {
	return &DecodeError{Msg: fmt.Sprintf("invalid JSON at byte %d: %s", i, msg)}
}

// skipSpace returns the position of the first byte at or after i that is
// not JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && b[i] <= ' ' && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// value parses the value at i and returns the position after it; n is the
// trie node for its path (nil when no field lives at or below it, in which
// case it is only validated). On an error the position is meaningless.
func (d *jsonDecoder) value(n *pathNode, depth int, i int) (int, error) {
	if depth > maxJSONDepth {
		return i, syntaxAt(i, "nested too deeply")
	}
	b := d.b
	i = skipSpace(b, i)
	if i >= len(b) {
		return i, syntaxAt(i, "unexpected end")
	}
	c := b[i]
	if d.learn && c != '{' && c != '[' {
		j, err := d.scalarValue(n, c, i)
		if err == nil {
			d.slots = append(d.slots, shapeSlot{from: i, to: j, node: n, depth: depth})
		}
		return j, err
	}
	switch {
	case c == '{':
		return d.object(n, depth, i+1)
	case c == '[':
		return d.array(n, depth, i+1)
	}
	return d.scalarValue(n, c, i)
}

// scalarValue parses the string, number or literal at i, whose first byte
// is c.
func (d *jsonDecoder) scalarValue(n *pathNode, c byte, i int) (int, error) {
	b := d.b
	switch {
	case c == '"':
		raw, escaped, j, err := d.str(i)
		if err != nil {
			return j, err
		}
		if n != nil && (n.field >= 0 || n.ts) {
			var s string
			if f := d.stringField(n); f != nil && !escaped {
				s = f.internString(raw)
			} else if s, err = text(raw, escaped, j); err != nil {
				return j, err
			}
			d.scalar(n, jsonString, s, 0)
		}
		return j, nil
	case c == 't':
		if len(b)-i >= 4 && string(b[i:i+4]) == "true" {
			d.scalar(n, jsonBool, "", 1)
			return i + 4, nil
		}
	case c == 'f':
		if len(b)-i >= 5 && string(b[i:i+5]) == "false" {
			d.scalar(n, jsonBool, "", 0)
			return i + 5, nil
		}
	case c == 'n':
		if len(b)-i >= 4 && string(b[i:i+4]) == "null" {
			return i + 4, nil
		}
	case c == '-' || c >= '0' && c <= '9':
		return d.number(n, i)
	default:
		return i, syntaxAt(i, fmt.Sprintf("unexpected character %q", c))
	}
	return i, syntaxAt(i, "invalid literal")
}

// object parses an object's members and its closing brace; i is just past
// the opening brace.
func (d *jsonDecoder) object(n *pathNode, depth int, i int) (int, error) {
	b := d.b
	i = skipSpace(b, i)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	hint := 0
	for {
		i = skipSpace(b, i)
		var child *pathNode
		// The key: plain ASCII without escapes is scanned here, anything
		// else (or an error) by str.
		k := i + 1
		for k < len(b) && !strStop[b[k]] {
			k++
		}
		if i < len(b) && b[i] == '"' && k < len(b) && b[k] == '"' {
			child, hint = n.child(b, i+1, k, hint)
			i = skipSpace(b, k+1)
		} else if err := d.key(n, &child, i); err != nil {
			return i, err
		} else {
			i = skipSpace(b, d.keyEnd)
		}
		if i >= len(b) || b[i] != ':' {
			return i, syntaxAt(i, "want ':' after object key")
		}
		var err error
		if i, err = d.value(child, depth+1, i+1); err != nil {
			return i, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, syntaxAt(i, "unterminated object")
		}
		if b[i] == '}' {
			return i + 1, nil
		}
		if b[i] != ',' {
			return i, syntaxAt(i, "want ',' or '}' in object")
		}
		i++
	}
}

// key parses the object key at i the general way (str): it sets *child and
// d.keyEnd, the position after the key.
func (d *jsonDecoder) key(n *pathNode, child **pathNode, i int) error {
	raw, escaped, j, err := d.str(i)
	if err != nil {
		return err
	}
	d.keyEnd = j
	if !escaped {
		*child, _ = n.child(d.b, j-1-len(raw), j-1, 0)
	} else if n != nil && n.children != nil {
		k, err := text(raw, true, j)
		if err != nil {
			return err
		}
		*child = n.children[k]
	}
	return nil
}

// array parses an array's elements and its closing bracket; i is just past
// the opening bracket.
func (d *jsonDecoder) array(n *pathNode, depth int, i int) (int, error) {
	b := d.b
	i = skipSpace(b, i)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	var idx [20]byte
	for k := 0; ; k++ {
		var child *pathNode
		if n != nil && n.children != nil {
			child = n.children[string(strconv.AppendInt(idx[:0], int64(k), 10))]
		}
		var err error
		if i, err = d.value(child, depth+1, i); err != nil {
			return i, err
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, syntaxAt(i, "unterminated array")
		}
		if b[i] == ']' {
			return i + 1, nil
		}
		if b[i] != ',' {
			return i, syntaxAt(i, "want ',' or ']' in array")
		}
		i++
	}
}

// number parses the number at i. The numbers devices send most,
// -?digits[.digits] with at most 15 significant digits and no exponent,
// are scanned, checked and converted in one pass, exactly as
// parseSimpleNumber converts them; anything else is left to the general
// path (strconv.ParseFloat and validNumber).
func (d *jsonDecoder) number(n *pathNode, i int) (int, error) {
	b := d.b
	start := i
	neg := b[i] == '-'
	if neg {
		i++
	}
	var mant uint64
	intStart := i
	for ; i < len(b); i++ {
		c := b[i] - '0'
		if c > 9 {
			break
		}
		mant = mant*10 + uint64(c)
	}
	intDigits, frac := i-intStart, 0
	if i < len(b) && b[i] == '.' {
		i++
		fracStart := i
		for ; i < len(b); i++ {
			c := b[i] - '0'
			if c > 9 {
				break
			}
			mant = mant*10 + uint64(c)
		}
		if frac = i - fracStart; frac == 0 {
			return d.numberSlow(n, start) // "1."
		}
	}
	if intDigits == 0 || intDigits+frac > 15 || intDigits > 1 && b[intStart] == '0' {
		return d.numberSlow(n, start) // no integer digits, too many digits, a leading zero
	}
	if i < len(b) {
		switch b[i] {
		case '.', 'e', 'E', '+', '-':
			return d.numberSlow(n, start) // an exponent, or not a number
		}
	}
	if n != nil {
		x := float64(mant) / pow10[frac]
		if neg {
			x = -x
		}
		if !d.setNumber(n, x) {
			d.scalar(n, jsonNumber, "", x)
		}
	}
	return i, nil
}

// numberSlow is the general path of number: the longest run of number
// characters at i, checked against JSON's grammar and parsed by strconv.
func (d *jsonDecoder) numberSlow(n *pathNode, i int) (int, error) {
	b := d.b
	start := i
	for i < len(b) {
		c := b[i]
		if c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			i++
			continue
		}
		break
	}
	num := b[start:i]
	if n == nil {
		// Nobody reads it: only check that it is a JSON number.
		if !validNumber(num) {
			return start, syntaxAt(start, fmt.Sprintf("invalid number %q", string(num)))
		}
		return i, nil
	}
	x, ok := parseSimpleNumber(num)
	if !ok {
		// The bytes live as long as the payload and ParseFloat keeps no
		// reference on success; on failure the error is built from a copy.
		var err error
		x, err = strconv.ParseFloat(unsafe.String(&num[0], len(num)), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) || !validNumber(num) {
			return start, syntaxAt(start, fmt.Sprintf("invalid number %q", string(num)))
		}
	}
	d.scalar(n, jsonNumber, "", x)
	return i, nil
}

type jsonKind uint8

const (
	jsonString jsonKind = iota
	jsonNumber
	jsonBool
)

var jsonKindNames = [...]string{jsonString: "a string", jsonNumber: "a number", jsonBool: "a boolean"}

// scalar stores a leaf value into the reading if a field lives at n.
func (d *jsonDecoder) scalar(n *pathNode, kind jsonKind, s string, x float64) {
	if n == nil {
		return
	}
	if n.ts {
		t, err := d.timestamp(kind, s, x)
		if err != nil {
			d.errs = append(d.errs, &DecodeError{Field: "timestamp", Path: d.p.MQTT.TimestampPath, Msg: err.Error()})
		} else {
			d.ts = t
		}
	}
	if n.field < 0 {
		return
	}
	switch n.fast {
	case fastFloat, fastInt:
		if kind == jsonNumber && d.setNumber(n, x) {
			return
		}
	case fastBool:
		if kind == jsonBool || kind == jsonNumber && (x == 0 || x == 1) {
			d.r.Values[d.p.Fields[n.field].Index] = BoolValue(x != 0)
			return
		}
	case fastString:
		if kind == jsonString {
			d.r.Values[d.p.Fields[n.field].Index] = Value{Type: String, S: s}
			return
		}
	}
	f := &d.p.Fields[n.field]
	v, err := f.fromJSON(kind, s, x)
	if err != nil {
		d.errs = append(d.errs, err)
		return
	}
	d.r.Values[f.Index] = v
}

// setNumber stores the number x of a fastFloat or fastInt field as
// fromJSON would when fromJSON would accept it (false: it would not, or the
// field is of another kind).
func (d *jsonDecoder) setNumber(n *pathNode, x float64) bool {
	switch n.fast {
	case fastFloat: // finishFloat: finite, plus the offset, in range
		f := &d.p.Fields[n.field]
		if y := x + f.Offset; x-x == 0 && f.inRange(y) {
			d.r.Values[f.Index] = Value{Type: Float, F: y}
			return true
		}
	case fastInt: // an integer below 2^53; finishInt: in range
		if f := &d.p.Fields[n.field]; x == math.Trunc(x) && math.Abs(x) <= 1<<53 && f.inRange(float64(int64(x))) {
			d.r.Values[f.Index] = Value{Type: Int, I: int64(x)}
			return true
		}
	}
	return false
}

// inRange reports whether x passes checkRange.
func (f *Field) inRange(x float64) bool {
	return (f.Min == nil || x >= *f.Min) && (f.Max == nil || x <= *f.Max)
}

func (f *Field) fromJSON(kind jsonKind, s string, x float64) (Value, error) {
	want := jsonNumber
	switch f.Type {
	case RawBool:
		if kind == jsonNumber && (x == 0 || x == 1) {
			return BoolValue(x == 1), nil
		}
		want = jsonBool
	case RawString:
		want = jsonString
	}
	if kind != want {
		return Value{}, f.errorf("want %s, got %s", jsonKindNames[want], jsonKindNames[kind])
	}
	switch f.Type {
	case RawBool:
		return BoolValue(x != 0), nil
	case RawString:
		if f.Enum != nil {
			return Value{}, f.errorf("enum fields take integers")
		}
		return StringValue(s), nil
	case RawInt:
		if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
			return Value{}, f.errorf("want an integer, got %v", x)
		}
		return f.finishInt(int64(x))
	}
	return f.finishFloat(x)
}

func (d *jsonDecoder) timestamp(kind jsonKind, s string, x float64) (time.Time, error) {
	format := d.p.MQTT.TimestampFormat
	if kind == jsonString {
		if format != "" && format != "rfc3339" {
			return time.Time{}, fmt.Errorf("want a %s number, got a string", format)
		}
		return time.Parse(time.RFC3339Nano, s)
	}
	if kind != jsonNumber || x <= 0 || math.IsInf(x, 0) {
		return time.Time{}, errors.New("want a positive number or an RFC 3339 string")
	}
	if format == "unix_ms" || format == "" && x > 1e11 {
		if x == math.Trunc(x) && x < 1e15 {
			return time.UnixMilli(int64(x)).UTC(), nil
		}
		x /= 1e3
	} else if format == "rfc3339" {
		return time.Time{}, errors.New("want an RFC 3339 string, got a number")
	}
	if x > 1e11 {
		return time.Time{}, fmt.Errorf("timestamp %v out of range", x)
	}
	sec, frac := math.Modf(x)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

// strStop marks the bytes that end the fast scan of a string: the closing
// quote, a backslash, control characters and non-ASCII bytes.
var strStop = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80
	}
	return t
}()

// str parses a JSON string at i and returns its raw bytes (between the
// quotes, pointing into the payload), whether it contains escapes and the
// position after its closing quote.
func (d *jsonDecoder) str(i int) ([]byte, bool, int, error) {
	b := d.b
	if i >= len(b) || b[i] != '"' {
		return nil, false, i, syntaxAt(i, "want a string")
	}
	i++
	start := i
	for i < len(b) && !strStop[b[i]] {
		i++
	}
	if i < len(b) && b[i] == '"' { // plain ASCII without escapes: most strings
		return b[start:i], false, i + 1, nil
	}
	escaped, ascii := false, true
	for i < len(b) {
		c := b[i]
		if !strStop[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			raw := b[start:i]
			i++
			if !ascii && !utf8.Valid(raw) {
				return nil, false, i, syntaxAt(i, "invalid UTF-8 in string")
			}
			return raw, escaped, i, nil
		case c == '\\':
			escaped = true
			i += 2
		case c < 0x20:
			return nil, false, i, syntaxAt(i, "control character in string")
		default:
			ascii = false
			i++
		}
	}
	return nil, false, i, syntaxAt(i, "unterminated string")
}

// text returns a string's content as a Go string, resolving escapes; i is
// the position after the string, for the error.
func text(raw []byte, escaped bool, i int) (string, error) {
	if !escaped {
		return string(raw), nil
	}
	s, err := strconv.Unquote(`"` + string(raw) + `"`)
	if err != nil {
		return "", syntaxAt(i, "invalid escape in string")
	}
	return s, nil
}

// pow10 holds the powers of ten that are exact in a float64.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseSimpleNumber parses the numbers devices send most, -?digits[.digits]
// with at most 15 significant digits and no exponent, exactly: the digits
// form an integer below 2^53 and the fraction's power of ten is exact, so
// one IEEE division rounds correctly (Clinger's fast path, which
// strconv.ParseFloat takes too, after more checks). false: let
// strconv.ParseFloat do it (or reject it).
func parseSimpleNumber(b []byte) (float64, bool) {
	i, neg := 0, false
	if len(b) > 0 && b[0] == '-' {
		neg, i = true, 1
	}
	if i == len(b) || b[i] == '0' && i+1 < len(b) && b[i+1] != '.' {
		return 0, false // empty, or a leading zero (invalid JSON unless "0" or "0.x")
	}
	var mant uint64
	digits, frac, dot := 0, 0, false
	for ; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= '0' && c <= '9':
			mant = mant*10 + uint64(c-'0')
			digits++
			if dot {
				frac++
			}
		case c == '.' && !dot && digits > 0:
			dot = true
		default:
			return 0, false // exponent or stray character
		}
	}
	if digits == 0 || digits > 15 || dot && frac == 0 {
		return 0, false
	}
	x := float64(mant) / pow10[frac]
	if neg {
		x = -x
	}
	return x, true
}

// validNumber reports whether b is a number in JSON's grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func validNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(b)
}

// stringField returns the string field living at n, nil if none.
func (d *jsonDecoder) stringField(n *pathNode) *Field {
	if n.field < 0 {
		return nil
	}
	if f := &d.p.Fields[n.field]; f.lastStr != nil {
		return f
	}
	return nil
}

// internString returns raw as a string, the field's previous value when it
// is the same (no allocation), else a new string that becomes the previous
// value. Safe for concurrent use.
func (f *Field) internString(raw []byte) string {
	if p := f.lastStr.Load(); p != nil && *p == string(raw) {
		return *p
	}
	s := string(raw)
	f.lastStr.Store(&s)
	return s
}
