package devices

import (
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/citygw/citygw/devices/yamlconf"
)

// Transport is how a device is read.
type Transport string

// Transports.
const (
	Modbus Transport = "modbus"
	MQTT   Transport = "mqtt"
)

// Table is a Modbus data table.
type Table string

// Modbus tables.
const (
	Coil     Table = "coil"     // 1 bit, read/write, function 1
	Discrete Table = "discrete" // 1 bit, read-only, function 2
	Input    Table = "input"    // 16-bit, read-only, function 4
	Holding  Table = "holding"  // 16-bit, read/write, function 3
)

// IsBit reports whether the table holds single bits.
func (t Table) IsBit() bool { return t == Coil || t == Discrete }

// RawType is how a field is encoded on the wire.
type RawType string

// Raw types. Bit is one bit of a 16-bit register; Bool is a coil, a discrete
// input, a register that is non-zero, or a JSON boolean.
const (
	RawBool    RawType = "bool"
	RawBit     RawType = "bit"
	RawInt16   RawType = "int16"
	RawUint16  RawType = "uint16"
	RawInt32   RawType = "int32"
	RawUint32  RawType = "uint32"
	RawInt64   RawType = "int64"
	RawUint64  RawType = "uint64"
	RawFloat32 RawType = "float32"
	RawFloat64 RawType = "float64"
	RawString  RawType = "string"
	RawInt     RawType = "int"   // JSON only: an integer number
	RawFloat   RawType = "float" // JSON only: any number
)

// Registers returns how many 16-bit registers the type occupies (strings: length).
func (t RawType) registers(length int) int {
	switch t {
	case RawBool, RawBit, RawInt16, RawUint16:
		return 1
	case RawInt32, RawUint32, RawFloat32:
		return 2
	case RawInt64, RawUint64, RawFloat64:
		return 4
	case RawString:
		return length
	}
	return 0
}

// ByteOrder is the order of bytes of a multi-register value, named after the
// position the big-endian bytes A (most significant) to D take on the wire.
// ABCD is Modbus' big-endian default; CDAB swaps words; BADC swaps bytes
// within words; DCBA is fully little-endian. For 64-bit values the same
// rule extends to four words.
type ByteOrder string

// Byte orders.
const (
	ABCD ByteOrder = "ABCD"
	CDAB ByteOrder = "CDAB"
	BADC ByteOrder = "BADC"
	DCBA ByteOrder = "DCBA"
)

func (o ByteOrder) swapBytes() bool { return o == BADC || o == DCBA }
func (o ByteOrder) swapWords() bool { return o == CDAB || o == DCBA }

// Field is one value a device reports, mapped from its registers or its JSON
// payload to a named, typed field of the device's kind.
type Field struct {
	Name        string           `yaml:"name"`
	Description string           `yaml:"description,omitempty"`
	Unit        string           `yaml:"unit,omitempty"`
	Type        RawType          `yaml:"type"`
	Table       Table            `yaml:"table,omitempty"`   // Modbus
	Address     uint16           `yaml:"address,omitempty"` // Modbus, 0-based protocol address
	Bit         int              `yaml:"bit,omitempty"`     // Modbus, for type bit: 0 (LSB) to 15
	Length      int              `yaml:"length,omitempty"`  // Modbus, for type string: registers
	Order       ByteOrder        `yaml:"order,omitempty"`   // Modbus, default ABCD
	Path        string           `yaml:"path,omitempty"`    // MQTT, dotted JSON path; numbers index arrays
	Scale       *float64         `yaml:"scale,omitempty"`
	Offset      float64          `yaml:"offset,omitempty"`
	Enum        map[int64]string `yaml:"enum,omitempty"` // raw integer -> label; the field becomes a string
	Min         *float64         `yaml:"min,omitempty"`  // plausible range after scaling; outside is a decode error
	Max         *float64         `yaml:"max,omitempty"`
	Extra       map[string]any   `yaml:"-"`

	// Set when the profile is loaded.
	Out       Type     `yaml:"-"` // decoded value type
	Index     int      `yaml:"-"` // index in the kind schema (Reading.Values)
	Line      int      `yaml:"-"` // line in the profile file
	Registers int      `yaml:"-"` // 16-bit registers (Modbus, non-bit tables), 1 for bit tables
	pathParts []string `yaml:"-"`
	divisor   float64  // 1/Scale when that is an integer, for exact decimal scaling
	// lastStr is a string field's last decoded value, shared by the
	// decoders of every asset of the profile: a fleet reports the same
	// firmware version or state name over and over, and reusing the string
	// spares an allocation per reading (see internString).
	lastStr *atomic.Pointer[string]
}

// ModbusOptions are a Modbus profile's request planning defaults; the gateway
// config may override them per device.
type ModbusOptions struct {
	MaxRegisters   int       `yaml:"max_registers,omitempty"` // per read request, at most 125
	MaxBits        int       `yaml:"max_bits,omitempty"`      // per read request, at most 2000
	MaxGap         int       `yaml:"max_gap,omitempty"`       // unused registers a request may span to merge two blocks
	OnePerField    bool      `yaml:"one_request_per_field,omitempty"`
	TimestampField string    `yaml:"timestamp_field,omitempty"` // a field holding device time in unix seconds
	ByteOrder      ByteOrder `yaml:"byte_order,omitempty"`      // default for fields without order
}

// MQTTOptions describe a JSON payload.
type MQTTOptions struct {
	TimestampPath   string `yaml:"timestamp_path,omitempty"`   // dotted path of the sample time
	TimestampFormat string `yaml:"timestamp_format,omitempty"` // unix, unix_ms, rfc3339 (default: detect)
}

// Profile is one device model: its kind, transport and fields.
type Profile struct {
	Model       string        `yaml:"model"`
	Kind        string        `yaml:"kind"`
	Vendor      string        `yaml:"vendor,omitempty"`
	Description string        `yaml:"description,omitempty"`
	Transport   Transport     `yaml:"transport"`
	Modbus      ModbusOptions `yaml:"modbus,omitempty"`
	MQTT        MQTTOptions   `yaml:"mqtt,omitempty"`
	Fields      []Field       `yaml:"fields"`

	File string `yaml:"-"`
	// TimestampIndex is the index in Fields of the device-time field, or -1.
	TimestampIndex int `yaml:"-"`
	tsParts        []string
	trie           *pathNode // MQTT: field lookup by JSON path
}

// Field returns the named field, or nil.
func (p *Profile) Field(name string) *Field {
	for i := range p.Fields {
		if p.Fields[i].Name == name {
			return &p.Fields[i]
		}
	}
	return nil
}

// Modbus request caps of the protocol.
const (
	MaxReadRegisters = 125
	MaxReadBits      = 2000
)

// ParseProfile decodes and validates one profile file.
func ParseProfile(file string, data []byte) (*Profile, error) {
	var p Profile
	doc, err := yamlconf.Decode(file, data, &p)
	if err != nil {
		return nil, err
	}
	p.File = file
	if errs := p.validate(doc); len(errs) > 0 {
		return nil, errs
	}
	return &p, nil
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func (p *Profile) validate(doc *yamlconf.Doc) yamlconf.Errors {
	var errs yamlconf.Errors
	add := func(path, field, format string, args ...any) {
		errs = append(errs, doc.Errorf(path, field, format, args...))
	}
	if p.Model == "" {
		add("$", "model", "required")
	}
	if !isIdent(p.Kind) {
		add("$.kind", "kind", "must be an identifier such as streetlight, got %q", p.Kind)
	}
	switch p.Transport {
	case Modbus:
		o := &p.Modbus
		if o.MaxRegisters == 0 {
			o.MaxRegisters = MaxReadRegisters
		}
		if o.MaxBits == 0 {
			o.MaxBits = MaxReadBits
		}
		if o.MaxRegisters < 1 || o.MaxRegisters > MaxReadRegisters {
			add("$.modbus.max_registers", "modbus.max_registers", "must be 1..%d, got %d", MaxReadRegisters, o.MaxRegisters)
		}
		if o.MaxBits < 1 || o.MaxBits > MaxReadBits {
			add("$.modbus.max_bits", "modbus.max_bits", "must be 1..%d, got %d", MaxReadBits, o.MaxBits)
		}
		if o.MaxGap < 0 {
			add("$.modbus.max_gap", "modbus.max_gap", "must not be negative")
		}
		if o.ByteOrder == "" {
			o.ByteOrder = ABCD
		} else if !validOrder(o.ByteOrder) {
			add("$.modbus.byte_order", "modbus.byte_order", "must be ABCD, CDAB, BADC or DCBA, got %q", o.ByteOrder)
		}
	case MQTT:
		if p.MQTT.TimestampPath != "" {
			p.tsParts = strings.Split(p.MQTT.TimestampPath, ".")
		}
		switch p.MQTT.TimestampFormat {
		case "", "unix", "unix_ms", "rfc3339":
		default:
			add("$.mqtt.timestamp_format", "mqtt.timestamp_format", "must be unix, unix_ms or rfc3339, got %q", p.MQTT.TimestampFormat)
		}
	default:
		add("$.transport", "transport", "must be modbus or mqtt, got %q", p.Transport)
	}
	if len(p.Fields) == 0 {
		add("$", "fields", "a profile needs at least one field")
	}
	p.TimestampIndex = -1
	seen := map[string]int{}
	for i := range p.Fields {
		f := &p.Fields[i]
		at := fmt.Sprintf("$.fields[%d]", i)
		f.Line, _ = doc.Pos(at + ".name")
		name := fmt.Sprintf("fields[%d]", i)
		if f.Name != "" {
			name = "field " + f.Name
		}
		fadd := func(key, format string, args ...any) {
			add(at+"."+key, name+"."+key, format, args...)
		}
		if !isIdent(f.Name) {
			fadd("name", "must be an identifier (letters, digits, _), got %q", f.Name)
		}
		if j, dup := seen[f.Name]; dup {
			fadd("name", "duplicate field name (first at fields[%d])", j)
		}
		seen[f.Name] = i
		if f.Scale != nil && (*f.Scale == 0 || math.IsNaN(*f.Scale) || math.IsInf(*f.Scale, 0)) {
			fadd("scale", "must be a finite non-zero number")
		}
		if f.Scale != nil {
			f.divisor = decimalDivisor(*f.Scale)
		}
		if f.Enum != nil && f.Scale != nil {
			fadd("enum", "a field cannot have both enum and scale")
		}
		if p.Transport == Modbus {
			p.validateModbusField(f, fadd)
		} else if p.Transport == MQTT {
			p.validateMQTTField(f, fadd)
		}
		f.Out = outType(f)
		if f.Min != nil && f.Max != nil && *f.Min > *f.Max {
			fadd("min", "min %v is above max %v", *f.Min, *f.Max)
		}
	}
	if p.Transport == MQTT {
		p.trie = p.buildTrie()
	}
	if ts := p.Modbus.TimestampField; p.Transport == Modbus && ts != "" {
		if j, ok := seen[ts]; !ok {
			add("$.modbus.timestamp_field", "modbus.timestamp_field", "no field named %q", ts)
		} else if p.Fields[j].Out != Int {
			add("$.modbus.timestamp_field", "modbus.timestamp_field", "field %q must be an unscaled integer (unix seconds)", ts)
		} else {
			p.TimestampIndex = j
		}
	}
	return errs
}

func validOrder(o ByteOrder) bool { return o == ABCD || o == CDAB || o == BADC || o == DCBA }

func (p *Profile) validateModbusField(f *Field, fadd func(key, format string, args ...any)) {
	if f.Path != "" {
		fadd("path", "path is for MQTT profiles; use table and address")
	}
	switch f.Table {
	case Coil, Discrete, Input, Holding:
	default:
		fadd("table", "must be coil, discrete, input or holding, got %q", f.Table)
		return
	}
	if f.Order == "" {
		f.Order = p.Modbus.ByteOrder
	} else if !validOrder(f.Order) {
		fadd("order", "must be ABCD, CDAB, BADC or DCBA, got %q", f.Order)
	}
	if f.Table.IsBit() {
		if f.Type != RawBool {
			fadd("type", "a %s is a single bit: type must be bool, got %q", f.Table, f.Type)
		}
		f.Registers = 1
		return
	}
	switch f.Type {
	case RawBool, RawInt16, RawUint16, RawInt32, RawUint32, RawInt64, RawUint64, RawFloat32, RawFloat64:
	case RawBit:
		if f.Bit < 0 || f.Bit > 15 {
			fadd("bit", "must be 0..15, got %d", f.Bit)
		}
	case RawString:
		if f.Length < 1 || f.Length > MaxReadRegisters {
			fadd("length", "a string needs a length of 1..%d registers, got %d", MaxReadRegisters, f.Length)
		}
	default:
		fadd("type", "unknown Modbus type %q (bool, bit, int16, uint16, int32, uint32, int64, uint64, float32, float64, string)", f.Type)
		return
	}
	if f.Type != RawBit && f.Bit != 0 {
		fadd("bit", "bit is only for type bit")
	}
	f.Registers = f.Type.registers(f.Length)
	if int(f.Address)+f.Registers > 65536 {
		fadd("address", "field runs past register 65535")
	}
	if f.Registers > p.Modbus.MaxRegisters {
		fadd("type", "field spans %d registers, more than the profile's max_registers %d", f.Registers, p.Modbus.MaxRegisters)
	}
}

func (p *Profile) validateMQTTField(f *Field, fadd func(key, format string, args ...any)) {
	if f.Table != "" || f.Address != 0 || f.Length != 0 || f.Bit != 0 || f.Order != "" {
		fadd("table", "table, address, bit, length and order are for Modbus profiles; use path")
	}
	if f.Path == "" {
		f.Path = f.Name
	}
	f.pathParts = strings.Split(f.Path, ".")
	if f.Type == RawString {
		f.lastStr = new(atomic.Pointer[string])
	}
	for _, part := range f.pathParts {
		if part == "" {
			fadd("path", "empty element in path %q", f.Path)
			break
		}
	}
	switch f.Type {
	case RawBool, RawInt, RawFloat, RawString:
	case RawInt16, RawUint16, RawInt32, RawUint32, RawInt64, RawUint64:
		f.Type = RawInt
	case RawFloat32, RawFloat64:
		f.Type = RawFloat
	default:
		fadd("type", "unknown JSON type %q (bool, int, float, string)", f.Type)
	}
}

// outType is the decoded type of a validated field.
func outType(f *Field) Type {
	switch {
	case f.Enum != nil:
		return String
	case f.Type == RawString:
		return String
	case f.Type == RawBool || f.Type == RawBit:
		return Bool
	case f.Scale != nil || f.Offset != 0:
		return Float
	case f.Type == RawFloat32 || f.Type == RawFloat64 || f.Type == RawFloat:
		return Float
	}
	return Int
}

// Catalog is a set of profiles and the kind schemas they define.
type Catalog struct {
	Profiles map[string]*Profile // by model
	Kinds    map[string]*Schema  // by kind
}

// Profile returns the named profile, or nil.
func (c *Catalog) Profile(model string) *Profile { return c.Profiles[model] }

// KindNames returns the kinds in sorted order.
func (c *Catalog) KindNames() []string {
	names := make([]string, 0, len(c.Kinds))
	for k := range c.Kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// LoadCatalog reads every *.yaml / *.yml profile in the given directories of
// fsys and builds the kind schemas. A model may be defined once. All problems
// are reported together.
func LoadCatalog(fsys fs.FS, dirs ...string) (*Catalog, error) {
	var l profileLoader
	for _, dir := range dirs {
		l.load(fsys, dir, dir)
	}
	return l.catalog()
}

// LoadCatalogDirs loads the built-in profiles and those in the given
// operating-system directories, as one catalog (so that a site's own model
// of a kind shares the kind's schema with the built-in ones).
func LoadCatalogDirs(dirs ...string) (*Catalog, error) {
	var l profileLoader
	l.load(BuiltinProfiles(), ".", "devices/profiles (built in)")
	for _, dir := range dirs {
		l.load(os.DirFS(dir), ".", dir)
	}
	return l.catalog()
}

type profileLoader struct {
	errs     yamlconf.Errors
	profiles []*Profile
	models   map[string]string
}

// load reads the profiles in dir of fsys, naming files under display.
func (l *profileLoader) load(fsys fs.FS, dir, display string) {
	if l.models == nil {
		l.models = map[string]string{}
	}
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		l.errs = append(l.errs, fmt.Errorf("reading profile directory %s: %w", display, err))
		return
	}
	for _, e := range entries {
		if e.IsDir() || !(strings.HasSuffix(e.Name(), ".yaml") || strings.HasSuffix(e.Name(), ".yml")) {
			continue
		}
		name := path.Join(display, e.Name())
		data, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("reading profile %s: %w", name, err))
			continue
		}
		p, err := ParseProfile(name, data)
		if err != nil {
			l.errs = append(l.errs, err)
			continue
		}
		if prev, dup := l.models[p.Model]; dup {
			l.errs = append(l.errs, &yamlconf.Error{File: name, Line: 1, Field: "model", Msg: fmt.Sprintf("model %q already defined in %s", p.Model, prev)})
			continue
		}
		l.models[p.Model] = name
		l.profiles = append(l.profiles, p)
	}
}

func (l *profileLoader) catalog() (*Catalog, error) {
	c, err := NewCatalog(l.profiles...)
	if err != nil {
		l.errs = append(l.errs, err)
	}
	return c, l.errs.Err()
}

// NewCatalog builds a catalog from validated profiles, merging the fields of
// profiles of one kind into its schema. Two profiles of a kind that give one
// field different types are an error.
func NewCatalog(profiles ...*Profile) (*Catalog, error) {
	c := &Catalog{Profiles: map[string]*Profile{}, Kinds: map[string]*Schema{}}
	var errs yamlconf.Errors
	sort.SliceStable(profiles, func(i, j int) bool { return profiles[i].Model < profiles[j].Model })
	for _, p := range profiles {
		c.Profiles[p.Model] = p
		s := c.Kinds[p.Kind]
		if s == nil {
			s = &Schema{Kind: p.Kind, index: map[string]int{}}
			c.Kinds[p.Kind] = s
		}
		for i := range p.Fields {
			f := &p.Fields[i]
			idx, err := s.add(f.Name, f.Out, f.Unit)
			if err != nil {
				errs = append(errs, &yamlconf.Error{File: p.File, Line: f.Line, Field: "field " + f.Name, Msg: err.Error()})
				continue
			}
			f.Index = idx
		}
	}
	return c, errs.Err()
}

// Schema is the set of fields the assets of one kind report, shared by all
// profiles of that kind. Rules are compiled against it and a Reading's Values
// are indexed by it.
type Schema struct {
	Kind   string
	Fields []SchemaField
	index  map[string]int
}

// SchemaField is one field of a kind.
type SchemaField struct {
	Name string
	Type Type
	Unit string
}

// Index returns the index of the named field.
func (s *Schema) Index(name string) (int, bool) {
	i, ok := s.index[name]
	return i, ok
}

func (s *Schema) add(name string, t Type, unit string) (int, error) {
	if i, ok := s.index[name]; ok {
		if s.Fields[i].Type != t {
			return 0, fmt.Errorf("kind %s already has field %s as %s, this profile makes it %s", s.Kind, name, s.Fields[i].Type, t)
		}
		return i, nil
	}
	s.index[name] = len(s.Fields)
	s.Fields = append(s.Fields, SchemaField{Name: name, Type: t, Unit: unit})
	return len(s.Fields) - 1, nil
}

// PlausibleTime reports whether a device timestamp can be trusted: not more
// than maxSkew ahead of now and not older than maxAge.
func PlausibleTime(t, now time.Time, maxSkew, maxAge time.Duration) bool {
	return !t.IsZero() && !t.After(now.Add(maxSkew)) && !t.Before(now.Add(-maxAge))
}
