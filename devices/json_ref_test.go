package devices

// The decoder as it was before the single-pass rewrite (session 3), kept as
// the reference the differential fuzz target (FuzzDecodeJSONSameAsRef)
// compares DecodeJSON with: same values, same timestamp, same error text.

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"
)

func (p *Profile) refDecodeJSON(payload []byte, r *Reading) (time.Time, error) {
	if p.trie == nil {
		return time.Time{}, errors.New("profile " + p.Model + " is not an MQTT profile")
	}
	d := refDecoder{p: p, r: r, b: payload}
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

type refDecoder struct {
	p    *Profile
	r    *Reading
	b    []byte
	i    int
	ts   time.Time
	errs []error
}

func (d *refDecoder) syntax(msg string) error {
	return &DecodeError{Msg: fmt.Sprintf("invalid JSON at byte %d: %s", d.i, msg)}
}

func (d *refDecoder) skipSpace() {
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
func (d *refDecoder) value(n *pathNode, depth int) error {
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
				if n != nil {
					child = n.children[string(key)] // nil map: nil
				}
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

// scalar stores a leaf value into the reading if a field lives at n.
func (d *refDecoder) scalar(n *pathNode, kind jsonKind, s string, x float64) {
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

// strStop marks the bytes that end the fast scan of a string: the closing
// quote, a backslash, control characters and non-ASCII bytes.
var refStrStop = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c == '"' || c == '\\' || c < 0x20 || c >= 0x80
	}
	return t
}()

// str parses a JSON string at d.i and returns its raw bytes (between the
// quotes, pointing into the payload) and whether it contains escapes.
func (d *refDecoder) str() ([]byte, bool, error) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return nil, false, d.syntax("want a string")
	}
	d.i++
	start := d.i
	escaped, ascii := false, true
	for d.i < len(d.b) {
		c := d.b[d.i]
		if !refStrStop[c] {
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
func (d *refDecoder) text(raw []byte, escaped bool) (string, error) {
	if !escaped {
		return string(raw), nil
	}
	s, err := strconv.Unquote(`"` + string(raw) + `"`)
	if err != nil {
		return "", d.syntax("invalid escape in string")
	}
	return s, nil
}

func (d *refDecoder) stringField(n *pathNode) *Field {
	if n.field < 0 {
		return nil
	}
	if f := &d.p.Fields[n.field]; f.lastStr != nil {
		return f
	}
	return nil
}

func (d *refDecoder) timestamp(kind jsonKind, s string, x float64) (time.Time, error) {
	return (&jsonDecoder{p: d.p}).timestamp(kind, s, x)
}

// FuzzDecodeJSONSameAsRef: DecodeJSON decodes every payload exactly as the
// reference decoder does: the same values, timestamp and error text. Each
// run starts without shapes, decodes first (which may become a shape), then
// first again (by its shape) and then second (by first's shape if it fits).
func FuzzDecodeJSONSameAsRef(f *testing.F) {
	seeds := []string{binPayload, `{}`, `{"fill":{"pct":"x"}}`, `{"ts":"2026-01-01T00:00:00Z"}`, `[`, `{"a":[[[[]]]]}`,
		`{"fw":"\u00e9\n"}`, `{"temp_c":-0.5e3,"fill":{"pct":01}}`, `{"temp_c":1.}`, `{"battery":{"pct":88.5,"v":-3}}`,
		`{"radio":{"rssi":-87 ,"snr" : 7.5 } , "fw":"é"}`, `{"tilt_deg":123456789012345678}`, `{"ts":1764130000.5}`,
		`{"lid_open":tru}`, `{"lid_open":1,"x":[1,{"y":null}]}`, "{\"fw\":\"a\x01\"}", `{"temp_c":1} x`, `{"f\u0077":"a\"b"}`}
	for _, a := range seeds {
		f.Add([]byte(a), []byte(binPayload))
		f.Add([]byte(binPayload), []byte(a))
	}
	f.Add([]byte(binPayload), []byte(strings.Replace(binPayload, `"pct":73.5`, `"pct":{"x":1}`, 1)))
	f.Add([]byte(binPayload), []byte(strings.Replace(binPayload, `"pct":73.5`, `"pct":7`, 1)))
	f.Add([]byte(binPayload), []byte(strings.Replace(binPayload, `"pct":73.5`, `"pct": 7`, 1)))
	f.Add([]byte(binPayload), []byte(strings.Replace(binPayload, `"lid_open":false`, `"lid_open":falsex`, 1)))
	f.Add([]byte(binPayload), []byte(strings.Replace(binPayload, `"fw":"3.1.4"`, `"fw":"3.1.4\"`, 1)))
	f.Add([]byte(binPayload), []byte(binPayload+" "))
	p, a := testBinAsset(f)
	f.Fuzz(func(t *testing.T, first, second []byte) {
		p.trie.shapes = new(shapeSet)
		for _, payload := range [][]byte{first, first, second} {
			var got, want Reading
			got.Reset(a)
			want.Reset(a)
			ts, err := p.DecodeJSON(payload, &got)
			wts, werr := p.refDecodeJSON(payload, &want)
			if (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error() {
				t.Fatalf("%q: error %v, reference %v", payload, err, werr)
			}
			if ts != wts {
				t.Fatalf("%q: timestamp %v, reference %v", payload, ts, wts)
			}
			for i := range got.Values {
				if g, w := got.Values[i], want.Values[i]; g.Type != w.Type || !g.Equal(w) || g.Type == Float && math.Float64bits(g.F) != math.Float64bits(w.F) {
					t.Fatalf("%q: %s = %v, reference %v", payload, a.Schema.Fields[i].Name, g, w)
				}
			}
		}
	})
}
