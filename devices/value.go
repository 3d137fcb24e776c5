package devices

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Type is the type of a decoded field value as it is stored in InfluxDB and
// seen by rules.
type Type uint8

// Field value types. Invalid marks a field that a reading does not carry.
const (
	Invalid Type = iota
	Bool
	Int
	Float
	String
)

var typeNames = [...]string{Invalid: "invalid", Bool: "bool", Int: "int", Float: "float", String: "string"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// Value is one decoded field value. Exactly one of I, F, S is meaningful,
// chosen by Type (Bool uses I: 0 or 1). Values are small and copied by value so
// that a Reading's fields live in one slice without per-field allocation.
type Value struct {
	Type Type
	I    int64
	F    float64
	S    string
}

// BoolValue, IntValue, FloatValue and StringValue construct Values.
func BoolValue(b bool) Value {
	if b {
		return Value{Type: Bool, I: 1}
	}
	return Value{Type: Bool}
}

// IntValue returns an Int value.
func IntValue(i int64) Value { return Value{Type: Int, I: i} }

// FloatValue returns a Float value.
func FloatValue(f float64) Value { return Value{Type: Float, F: f} }

// StringValue returns a String value.
func StringValue(s string) Value { return Value{Type: String, S: s} }

// Valid reports whether v carries a value.
func (v Value) Valid() bool { return v.Type != Invalid }

// Bool returns the value as a boolean (non-zero numbers are true).
func (v Value) Bool() bool {
	switch v.Type {
	case Bool, Int:
		return v.I != 0
	case Float:
		return v.F != 0
	case String:
		return v.S != ""
	}
	return false
}

// Float64 returns the value as a float64 (booleans are 0 or 1, strings NaN).
func (v Value) Float64() float64 {
	switch v.Type {
	case Bool, Int:
		return float64(v.I)
	case Float:
		return v.F
	}
	return math.NaN()
}

// Equal reports whether two values are identical in type and content.
func (v Value) Equal(w Value) bool {
	if v.Type != w.Type {
		return false
	}
	switch v.Type {
	case Bool, Int:
		return v.I == w.I
	case Float:
		return v.F == w.F || (math.IsNaN(v.F) && math.IsNaN(w.F))
	case String:
		return v.S == w.S
	}
	return true
}

// Any returns the value as a Go value: bool, int64, float64, string or nil.
func (v Value) Any() any {
	switch v.Type {
	case Bool:
		return v.I != 0
	case Int:
		return v.I
	case Float:
		return v.F
	case String:
		return v.S
	}
	return nil
}

func (v Value) String() string {
	switch v.Type {
	case Bool:
		return strconv.FormatBool(v.I != 0)
	case Int:
		return strconv.FormatInt(v.I, 10)
	case Float:
		return strconv.FormatFloat(v.F, 'g', -1, 64)
	case String:
		return strconv.Quote(v.S)
	}
	return "<invalid>"
}

// Reading is one asset's sample: the asset, the sample time and the typed
// field values. Values is indexed by the kind schema's field index
// (Asset.Schema); fields the sample does not carry are Invalid.
type Reading struct {
	Asset    *Asset
	Time     time.Time // device time when present and plausible, else Received
	Received time.Time // when the gateway received the sample
	Values   []Value
}

// Get returns the named field's value, or an Invalid value.
func (r *Reading) Get(name string) Value {
	i, ok := r.Asset.Schema.Index(name)
	if !ok || i >= len(r.Values) {
		return Value{}
	}
	return r.Values[i]
}

// Reset prepares r for reuse with the given asset, keeping Values' capacity.
func (r *Reading) Reset(a *Asset) {
	r.Asset = a
	r.Time, r.Received = time.Time{}, time.Time{}
	n := len(a.Schema.Fields)
	if cap(r.Values) < n {
		r.Values = make([]Value, n)
	} else {
		r.Values = r.Values[:n]
		clear(r.Values)
	}
}

// NumValid returns how many fields carry a value.
func (r *Reading) NumValid() int {
	n := 0
	for i := range r.Values {
		if r.Values[i].Type != Invalid {
			n++
		}
	}
	return n
}

func (r *Reading) String() string {
	s := fmt.Sprintf("%s@%s{", r.Asset.ID, r.Time.Format(time.RFC3339Nano))
	first := true
	for i, v := range r.Values {
		if !v.Valid() {
			continue
		}
		if !first {
			s += " "
		}
		first = false
		s += r.Asset.Schema.Fields[i].Name + "=" + v.String()
	}
	return s + "}"
}
