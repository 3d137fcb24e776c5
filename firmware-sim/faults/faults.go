// Package faults is the simulator's catalogue of injectable device faults and
// the set of faults active at a moment: what the control API and scenario
// timelines add, and what the device dynamics and servers consult each tick.
//
// Fault times (start, duration, a timeline's "at") are wall-clock times, so
// a fault lasts as long as it says whatever the simulator's time
// acceleration.
package faults

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is a kind of fault.
type Kind uint8

// Fault kinds.
const (
	LampOut          Kind = iota + 1 // lamp relay on, no current, fault=lamp_failure
	DayBurning                       // lamp relay on in daylight
	CircuitDead                      // a cabinet circuit: its lamps stop answering, circuit current 0, contactor on
	Leakage                          // cabinet leakage current high
	GasPressureLow                   // outlet pressure below the band, alarm=pressure_low
	GasPressureHigh                  // outlet pressure above the band, alarm=pressure_high
	GasLeak                          // methane %LEL rising, alarm=gas_detected
	BinOverflow                      // fill 100 %, lid open
	BinFire                          // bin temperature rising past 70 °C
	BinKnockedOver                   // bin tilted about 90°
	Silent                           // the device neither answers nor publishes
	ModbusException                  // the device answers every request with an exception
	SlowReply                        // the device answers after a delay
	MalformedPayload                 // the bin publishes invalid JSON or wrong types
	numKinds
)

// The names are the API's and timelines' spelling of the kinds.
var kindNames = [numKinds]string{
	LampOut: "lamp_out", DayBurning: "day_burning", CircuitDead: "circuit_dead", Leakage: "leakage",
	GasPressureLow: "gas_pressure_low", GasPressureHigh: "gas_pressure_high", GasLeak: "gas_leak",
	BinOverflow: "bin_overflow", BinFire: "bin_fire", BinKnockedOver: "bin_knocked_over",
	Silent: "silent", ModbusException: "modbus_exception", SlowReply: "slow_reply",
	MalformedPayload: "malformed_payload",
}

// Asset kinds the faults apply to. "circuit" is a cabinet's lighting circuit,
// named like CAB-001-C2.
const (
	KindStreetlight = "streetlight"
	KindCabinet     = "cabinet"
	KindGasStation  = "gas_station"
	KindWasteBin    = "waste_bin"
	KindCircuit     = "circuit"
)

type kindSpec struct {
	targets []string
	params  map[string]paramType
	doc     string
}

type paramType uint8

const (
	pNumber paramType = iota
	pString
	pDuration
)

var modbusKinds = []string{KindStreetlight, KindCabinet, KindGasStation}

var specs = [numKinds]kindSpec{
	LampOut:          {targets: []string{KindStreetlight}, doc: "relay on, current 0, fault=lamp_failure"},
	DayBurning:       {targets: []string{KindStreetlight}, doc: "relay on in daylight"},
	CircuitDead:      {targets: []string{KindCircuit}, doc: "the circuit's lamps stop answering; circuit current 0, contactor stays on"},
	Leakage:          {targets: []string{KindCabinet}, params: map[string]paramType{"ma": pNumber}, doc: "leakage_ma high (param ma, default 45)"},
	GasPressureLow:   {targets: []string{KindGasStation}, params: map[string]paramType{"kpa": pNumber}, doc: "outlet pressure low (param kpa, default 60 % of nominal), alarm=pressure_low"},
	GasPressureHigh:  {targets: []string{KindGasStation}, params: map[string]paramType{"kpa": pNumber}, doc: "outlet pressure high (param kpa, default 140 % of nominal), alarm=pressure_high"},
	GasLeak:          {targets: []string{KindGasStation}, params: map[string]paramType{"rate_per_min": pNumber, "max": pNumber}, doc: "methane rising (params rate_per_min %LEL per minute, default 10; max, default 60), alarm=gas_detected from 20 %LEL"},
	BinOverflow:      {targets: []string{KindWasteBin}, doc: "fill 100 %, lid open"},
	BinFire:          {targets: []string{KindWasteBin}, params: map[string]paramType{"rate_per_min": pNumber, "max": pNumber}, doc: "temperature rising (rate_per_min °C per minute, default 15; max, default 150)"},
	BinKnockedOver:   {targets: []string{KindWasteBin}, params: map[string]paramType{"tilt": pNumber}, doc: "tilt about 90° (param tilt)"},
	Silent:           {targets: []string{KindStreetlight, KindCabinet, KindGasStation, KindWasteBin}, doc: "no Modbus replies / no MQTT publishes"},
	ModbusException:  {targets: modbusKinds, params: map[string]paramType{"code": pNumber}, doc: "exception reply (param code, default 4 server device failure)"},
	SlowReply:        {targets: modbusKinds, params: map[string]paramType{"delay": pDuration}, doc: "reply after a delay (param delay, default 3s)"},
	MalformedPayload: {targets: []string{KindWasteBin}, params: map[string]paramType{"mode": pString}, doc: "invalid payloads (param mode: syntax (default) or types)"},
}

// Kinds returns every fault kind.
func Kinds() []Kind {
	out := make([]Kind, 0, numKinds-1)
	for k := Kind(1); k < numKinds; k++ {
		out = append(out, k)
	}
	return out
}

func (k Kind) String() string {
	if k > 0 && k < numKinds {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Doc describes the fault's effect and parameters.
func (k Kind) Doc() string {
	if k > 0 && k < numKinds {
		return specs[k].doc
	}
	return ""
}

// Targets returns the asset kinds the fault applies to.
func (k Kind) Targets() []string {
	if k > 0 && k < numKinds {
		return specs[k].targets
	}
	return nil
}

// ParseKind returns the kind named s.
func ParseKind(s string) (Kind, error) {
	for k := Kind(1); k < numKinds; k++ {
		if kindNames[k] == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown fault %q", s)
}

// MarshalText writes the kind's name.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText parses a kind's name.
func (k *Kind) UnmarshalText(b []byte) error {
	v, err := ParseKind(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// Fault is one injected fault. It is immutable once added.
type Fault struct {
	ID     string         `json:"id"`
	Kind   Kind           `json:"fault"`
	Asset  string         `json:"asset"`
	Params map[string]any `json:"params,omitempty"`
	Start  time.Time      `json:"start"`
	Until  time.Time      `json:"until,omitzero"` // zero: until removed
	Source string         `json:"source,omitempty"`
}

// Active reports whether the fault is in effect at now.
func (f *Fault) Active(now time.Time) bool {
	return !now.Before(f.Start) && (f.Until.IsZero() || now.Before(f.Until))
}

// Age returns how long the fault has been in effect at now.
func (f *Fault) Age(now time.Time) time.Duration { return now.Sub(f.Start) }

// Number returns a numeric parameter, or def.
func (f *Fault) Number(name string, def float64) float64 {
	if f == nil {
		return def
	}
	if v, ok := f.Params[name].(float64); ok {
		return v
	}
	return def
}

// String returns a string parameter, or def.
func (f *Fault) String(name, def string) string {
	if f == nil {
		return def
	}
	if v, ok := f.Params[name].(string); ok {
		return v
	}
	return def
}

// Duration returns a duration parameter, or def.
func (f *Fault) Duration(name string, def time.Duration) time.Duration {
	if f == nil {
		return def
	}
	if v, ok := f.Params[name].(string); ok {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// Resolver returns the kind of the named asset ("circuit" for a circuit id),
// or false when there is no such asset.
type Resolver func(asset string) (kind string, ok bool)

// Set is the faults injected into a running simulator. It is safe for
// concurrent use; lookups when no fault is active cost an atomic load.
type Set struct {
	resolve Resolver

	mu      sync.RWMutex
	byID    map[string]*Fault
	byAsset map[string][]*Fault
	next    int
	count   atomic.Int64
	gen     atomic.Uint64
}

// NewSet returns an empty set that checks assets with resolve.
func NewSet(resolve Resolver) *Set {
	return &Set{resolve: resolve, byID: map[string]*Fault{}, byAsset: map[string][]*Fault{}}
}

// Spec is a fault to add.
type Spec struct {
	Kind   Kind
	Asset  string
	Start  time.Time     // when it takes effect
	For    time.Duration // 0: until removed
	Params map[string]any
	Source string // "api", "timeline", ...
}

// Validate checks the fault against the asset it names and normalises its
// parameters (numbers become float64).
func (s *Set) Validate(sp *Spec) error {
	if sp.Kind == 0 || sp.Kind >= numKinds {
		return fmt.Errorf("unknown fault kind %d", sp.Kind)
	}
	kind, ok := s.resolve(sp.Asset)
	if !ok {
		return fmt.Errorf("no asset or circuit %q", sp.Asset)
	}
	spec := specs[sp.Kind]
	applies := false
	for _, t := range spec.targets {
		applies = applies || t == kind
	}
	if !applies {
		return fmt.Errorf("fault %s applies to %v, %s is a %s", sp.Kind, spec.targets, sp.Asset, kind)
	}
	if sp.For < 0 {
		return fmt.Errorf("fault %s: negative duration %v", sp.Kind, sp.For)
	}
	params := make(map[string]any, len(sp.Params))
	for name, v := range sp.Params {
		t, ok := spec.params[name]
		if !ok {
			known := make([]string, 0, len(spec.params))
			for n := range spec.params {
				known = append(known, n)
			}
			sort.Strings(known)
			return fmt.Errorf("fault %s has no parameter %q (it takes %v)", sp.Kind, name, known)
		}
		switch t {
		case pNumber:
			x, ok := number(v)
			if !ok || math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("fault %s: parameter %s must be a number, got %v", sp.Kind, name, v)
			}
			params[name] = x
		case pString:
			str, ok := v.(string)
			if !ok {
				return fmt.Errorf("fault %s: parameter %s must be a string, got %v", sp.Kind, name, v)
			}
			params[name] = str
		case pDuration:
			str, ok := v.(string)
			d, err := time.ParseDuration(str)
			if !ok || err != nil || d < 0 {
				return fmt.Errorf("fault %s: parameter %s must be a duration such as 3s, got %v", sp.Kind, name, v)
			}
			params[name] = str
		}
	}
	if sp.Kind == ModbusException {
		if c, ok := params["code"].(float64); ok {
			switch c {
			case 1, 2, 3, 4, 5, 6, 8, 10, 11:
			default:
				return fmt.Errorf("fault %s: code must be a Modbus exception code (1-6, 8, 10, 11), got %v", sp.Kind, c)
			}
		}
	}
	if sp.Kind == MalformedPayload {
		if m, ok := params["mode"].(string); ok && m != "syntax" && m != "types" {
			return fmt.Errorf("fault %s: mode must be syntax or types, got %q", sp.Kind, m)
		}
	}
	sp.Params = params
	return nil
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case int32:
		return float64(x), true
	case uint32:
		return float64(x), true
	}
	return 0, false
}

// Add validates and adds a fault and returns it with its id.
func (s *Set) Add(sp Spec) (Fault, error) {
	if err := s.Validate(&sp); err != nil {
		return Fault{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	f := &Fault{ID: "f" + strconv.Itoa(s.next), Kind: sp.Kind, Asset: sp.Asset, Params: sp.Params, Start: sp.Start, Source: sp.Source}
	if len(f.Params) == 0 {
		f.Params = nil
	}
	if sp.For > 0 {
		f.Until = sp.Start.Add(sp.For)
	}
	s.byID[f.ID] = f
	s.byAsset[f.Asset] = append(s.byAsset[f.Asset], f)
	s.count.Add(1)
	s.gen.Add(1)
	return *f, nil
}

// Remove removes the fault with the id and reports whether it existed.
func (s *Set) Remove(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.byID[id]
	if !ok {
		return false
	}
	s.removeLocked(f)
	return true
}

func (s *Set) removeLocked(f *Fault) {
	delete(s.byID, f.ID)
	list := s.byAsset[f.Asset]
	for i, g := range list {
		if g == f {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.byAsset, f.Asset)
	} else {
		s.byAsset[f.Asset] = list
	}
	s.count.Add(-1)
	s.gen.Add(1)
}

// Expire removes faults that ended before now and returns how many.
func (s *Set) Expire(now time.Time) int {
	if s.count.Load() == 0 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, f := range s.byID {
		if !f.Until.IsZero() && !now.Before(f.Until) {
			s.removeLocked(f)
			n++
		}
	}
	return n
}

// List returns the faults not yet expired at now, oldest first.
func (s *Set) List(now time.Time) []Fault {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Fault, 0, len(s.byID))
	for _, f := range s.byID {
		if f.Until.IsZero() || now.Before(f.Until) {
			out = append(out, *f)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, _ := strconv.Atoi(out[i].ID[1:])
		b, _ := strconv.Atoi(out[j].ID[1:])
		return a < b
	})
	return out
}

// Generation changes whenever a fault is added or removed.
func (s *Set) Generation() uint64 { return s.gen.Load() }

// Effects returns the faults in effect on the asset (or circuit) at now.
func (s *Set) Effects(asset string, now time.Time) Effects {
	var e Effects
	if s == nil || s.count.Load() == 0 {
		return e
	}
	s.mu.RLock()
	for _, f := range s.byAsset[asset] {
		if f.Active(now) {
			e.mask |= 1 << f.Kind
			e.f[f.Kind] = f
		}
	}
	s.mu.RUnlock()
	return e
}

// Effects is the set of faults in effect on one asset, at most one per kind
// (the latest added wins).
type Effects struct {
	mask uint32
	f    [numKinds]*Fault
}

// Any reports whether any fault is in effect.
func (e *Effects) Any() bool { return e.mask != 0 }

// Has reports whether a fault of kind k is in effect.
func (e *Effects) Has(k Kind) bool { return e.mask&(1<<k) != 0 }

// Get returns the fault of kind k in effect, or nil.
func (e *Effects) Get(k Kind) *Fault {
	if k >= numKinds {
		return nil
	}
	return e.f[k]
}

// Merge adds the faults of o (for example a circuit's faults to its lamp's).
func (e *Effects) Merge(o Effects) {
	e.mask |= o.mask
	for k := range o.f {
		if o.f[k] != nil {
			e.f[k] = o.f[k]
		}
	}
}
