package devices

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

func testBinAsset(t testing.TB) (*Profile, *Asset) {
	t.Helper()
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	inv, err := NewInventory(cat, []*Asset{{ID: "BIN-1", Model: "binsense-ws3", Lat: 31.3, Lon: 120.6}})
	if err != nil {
		t.Fatal(err)
	}
	return cat.Profile("binsense-ws3"), inv.Assets[0]
}

const binPayload = `{"ts":1764130000123,"fill":{"pct":73.5,"dist_cm":31},"temp_c":21.5,"tilt_deg":2.0,"lid_open":false,"battery":{"pct":88,"v":3.61},"radio":{"rssi":-87,"snr":7.5},"fw":"3.1.4"}`

func TestDecodeJSON(t *testing.T) {
	p, a := testBinAsset(t)
	tests := []struct {
		name    string
		payload string
		want    map[string]Value
		ts      time.Time
		wantErr string
	}{
		{name: "full", payload: binPayload, ts: time.UnixMilli(1764130000123).UTC(), want: map[string]Value{
			"fill_pct": FloatValue(73.5), "distance_cm": IntValue(31), "temperature_c": FloatValue(21.5),
			"tilt_deg": FloatValue(2), "lid_open": BoolValue(false), "battery_pct": IntValue(88),
			"battery_v": FloatValue(3.61), "rssi_dbm": IntValue(-87), "snr_db": FloatValue(7.5), "firmware": StringValue("3.1.4")}},
		{name: "unix seconds and extra fields", payload: `{"ts":1764130000.5,"unknown":{"a":[1,2,{"b":null}]},"fill":{"pct":10}}`,
			ts: time.Unix(1764130000, 5e8).UTC(), want: map[string]Value{"fill_pct": FloatValue(10)}},
		{name: "rfc3339", payload: `{"ts":"2026-11-26T08:00:00+08:00","lid_open":true}`,
			ts: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC), want: map[string]Value{"lid_open": BoolValue(true)}},
		{name: "null is missing", payload: `{"fill":{"pct":null},"temp_c":3}`, want: map[string]Value{"temperature_c": FloatValue(3)}},
		{name: "escaped key and string", payload: `{"f\u0077":"a\"b","temp_c":1e1}`, want: map[string]Value{"firmware": StringValue(`a"b`), "temperature_c": FloatValue(10)}},
		{name: "bool as 0/1", payload: `{"lid_open":1}`, want: map[string]Value{"lid_open": BoolValue(true)}},
		{name: "wrong type keeps the good fields", payload: `{"fill":{"pct":"full"},"temp_c":20}`, want: map[string]Value{"temperature_c": FloatValue(20)}, wantErr: "field fill_pct (json fill.pct): want a number, got a string"},
		{name: "int field with fraction", payload: `{"battery":{"pct":88.5}}`, want: map[string]Value{}, wantErr: "want an integer"},
		{name: "out of range", payload: `{"fill":{"pct":140}}`, want: map[string]Value{}, wantErr: "above the plausible maximum"},
		{name: "huge number", payload: `{"temp_c":1e400}`, want: map[string]Value{}, wantErr: "value is +Inf"},
		{name: "not an object", payload: `[1,2]`, wantErr: "not a JSON object"},
		{name: "truncated", payload: `{"temp_c":1`, wantErr: "invalid JSON"},
		{name: "trailing garbage", payload: `{"temp_c":1} x`, wantErr: "trailing data"},
		{name: "bad literal", payload: `{"lid_open":tru}`, wantErr: "invalid literal"},
		{name: "NaN literal", payload: `{"temp_c":NaN}`, wantErr: "unexpected character"},
		{name: "control char", payload: "{\"fw\":\"a\x01\"}", wantErr: "control character"},
		{name: "bad timestamp", payload: `{"ts":"yesterday","temp_c":1}`, want: map[string]Value{"temperature_c": FloatValue(1)}, wantErr: "timestamp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Reading
			r.Reset(a)
			ts, err := p.DecodeJSON([]byte(tt.payload), &r)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("DecodeJSON: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
			}
			if !ts.Equal(tt.ts) {
				t.Errorf("timestamp %v, want %v", ts, tt.ts)
			}
			if tt.want == nil {
				return
			}
			if n := r.NumValid(); n != len(tt.want) {
				t.Errorf("%d valid fields, want %d: %v", n, len(tt.want), r.String())
			}
			for name, w := range tt.want {
				if got := r.Get(name); !got.Equal(w) {
					t.Errorf("%s = %v (%v), want %v", name, got, got.Type, w)
				}
			}
		})
	}
}

func TestDecodeJSONArrayPath(t *testing.T) {
	p, err := ParseProfile("arr.yaml", []byte(`model: arr
kind: multi
transport: mqtt
fields:
  - {name: second, path: lamps.1.on, type: bool}
  - {name: first_w, path: lamps.0.w, type: float}
`))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := NewCatalog(p)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := NewInventory(cat, []*Asset{{ID: "M1", Model: "arr", Lat: 1, Lon: 1}})
	if err != nil {
		t.Fatal(err)
	}
	var r Reading
	r.Reset(inv.Assets[0])
	if _, err := p.DecodeJSON([]byte(`{"lamps":[{"w":12.5,"on":false},{"on":true}]}`), &r); err != nil {
		t.Fatal(err)
	}
	if !r.Get("second").Bool() || r.Get("first_w").F != 12.5 {
		t.Errorf("got %v", r.String())
	}
}

func TestDecodeJSONAllocs(t *testing.T) {
	p, a := testBinAsset(t)
	var r Reading
	r.Reset(a)
	payload := []byte(strings.Replace(binPayload, `,"fw":"3.1.4"`, "", 1))
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := p.DecodeJSON(payload, &r); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("DecodeJSON of a payload without string fields allocates %v times, want 0", allocs)
	}
}

func BenchmarkDecodeJSON(b *testing.B) {
	p, a := testBinAsset(b)
	var r Reading
	r.Reset(a)
	payload := []byte(binPayload)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := p.DecodeJSON(payload, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecodeJSON: arbitrary payloads never panic; whatever encoding/json
// accepts as an object, DecodeJSON parses without a syntax error; decoded
// values have their schema field's type.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{binPayload, `{}`, `{"fill":{"pct":"x"}}`, `{"ts":"2026-01-01T00:00:00Z"}`, `[`, `{"a":[[[[]]]]}`, `{"fw":"\u00e9\n"}`} {
		f.Add([]byte(s))
	}
	p, a := testBinAsset(f)
	f.Fuzz(func(t *testing.T, payload []byte) {
		var r Reading
		r.Reset(a)
		_, err := p.DecodeJSON(payload, &r)
		var obj map[string]any
		// DecodeJSON rejects invalid UTF-8, which encoding/json replaces.
		if utf8.Valid(payload) && json.Unmarshal(payload, &obj) == nil && obj != nil && err != nil && strings.Contains(err.Error(), "invalid JSON") && !strings.Contains(string(payload), `\`) {
			t.Fatalf("encoding/json accepts %q but DecodeJSON says %v", payload, err)
		}
		for i, v := range r.Values {
			if v.Valid() && v.Type != a.Schema.Fields[i].Type {
				t.Fatalf("field %s decoded as %v, schema says %v", a.Schema.Fields[i].Name, v.Type, a.Schema.Fields[i].Type)
			}
		}
	})
}

// The number fast path gives exactly what strconv.ParseFloat gives, and the
// grammar check accepts exactly JSON's numbers.
func TestParseSimpleNumber(t *testing.T) {
	cases := []struct {
		in         string
		fast, json bool
	}{
		{"0", true, true}, {"-0", true, true}, {"7", true, true}, {"73.5", true, true}, {"-87", true, true},
		{"3.61", true, true}, {"0.1", true, true}, {"0.000001", true, true}, {"123456789012345", true, true},
		{"1234567890123456", false, true}, {"0.30000000000000004", false, true}, {"1e3", false, true},
		{"2.5E-3", false, true}, {"-1.5e+10", false, true}, {"01", false, false}, {"-", false, false},
		{"1.", false, false}, {".5", false, false}, {"+5", false, false}, {"1e", false, false},
		{"--1", false, false}, {"1.2.3", false, false}, {"-01.5", false, false}, {"1e+", false, false},
	}
	for _, c := range cases {
		x, ok := parseSimpleNumber([]byte(c.in))
		if ok != c.fast {
			t.Errorf("parseSimpleNumber(%q) ok = %v, want %v", c.in, ok, c.fast)
		}
		if ok {
			want, err := strconv.ParseFloat(c.in, 64)
			if err != nil || math.Float64bits(x) != math.Float64bits(want) {
				t.Errorf("parseSimpleNumber(%q) = %v, ParseFloat %v (%v)", c.in, x, want, err)
			}
		}
		if got := validNumber([]byte(c.in)); got != c.json {
			t.Errorf("validNumber(%q) = %v, want %v", c.in, got, c.json)
		}
	}
}

// FuzzParseSimpleNumber checks the fast path against strconv.ParseFloat.
func FuzzParseSimpleNumber(f *testing.F) {
	for _, s := range []string{"0", "73.5", "-87", "3.61", "123456789012345", "0.000000000000001", "1e5", "01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		x, ok := parseSimpleNumber([]byte(s))
		if !ok {
			return
		}
		if !validNumber([]byte(s)) {
			t.Fatalf("fast path took %q, which is not a JSON number", s)
		}
		want, err := strconv.ParseFloat(s, 64)
		if err != nil || math.Float64bits(x) != math.Float64bits(want) {
			t.Fatalf("parseSimpleNumber(%q) = %v, ParseFloat %v (%v)", s, x, want, err)
		}
	})
}

// A string field's repeated value is decoded without an allocation, and a
// new value is decoded right.
func TestDecodeJSONStringReuse(t *testing.T) {
	p, a := testBinAsset(t)
	fw := -1
	for i, f := range a.Schema.Fields {
		if f.Name == "firmware" {
			fw = i
		}
	}
	decode := func(payload string) string {
		var r Reading
		r.Reset(a)
		if _, err := p.DecodeJSON([]byte(payload), &r); err != nil {
			t.Fatal(err)
		}
		return r.Values[fw].S
	}
	if got := decode(`{"fw":"3.1.4"}`); got != "3.1.4" {
		t.Fatalf("firmware %q", got)
	}
	var r Reading
	r.Reset(a)
	payload := []byte(`{"fw":"3.1.4","fill":{"pct":5}}`)
	if allocs := testing.AllocsPerRun(100, func() { p.DecodeJSON(payload, &r) }); allocs != 0 {
		t.Errorf("a repeated firmware string allocated %v times", allocs)
	}
	for _, want := range []string{"3.2.0", "3.1.4", `a"b`} {
		in := strconv.Quote(want)
		if got := decode(`{"fw":` + in + `}`); got != want {
			t.Errorf("firmware %s decoded as %q", in, got)
		}
	}
}

// Payload layouts become shapes; a fleet cycling through more layouts than
// a profile keeps is decoded right and allocates for a new shape only now
// and then; concurrent decoders share the shapes safely.
func TestDecodeJSONShapes(t *testing.T) {
	p, a := testBinAsset(t)
	p.trie.shapes = new(shapeSet)
	layouts := []string{binPayload,
		strings.Replace(binPayload, `"fw":"3.1.4"`, `"fw":"3.2.0"`, 1), // same layout: not a new shape
		`{"fill":{"pct":10},"ts":1764130000123}`,
		`{"fill": {"pct": 10}}`,
		`{"temp_c":1,"lid_open":true}`,
		`{"radio":{"snr":1.5}}`,
		`{"battery":{"v":3.3,"pct":80}}`,
	}
	check := func(payload string) {
		var got, want Reading
		got.Reset(a)
		want.Reset(a)
		ts, err := p.DecodeJSON([]byte(payload), &got)
		wts, werr := p.refDecodeJSON([]byte(payload), &want)
		if err != nil || werr != nil || ts != wts || got.String() != want.String() {
			t.Fatalf("%s: %v %v %v, reference %v %v %v", payload, got.String(), ts, err, want.String(), wts, werr)
		}
	}
	check(layouts[0])
	check(layouts[1])
	if n := p.trie.shapes.n.Load(); n != 1 {
		t.Fatalf("%d shapes after one layout", n)
	}
	for range 3 {
		for _, l := range layouts {
			check(l)
		}
	}
	var r Reading
	r.Reset(a)
	payloads := make([][]byte, len(layouts))
	for i, l := range layouts {
		payloads[i] = []byte(strings.Replace(l, "3.2.0", "3.1.4", 1))
	}
	k := 0
	allocs := testing.AllocsPerRun(400, func() {
		p.DecodeJSON(payloads[k%len(payloads)], &r)
		k++
	})
	if allocs > 0.5 {
		t.Errorf("cycling %d layouts allocates %v times per payload", len(layouts), allocs)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			var got Reading
			for i := range 500 {
				payload := []byte(layouts[(g+i)%len(layouts)])
				got.Reset(a)
				ts, err := p.DecodeJSON(payload, &got)
				var want Reading
				want.Reset(a)
				wts, werr := p.refDecodeJSON(payload, &want)
				if err != nil || werr != nil || ts != wts || got.String() != want.String() {
					t.Errorf("%s: %v, reference %v", payload, got.String(), want.String())
					return
				}
			}
		})
	}
	wg.Wait()
}
