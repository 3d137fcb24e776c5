package devices

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"
)

func f64(x float64) *float64 { return &x }

// mustField validates a single-field Modbus profile and returns its field.
func mustField(t testing.TB, f Field) *Field {
	t.Helper()
	p := &Profile{Model: "m", Kind: "k", Transport: Modbus, Fields: []Field{f}}
	if errs := p.validate(nil); len(errs) > 0 {
		t.Fatalf("validate: %v", errs)
	}
	return &p.Fields[0]
}

func words(ws ...uint16) []byte {
	b := make([]byte, 2*len(ws))
	for i, w := range ws {
		binary.BigEndian.PutUint16(b[2*i:], w)
	}
	return b
}

func TestDecodeModbusByteOrders(t *testing.T) {
	// 0x11223344 in the four orders, and -2 as int32, and 1.5 as float32 (0x3FC00000).
	tests := []struct {
		name string
		f    Field
		data []byte
		want Value
	}{
		{"uint32 ABCD", Field{Type: RawUint32, Order: ABCD}, words(0x1122, 0x3344), IntValue(0x11223344)},
		{"uint32 CDAB", Field{Type: RawUint32, Order: CDAB}, words(0x3344, 0x1122), IntValue(0x11223344)},
		{"uint32 BADC", Field{Type: RawUint32, Order: BADC}, words(0x2211, 0x4433), IntValue(0x11223344)},
		{"uint32 DCBA", Field{Type: RawUint32, Order: DCBA}, words(0x4433, 0x2211), IntValue(0x11223344)},
		{"int32 negative", Field{Type: RawInt32}, words(0xFFFF, 0xFFFE), IntValue(-2)},
		{"int16 negative", Field{Type: RawInt16}, words(0xFF38), IntValue(-200)},
		{"int16 BADC", Field{Type: RawInt16, Order: BADC}, words(0x38FF), IntValue(-200)},
		{"uint16", Field{Type: RawUint16}, words(65535), IntValue(65535)},
		{"float32 ABCD", Field{Type: RawFloat32}, words(0x3FC0, 0x0000), FloatValue(1.5)},
		{"float32 CDAB", Field{Type: RawFloat32, Order: CDAB}, words(0x0000, 0x3FC0), FloatValue(1.5)},
		{"float64 ABCD", Field{Type: RawFloat64}, words(0x3FF8, 0, 0, 0), FloatValue(1.5)},
		{"float64 CDAB (words reversed)", Field{Type: RawFloat64, Order: CDAB}, words(0, 0, 0, 0x3FF8), FloatValue(1.5)},
		{"float64 DCBA", Field{Type: RawFloat64, Order: DCBA}, words(0, 0, 0, 0xF83F), FloatValue(1.5)},
		{"int64 ABCD", Field{Type: RawInt64}, words(0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF), IntValue(-1)},
		{"uint64 BADC", Field{Type: RawUint64, Order: BADC}, words(0x0100, 0, 0, 0x0200), IntValue(1<<48 | 2)},
		{"scaled", Field{Type: RawUint16, Scale: f64(0.1)}, words(2305), FloatValue(230.5)},
		{"scaled with offset", Field{Type: RawInt16, Scale: f64(0.5), Offset: -40}, words(100), FloatValue(10)},
		{"offset only makes float", Field{Type: RawUint16, Offset: 1}, words(1), FloatValue(2)},
		{"bool register nonzero", Field{Type: RawBool}, words(0x0100), BoolValue(true)},
		{"bool register zero", Field{Type: RawBool}, words(0), BoolValue(false)},
		{"bit 0", Field{Type: RawBit, Bit: 0}, words(0x0001), BoolValue(true)},
		{"bit 15", Field{Type: RawBit, Bit: 15}, words(0x8000), BoolValue(true)},
		{"bit 3 clear", Field{Type: RawBit, Bit: 3}, words(0xFFF7), BoolValue(false)},
		{"bit with swapped bytes", Field{Type: RawBit, Bit: 8, Order: BADC}, words(0x0001), BoolValue(true)},
		{"string", Field{Type: RawString, Length: 3}, []byte("v1.2\x00\x00"), StringValue("v1.2")},
		{"string swapped", Field{Type: RawString, Length: 2, Order: BADC}, []byte("1v2."), StringValue("v1.2")},
		{"string space padded", Field{Type: RawString, Length: 2}, []byte("ab  "), StringValue("ab")},
		{"enum", Field{Type: RawUint16, Enum: map[int64]string{0: "ok", 3: "hot"}}, words(3), StringValue("hot")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.Name, tt.f.Table = "x", Holding
			f := mustField(t, tt.f)
			got, err := f.DecodeModbus(tt.data, 0)
			if err != nil {
				t.Fatalf("DecodeModbus: %v", err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("got %v (%v), want %v (%v)", got, got.Type, tt.want, tt.want.Type)
			}
		})
	}
}

func TestDecodeModbusErrors(t *testing.T) {
	tests := []struct {
		name    string
		f       Field
		data    []byte
		start   uint16
		wantErr string
	}{
		{"short response", Field{Type: RawUint32, Address: 1}, words(1, 2), 0, "response has 2 registers"},
		{"before start", Field{Type: RawUint16, Address: 1}, words(1), 2, "after the field"},
		{"unknown enum", Field{Type: RawUint16, Enum: map[int64]string{0: "ok"}}, words(9), 0, "not one of the field's enum values"},
		{"NaN", Field{Type: RawFloat32}, words(0x7FC0, 0), 0, "value is NaN"},
		{"Inf", Field{Type: RawFloat32}, words(0x7F80, 0), 0, "value is +Inf"},
		{"above max", Field{Type: RawUint16, Max: f64(100)}, words(101), 0, "above the plausible maximum"},
		{"below min", Field{Type: RawInt16, Min: f64(0)}, words(0xFFFF), 0, "below the plausible minimum"},
		{"uint64 overflow", Field{Type: RawUint64}, words(0xFFFF, 0, 0, 0), 0, "does not fit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.Name, tt.f.Table = "x", Input
			f := mustField(t, tt.f)
			_, err := f.DecodeModbus(tt.data, tt.start)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), "input register") {
				t.Errorf("error %q does not name the register", err)
			}
		})
	}
}

func TestDecodeModbusBits(t *testing.T) {
	f := mustField(t, Field{Name: "relay", Table: Coil, Address: 10, Type: RawBool})
	// Read started at 0: bit 10 is bit 2 of the second byte.
	for _, tt := range []struct {
		data []byte
		want bool
	}{{[]byte{0x00, 0x04}, true}, {[]byte{0xFF, 0xFB}, false}} {
		got, err := f.DecodeModbus(tt.data, 0)
		if err != nil || got.Bool() != tt.want {
			t.Errorf("DecodeModbus(%x) = %v, %v; want %v", tt.data, got, err, tt.want)
		}
	}
	if _, err := f.DecodeModbus([]byte{0}, 0); err == nil {
		t.Error("want an error for a response too short")
	}
}

// TestEncodeDecodeRoundTrip checks that what the simulator serves decodes to
// the value it meant, for every field of every shipped Modbus profile.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range cat.Profiles {
		if p.Transport != Modbus {
			continue
		}
		for i := range p.Fields {
			f := &p.Fields[i]
			if f.Table.IsBit() || f.Type == RawBit {
				continue
			}
			var v Value
			switch f.Out {
			case Bool:
				v = BoolValue(true)
			case Int:
				v = IntValue(1234)
				if f.Max != nil {
					v = IntValue(int64(*f.Max))
				}
			case Float:
				v = FloatValue(12.5)
				if f.Min != nil && f.Max != nil {
					v = FloatValue((*f.Min + *f.Max) / 2)
				}
			case String:
				v = StringValue("ab")
				for _, label := range f.Enum {
					v = StringValue(label)
					break
				}
			}
			regs, err := f.EncodeModbus(v)
			if err != nil {
				t.Fatalf("%s.%s: encode %v: %v", p.Model, f.Name, v, err)
			}
			got, err := f.DecodeModbus(words(regs...), f.Address)
			if err != nil {
				t.Fatalf("%s.%s: decode: %v", p.Model, f.Name, err)
			}
			if got.Type == Float && math.Abs(got.F-v.F) > 1e-3 || got.Type != Float && !got.Equal(v) {
				t.Errorf("%s.%s: round trip %v -> %v", p.Model, f.Name, v, got)
			}
		}
	}
}

// FuzzDecodeModbus feeds arbitrary responses to every field type and order:
// decoding must never panic, and a value it returns must be of the field's type.
func FuzzDecodeModbus(f *testing.F) {
	f.Add([]byte{0x3F, 0xC0, 0, 0}, uint8(0), uint8(0), uint16(0), uint8(3))
	f.Add([]byte{0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0}, uint8(5), uint8(2), uint16(1), uint8(0))
	f.Add([]byte("abcdef"), uint8(10), uint8(1), uint16(0), uint8(0))
	types := []RawType{RawBool, RawBit, RawInt16, RawUint16, RawInt32, RawUint32, RawInt64, RawUint64, RawFloat32, RawFloat64, RawString}
	orders := []ByteOrder{ABCD, CDAB, BADC, DCBA}
	f.Fuzz(func(t *testing.T, data []byte, typ, order uint8, addr uint16, bit uint8) {
		fl := Field{Name: "x", Table: Holding, Address: addr % 64, Type: types[int(typ)%len(types)], Order: orders[int(order)%len(orders)]}
		if fl.Type == RawBit {
			fl.Bit = int(bit % 16)
		}
		if fl.Type == RawString {
			fl.Length = 1 + int(bit%8)
		}
		if bit%3 == 0 && fl.Type != RawString {
			fl.Scale = f64(0.1)
		}
		fd := mustField(t, fl)
		v, err := fd.DecodeModbus(data, 0)
		if err != nil {
			return
		}
		if v.Type != fd.Out {
			t.Fatalf("decoded %v of type %v, field type is %v", v, v.Type, fd.Out)
		}
		if v.Type == Float && (math.IsNaN(v.F) || math.IsInf(v.F, 0)) {
			t.Fatalf("decoded non-finite %v", v.F)
		}
	})
}

func TestDecimalScaling(t *testing.T) {
	for _, tt := range []struct {
		scale float64
		raw   uint16
		want  float64
	}{{0.1, 2301, 230.1}, {0.01, 1999, 19.99}, {0.001, 87, 0.087}, {0.5, 3, 1.5}, {0.3, 10, 3}, {2, 21, 42}} {
		f := mustField(t, Field{Name: "x", Table: Input, Type: RawUint16, Scale: f64(tt.scale)})
		got, err := f.DecodeModbus(words(tt.raw), 0)
		if err != nil || got.F != tt.want {
			t.Errorf("%d × %v = %v (%v), want exactly %v", tt.raw, tt.scale, got.F, err, tt.want)
		}
	}
	f := mustField(t, Field{Name: "pf", Table: Input, Type: RawFloat32})
	got, _ := f.DecodeModbus(words(0x3F75, 0xC28F), 0) // 0.96f
	if got.F != 0.96 {
		t.Errorf("float32 0.96 decoded as %v, want 0.96", got.F)
	}
}

func TestEncodeModbusStringOrders(t *testing.T) {
	for _, o := range []ByteOrder{ABCD, CDAB, BADC, DCBA} {
		f := mustField(t, Field{Name: "s", Table: Holding, Type: RawString, Length: 3, Order: o})
		regs, err := f.EncodeModbus(StringValue("v1.2"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := f.DecodeModbus(words(regs...), 0)
		if err != nil || got.S != "v1.2" {
			t.Errorf("%s: round trip gave %v, %v", o, got, err)
		}
	}
}

func TestAppendModbusAllocs(t *testing.T) {
	f := mustField(t, Field{Name: "x", Table: Holding, Type: RawFloat32, Order: CDAB})
	dst := make([]uint16, 0, 8)
	if n := testing.AllocsPerRun(100, func() { dst, _ = f.AppendModbus(dst[:0], FloatValue(1.5)) }); n != 0 {
		t.Errorf("AppendModbus allocates %v times", n)
	}
}
