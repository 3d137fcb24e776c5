package devices

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unsafe"
)

// DecodeError is a field that could not be decoded from what a device sent.
type DecodeError struct {
	Field   string
	Table   Table
	Address uint16
	Path    string
	Msg     string
}

func (e *DecodeError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	if e.Path != "" || e.Table == "" {
		return fmt.Sprintf("field %s (json %s): %s", e.Field, e.Path, e.Msg)
	}
	return fmt.Sprintf("field %s (%s register %d): %s", e.Field, e.Table, e.Address, e.Msg)
}

func (f *Field) errorf(format string, args ...any) *DecodeError {
	return &DecodeError{Field: f.Name, Table: f.Table, Address: f.Address, Path: f.Path, Msg: fmt.Sprintf(format, args...)}
}

// DecodeModbus decodes the field from data, the payload of a read of the
// field's table that started at protocol address start: for coils and
// discrete inputs packed bits, least significant bit first; for registers two
// bytes per register, big-endian, as on the wire.
func (f *Field) DecodeModbus(data []byte, start uint16) (Value, error) {
	if f.Address < start {
		return Value{}, f.errorf("read started at %d, after the field", start)
	}
	off := int(f.Address - start)
	if f.Table.IsBit() {
		if off/8 >= len(data) {
			return Value{}, f.errorf("response has %d bits, field needs bit %d", len(data)*8, off)
		}
		return BoolValue(data[off/8]&(1<<(off%8)) != 0), nil
	}
	lo, hi := off*2, (off+f.Registers)*2
	if hi > len(data) {
		return Value{}, f.errorf("response has %d registers, field needs %d from offset %d", len(data)/2, f.Registers, off)
	}
	return f.decodeWords(data[lo:hi])
}

// wordsInOrder returns the field's bytes reordered to big-endian (ABCD).
// buf must have room for len(b) bytes.
func (f *Field) toBigEndian(b, buf []byte) []byte {
	n := len(b)
	out := buf[:n]
	copy(out, b)
	if f.Order.swapWords() {
		for i, j := 0, n/2-1; i < j; i, j = i+1, j-1 {
			out[2*i], out[2*j] = out[2*j], out[2*i]
			out[2*i+1], out[2*j+1] = out[2*j+1], out[2*i+1]
		}
	}
	if f.Order.swapBytes() {
		for i := 0; i+1 < n; i += 2 {
			out[i], out[i+1] = out[i+1], out[i]
		}
	}
	return out
}

func (f *Field) decodeWords(b []byte) (Value, error) {
	var buf [8]byte
	switch f.Type {
	case RawBool:
		return BoolValue(b[0] != 0 || b[1] != 0), nil
	case RawBit:
		w := binary.BigEndian.Uint16(f.toBigEndian(b, buf[:]))
		return BoolValue(w&(1<<f.Bit) != 0), nil
	case RawString:
		// Strings are ASCII, two characters per register, first character in the
		// high byte (ABCD) unless the order swaps bytes; NULs and spaces end it.
		s := f.toBigEndianString(b)
		return StringValue(s), nil
	}
	var raw int64
	var fl float64
	isFloat := false
	be := f.toBigEndian(b, buf[:])
	switch f.Type {
	case RawInt16:
		raw = int64(int16(binary.BigEndian.Uint16(be)))
	case RawUint16:
		raw = int64(binary.BigEndian.Uint16(be))
	case RawInt32:
		raw = int64(int32(binary.BigEndian.Uint32(be)))
	case RawUint32:
		raw = int64(binary.BigEndian.Uint32(be))
	case RawInt64:
		raw = int64(binary.BigEndian.Uint64(be))
	case RawUint64:
		u := binary.BigEndian.Uint64(be)
		if u > math.MaxInt64 {
			if f.Out != Float {
				return Value{}, f.errorf("uint64 value %d does not fit a signed 64-bit field; give the field a scale", u)
			}
			fl, isFloat = float64(u), true
		}
		raw = int64(u)
	case RawFloat32:
		fl, isFloat = widen32(math.Float32frombits(binary.BigEndian.Uint32(be))), true
	case RawFloat64:
		fl, isFloat = math.Float64frombits(binary.BigEndian.Uint64(be)), true
	default:
		return Value{}, f.errorf("type %s cannot be read from registers", f.Type)
	}
	if isFloat {
		return f.finishFloat(fl)
	}
	return f.finishInt(raw)
}

func (f *Field) toBigEndianString(b []byte) string {
	var sb strings.Builder
	for i := 0; i+1 < len(b); i += 2 {
		hi, lo := b[i], b[i+1]
		if f.Order.swapBytes() {
			hi, lo = lo, hi
		}
		for _, c := range [2]byte{hi, lo} {
			if c == 0 {
				return strings.TrimRight(sb.String(), " ")
			}
			if c < 0x20 || c > 0x7e {
				c = '?'
			}
			sb.WriteByte(c)
		}
	}
	return strings.TrimRight(sb.String(), " ")
}

// finishInt applies enum, scale and offset and range checks to an integer.
func (f *Field) finishInt(raw int64) (Value, error) {
	if f.Enum != nil {
		if label, ok := f.Enum[raw]; ok {
			return StringValue(label), nil
		}
		return Value{}, f.errorf("value %d is not one of the field's enum values", raw)
	}
	if f.Out == Int {
		if err := f.checkRange(float64(raw)); err != nil {
			return Value{}, err
		}
		return IntValue(raw), nil
	}
	return f.finishFloat(float64(raw))
}

func (f *Field) finishFloat(x float64) (Value, error) {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return Value{}, f.errorf("value is %v", x)
	}
	if f.Enum != nil || f.Out == Int {
		if x != math.Trunc(x) {
			return Value{}, f.errorf("value %v is not an integer", x)
		}
		return f.finishInt(int64(x))
	}
	if f.divisor != 0 {
		// A decimal scale such as 0.1 divides by its exact inverse, so that
		// 2301 × 0.1 is stored as 230.1, not 230.10000000000002.
		x /= f.divisor
	} else if f.Scale != nil {
		x *= *f.Scale
	}
	x += f.Offset
	if err := f.checkRange(x); err != nil {
		return Value{}, err
	}
	return FloatValue(x), nil
}

func (f *Field) checkRange(x float64) error {
	if f.Min != nil && x < *f.Min {
		return f.errorf("value %v below the plausible minimum %v", x, *f.Min)
	}
	if f.Max != nil && x > *f.Max {
		return f.errorf("value %v above the plausible maximum %v", x, *f.Max)
	}
	return nil
}

// EncodeModbus is the inverse of DecodeModbus for register tables: it returns
// the field's registers (host-order uint16 values, as a Modbus server library
// takes them) for value v. It is what the simulator serves.
func (f *Field) EncodeModbus(v Value) ([]uint16, error) {
	return f.AppendModbus(make([]uint16, 0, f.Registers), v)
}

// AppendModbus appends the field's registers for v to dst (see
// EncodeModbus); it does not allocate when dst has room.
func (f *Field) AppendModbus(dst []uint16, v Value) ([]uint16, error) {
	if f.Table.IsBit() {
		return dst, f.errorf("bit tables take a bool, not registers")
	}
	var buf [2 * MaxReadRegisters]byte
	be := buf[:f.Registers*2]
	switch f.Type {
	case RawBool:
		if v.Bool() {
			be[1] = 1
		}
	case RawBit:
		return dst, f.errorf("a bit field shares its register: use EncodeBit")
	case RawString:
		// Characters in order, first in the high byte; only the byte order
		// within a register applies to strings (as in toBigEndianString).
		copy(be, v.S)
		if f.Order.swapBytes() {
			for i := 0; i+1 < len(be); i += 2 {
				be[i], be[i+1] = be[i+1], be[i]
			}
		}
		return appendWords(dst, be), nil
	default:
		raw, isFloat, fl, err := f.rawFor(v)
		if err != nil {
			return dst, err
		}
		if (f.Type == RawFloat32 || f.Type == RawFloat64) && !isFloat {
			fl = float64(raw)
		}
		switch f.Type {
		case RawInt16, RawUint16:
			binary.BigEndian.PutUint16(be, uint16(raw))
		case RawInt32, RawUint32:
			binary.BigEndian.PutUint32(be, uint32(raw))
		case RawInt64, RawUint64:
			binary.BigEndian.PutUint64(be, uint64(raw))
		case RawFloat32:
			binary.BigEndian.PutUint32(be, math.Float32bits(float32(fl)))
		case RawFloat64:
			binary.BigEndian.PutUint64(be, math.Float64bits(fl))
		}
	}
	// Reorder from big-endian to the field's wire order (the permutations are
	// their own inverses).
	var wire [8]byte
	return appendWords(dst, f.toBigEndian(be, wire[:])), nil
}

func appendWords(dst []uint16, b []byte) []uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		dst = append(dst, binary.BigEndian.Uint16(b[i:]))
	}
	return dst
}

// EncodeBit sets or clears the field's bit in register w (type bit only).
func (f *Field) EncodeBit(w uint16, on bool) uint16 {
	if on {
		return w | 1<<f.Bit
	}
	return w &^ (1 << f.Bit)
}

// rawFor inverts enum, scale and offset: the raw number that decodes to v.
func (f *Field) rawFor(v Value) (raw int64, isFloat bool, fl float64, err error) {
	if f.Enum != nil {
		for k, label := range f.Enum {
			if label == v.S {
				return k, false, 0, nil
			}
		}
		return 0, false, 0, f.errorf("%q is not an enum label", v.S)
	}
	x := v.Float64()
	if math.IsNaN(x) {
		return 0, false, 0, f.errorf("cannot encode %v", v)
	}
	x -= f.Offset
	if f.divisor != 0 {
		x *= f.divisor
	} else if f.Scale != nil {
		x /= *f.Scale
	}
	if f.Type == RawFloat32 || f.Type == RawFloat64 {
		return 0, true, x, nil
	}
	return int64(math.Round(x)), false, 0, nil
}

// widen32 converts a float32 to the float64 with the same shortest decimal
// form (0.96f becomes 0.96, not 0.9599999785423279): the value the device
// meant, as a person reading its manual would write it.
func widen32(f float32) float64 {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return float64(f)
	}
	var buf [32]byte
	b := strconv.AppendFloat(buf[:0], float64(f), 'g', -1, 32)
	x, err := strconv.ParseFloat(unsafe.String(&b[0], len(b)), 64)
	if err != nil {
		return float64(f)
	}
	return x
}

// decimalDivisor returns d when scale is exactly 1/d for an integer d
// (0.1, 0.01, 0.5 …), else 0.
func decimalDivisor(scale float64) float64 {
	if scale == 0 || math.Abs(scale) >= 1 {
		return 0
	}
	d := math.Round(1 / scale)
	if d != 0 && math.Abs(1/d-scale) <= 1e-12*math.Abs(scale) {
		return d
	}
	return 0
}
