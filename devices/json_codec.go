package devices

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"
)

// pathNode is a trie over JSON paths: object keys and array indexes.
type pathNode struct {
	children map[string]*pathNode
	// keys and nodes list the children again for child: a payload's keys
	// are found by comparing bytes along a short list, which is several
	// times cheaper than hashing them for the handful of keys a node has.
	keys  []string
	nodes []*pathNode
	field int  // index in Profile.Fields, or -1
	ts    bool // the timestamp lives here
}

// maxLinearChildren is the most children searched by comparison; a node
// with more uses its map.
const maxLinearChildren = 12

// child returns the child for key, nil if none.
func (n *pathNode) child(key []byte) *pathNode {
	if n == nil || n.children == nil {
		return nil
	}
	if n.keys == nil {
		return n.children[string(key)] // no allocation for a map lookup
	}
	for i, k := range n.keys {
		if k == string(key) { // no allocation for a comparison
			return n.nodes[i]
		}
	}
	return nil
}

// index fills the children lists of n and its descendants.
func (n *pathNode) index() {
	if len(n.children) > 0 && len(n.children) <= maxLinearChildren {
		for k, c := range n.children {
			n.keys = append(n.keys, k)
			n.nodes = append(n.nodes, c)
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
			}
			n = c
		}
		return n
	}
	for i := range p.Fields {
		insert(p.Fields[i].pathParts).field = i
	}
	if len(p.tsParts) > 0 {
		insert(p.tsParts).ts = true
	}
	root.index()
	return root
}

// DecodeJSON decodes an MQTT JSON payload into r (already Reset for its
// asset) and returns the device timestamp when the profile names one and the
// payload carries it. Fields the payload lacks, or sets to null, stay Invalid.
// A field of the wrong type is skipped and reported in the returned error,
// which joins every problem; the other fields are still decoded. A payload
// that is not a JSON object is an error with nothing decoded.
func (p *Profile) DecodeJSON(payload []byte, r *Reading) (time.Time, error) {
	if p.trie == nil {
		return time.Time{}, errors.New("profile " + p.Model + " is not an MQTT profile")
	}
	d := jsonDecoder{p: p, r: r, b: payload}
	d.skipSpace()
	if d.i >= len(d.b) || d.b[d.i] != '{' {
		return time.Time{}, &DecodeError{Msg: "payload is not a JSON object"}
	}
	if err := d.value(p.trie, 0); err != nil {
		return time.Time{}, err
	}
	d.skipSpace()
	if d.i != len(d.b) {
		return time.Time{}, d.syntax("trailing data after the JSON object")
	}
	if len(d.errs) > 0 {
		return d.ts, errors.Join(d.errs...)
	}
	return d.ts, nil
}

type jsonDecoder struct {
	p    *Profile
	r    *Reading
	b    []byte
	i    int
	ts   time.Time
	errs []error
}

const maxJSONDepth = 32

func (d *jsonDecoder) syntax(msg string) error {
	return &DecodeError{Msg: fmt.Sprintf("invalid JSON at byte %d: %s", d.i, msg)}
}

func (d *jsonDecoder) skipSpace() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// value parses the value at d.i; n is the trie node for its path (nil when
// no field lives at or below it, in which case it is only validated).
func (d *jsonDecoder) value(n *pathNode, depth int) error {
	if depth > maxJSONDepth {
		return d.syntax("nested too deeply")
	}
	d.skipSpace()
	if d.i >= len(d.b) {
		return d.syntax("unexpected end")
	}
	switch c := d.b[d.i]; {
	case c == '{':
		d.i++
		d.skipSpace()
		if d.i < len(d.b) && d.b[d.i] == '}' {
			d.i++
			return nil
		}
		for {
			d.skipSpace()
			key, escaped, err := d.str()
			if err != nil {
				return err
			}
			var child *pathNode
			if !escaped {
				child = n.child(key)
			} else if n != nil && n.children != nil {
				k, err := d.text(key, true)
				if err != nil {
					return err
				}
				child = n.children[k]
			}
			d.skipSpace()
			if d.i >= len(d.b) || d.b[d.i] != ':' {
				return d.syntax("want ':' after object key")
			}
			d.i++
			if err := d.value(child, depth+1); err != nil {
				return err
			}
			d.skipSpace()
			if d.i >= len(d.b) {
				return d.syntax("unterminated object")
			}
			if d.b[d.i] == '}' {
				d.i++
				return nil
			}
			if d.b[d.i] != ',' {
				return d.syntax("want ',' or '}' in object")
			}
			d.i++
		}
	case c == '[':
		d.i++
		d.skipSpace()
		if d.i < len(d.b) && d.b[d.i] == ']' {
			d.i++
			return nil
		}
		var idx [20]byte
		for k := 0; ; k++ {
			var child *pathNode
			if n != nil && n.children != nil {
				child = n.children[string(strconv.AppendInt(idx[:0], int64(k), 10))]
			}
			if err := d.value(child, depth+1); err != nil {
				return err
			}
			d.skipSpace()
			if d.i >= len(d.b) {
				return d.syntax("unterminated array")
			}
			if d.b[d.i] == ']' {
				d.i++
				return nil
			}
			if d.b[d.i] != ',' {
				return d.syntax("want ',' or ']' in array")
			}
			d.i++
		}
	case c == '"':
		raw, escaped, err := d.str()
		if err != nil {
			return err
		}
		if n != nil && (n.field >= 0 || n.ts) {
			var s string
			if f := d.stringField(n); f != nil && !escaped {
				s = f.internString(raw)
			} else if s, err = d.text(raw, escaped); err != nil {
				return err
			}
			d.scalar(n, jsonString, s, 0)
		}
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(d.b)-d.i >= len(lit) && string(d.b[d.i:d.i+len(lit)]) == lit {
				d.i += len(lit)
				switch lit {
				case "true":
					d.scalar(n, jsonBool, "", 1)
				case "false":
					d.scalar(n, jsonBool, "", 0)
				}
				return nil
			}
		}
		return d.syntax("invalid literal")
	case c == '-' || c >= '0' && c <= '9':
		start := d.i
		for d.i < len(d.b) {
			c := d.b[d.i]
			if c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
				d.i++
				continue
			}
			break
		}
		num := d.b[start:d.i]
		if n == nil {
			// Nobody reads it: only check that it is a JSON number.
			if !validNumber(num) {
				d.i = start
				return d.syntax(fmt.Sprintf("invalid number %q", string(num)))
			}
			return nil
		}
		x, ok := parseSimpleNumber(num)
		if !ok {
			// The bytes live as long as the payload and ParseFloat keeps no
			// reference on success; on failure the error is built from a copy.
			var err error
			x, err = strconv.ParseFloat(unsafe.String(&num[0], len(num)), 64)
			if err != nil && !errors.Is(err, strconv.ErrRange) || !validNumber(num) {
				d.i = start
				return d.syntax(fmt.Sprintf("invalid number %q", string(num)))
			}
		}
		d.scalar(n, jsonNumber, "", x)
	default:
		return d.syntax(fmt.Sprintf("unexpected character %q", c))
	}
	return nil
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
	f := &d.p.Fields[n.field]
	v, err := f.fromJSON(kind, s, x)
	if err != nil {
		d.errs = append(d.errs, err)
		return
	}
	d.r.Values[f.Index] = v
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

// str parses a JSON string at d.i and returns its raw bytes (between the
// quotes, pointing into the payload) and whether it contains escapes.
func (d *jsonDecoder) str() ([]byte, bool, error) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return nil, false, d.syntax("want a string")
	}
	d.i++
	start := d.i
	escaped, ascii := false, true
	for d.i < len(d.b) {
		c := d.b[d.i]
		if !strStop[c] {
			d.i++
			continue
		}
		switch {
		case c == '"':
			raw := d.b[start:d.i]
			d.i++
			if !ascii && !utf8.Valid(raw) {
				return nil, false, d.syntax("invalid UTF-8 in string")
			}
			return raw, escaped, nil
		case c == '\\':
			escaped = true
			d.i += 2
		case c < 0x20:
			return nil, false, d.syntax("control character in string")
		default:
			ascii = false
			d.i++
		}
	}
	return nil, false, d.syntax("unterminated string")
}

// text returns a string's content as a Go string, resolving escapes.
func (d *jsonDecoder) text(raw []byte, escaped bool) (string, error) {
	if !escaped {
		return string(raw), nil
	}
	s, err := strconv.Unquote(`"` + string(raw) + `"`)
	if err != nil {
		return "", d.syntax("invalid escape in string")
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
