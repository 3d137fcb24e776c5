package devices

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseProfileErrors(t *testing.T) {
	head := "model: m\nkind: streetlight\ntransport: modbus\nfields:\n"
	tests := []struct {
		name string
		src  string
		want string // substring, includes file:line:col where it matters
	}{
		{"unknown key", head + "  - {name: a, table: coil, address: 0, type: bool, adress: 1}\n", "p.yaml:5:"},
		{"unknown key block", head + "  - name: a\n    tabel: coil\n", `p.yaml:6:5: unknown field "tabel"`},
		{"duplicate key", "model: m\nmodel: n\n", `p.yaml:2:1: mapping key "model" already defined`},
		{"bad table", head + "  - name: a\n    table: coils\n    type: bool\n", `p.yaml:6:12: field a.table: must be coil, discrete, input or holding, got "coils"`},
		{"bad type", head + "  - name: a\n    table: input\n    type: int24\n", `p.yaml:7:11: field a.type: unknown Modbus type "int24"`},
		{"bad order", head + "  - name: a\n    table: input\n    type: int32\n    order: ACBD\n", `p.yaml:8:12: field a.order: must be ABCD, CDAB, BADC or DCBA`},
		{"bit out of range", head + "  - {name: a, table: holding, type: bit, bit: 16}\n", "field a.bit: must be 0..15"},
		{"coil not bool", head + "  - {name: a, table: coil, type: uint16}\n", "a coil is a single bit"},
		{"string without length", head + "  - {name: a, table: holding, type: string}\n", "a string needs a length"},
		{"duplicate field", head + "  - {name: a, table: coil, type: bool}\n  - {name: a, table: coil, address: 1, type: bool}\n", "p.yaml:6:12: field a.name: duplicate field name"},
		{"bad field name", head + "  - {name: 1a, table: coil, type: bool}\n", "must be an identifier"},
		{"zero scale", head + "  - {name: a, table: input, type: uint16, scale: 0}\n", "field a.scale: must be a finite non-zero number"},
		{"past 65535", head + "  - {name: a, table: input, address: 65535, type: uint32}\n", "runs past register 65535"},
		{"bad transport", "model: m\nkind: k\ntransport: bacnet\nfields: []\n", `p.yaml:3:12: transport: must be modbus or mqtt, got "bacnet"`},
		{"no fields", "model: m\nkind: k\ntransport: mqtt\n", "fields: a profile needs at least one field"},
		{"mqtt with table", "model: m\nkind: k\ntransport: mqtt\nfields:\n  - {name: a, table: coil, type: bool}\n", "use path"},
		{"mqtt bad type", "model: m\nkind: k\ntransport: mqtt\nfields:\n  - {name: a, type: date}\n", `unknown JSON type "date"`},
		{"timestamp field missing", "model: m\nkind: k\ntransport: modbus\nmodbus: {timestamp_field: t}\nfields:\n  - {name: a, table: coil, type: bool}\n", `modbus.timestamp_field: no field named "t"`},
		{"wrong yaml type", head + "  - {name: a, table: input, address: -1, type: uint16}\n", "p.yaml:5:"},
		{"min above max", head + "  - {name: a, table: input, type: uint16, min: 5, max: 1}\n", "min 5 is above max 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseProfile("p.yaml", []byte(tt.src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error:\n%v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func TestBuiltinCatalog(t *testing.T) {
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"streetlight": {"relay_on", "dim_level", "voltage_v", "current_a", "power_w", "energy_kwh", "lamp_hours", "ambient_lux", "tilt_deg", "fault"},
		"cabinet":     {"va_v", "vb_v", "vc_v", "leakage_ma", "c1_on", "c1_a"},
		"gas_station": {"inlet_pressure_kpa", "outlet_pressure_kpa", "flow_m3h", "temperature_c", "methane_lel_pct", "valve_closed", "door_open", "mains_ok", "on_battery", "battery_v"},
		"waste_bin":   {"fill_pct", "temperature_c", "tilt_deg", "lid_open", "battery_pct", "rssi_dbm"},
	}
	for kind, fields := range want {
		s := cat.Kinds[kind]
		if s == nil {
			t.Errorf("no kind %s", kind)
			continue
		}
		for _, f := range fields {
			if _, ok := s.Index(f); !ok {
				t.Errorf("kind %s has no field %s", kind, f)
			}
		}
	}
}

func TestCatalogTypeConflict(t *testing.T) {
	a, err := ParseProfile("a.yaml", []byte("model: a\nkind: k\ntransport: mqtt\nfields:\n  - {name: x, type: int}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseProfile("b.yaml", []byte("model: b\nkind: k\ntransport: mqtt\nfields:\n  - {name: y, type: bool}\n  - {name: x, type: float}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewCatalog(a, b)
	if err == nil || !strings.Contains(err.Error(), "b.yaml:6: field x: kind k already has field x as int, this profile makes it float") {
		t.Fatalf("error %v", err)
	}
}

const invHead = "assets:\n"

func TestParseInventoryYAML(t *testing.T) {
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	src := invHead + `  - id: SL-001-01
    profile: citylight-slc200
    modbus: {host: "127.0.0.1:15020", unit: 2, interval: 2s}
    lat: 31.2990
    lon: 120.5853
    district: "320508"
    grid: "32050800101"
    code: "3205080118000001"
    attrs: {circuit: CAB-001-C1, rated_power_w: 150, serial: "0042"}
  - id: BIN-0001
    profile: binsense-ws3
    mqtt: {topic: city/bins/BIN-0001/telemetry}
    lat: 31.30
    lon: 120.59
    crs: gcj02
`
	inv, err := ParseInventoryYAML("inv.yaml", []byte(src), cat)
	if err != nil {
		t.Fatal(err)
	}
	sl := inv.Lookup("SL-001-01")
	if sl == nil || sl.Kind != "streetlight" || sl.Modbus.Unit != 2 || sl.Modbus.Interval.D().Seconds() != 2 || sl.Line != 2 {
		t.Fatalf("streetlight %+v", sl)
	}
	if sl.AttrFloat("rated_power_w") != 150 || sl.Attr("circuit") != "CAB-001-C1" || sl.Attr("serial") != "0042" {
		t.Errorf("attrs %#v", sl.Attrs)
	}
	if b := inv.ByTopic("city/bins/BIN-0001/telemetry"); b == nil || b.ID != "BIN-0001" || b.CRS != GCJ02 || b.Seq != 1 {
		t.Errorf("bin by topic %+v", b)
	}
}

func TestParseInventoryErrors(t *testing.T) {
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	ok := "    lat: 31.3\n    lon: 120.6\n"
	tests := []struct {
		name, src, want string
	}{
		{"unknown profile", invHead + "  - id: A\n    profile: nope\n" + ok, `inv.yaml:3:14: asset A.profile: unknown profile "nope"`},
		{"modbus without address", invHead + "  - id: A\n    profile: citylight-slc200\n" + ok, "needs a modbus address"},
		{"bad host", invHead + "  - id: A\n    profile: citylight-slc200\n    modbus: {host: localhost, unit: 1}\n" + ok, `asset A.modbus.host: want host:port, got "localhost"`},
		{"kind mismatch", invHead + "  - id: A\n    kind: waste_bin\n    profile: citylight-slc200\n    modbus: {host: 'h:1', unit: 1}\n" + ok, `inv.yaml:3:11: asset A.kind: is "waste_bin" but profile citylight-slc200 is for kind "streetlight"`},
		{"bad code", invHead + "  - id: A\n    profile: binsense-ws3\n    code: '12345'\n" + ok, "want a 16-digit component code"},
		{"code not in district", invHead + "  - id: A\n    profile: binsense-ws3\n    district: '320508'\n    code: '3205070305000001'\n" + ok, "does not start with the asset's district 320508"},
		{"bad lat", invHead + "  - id: A\n    profile: binsense-ws3\n    lat: 91\n    lon: 1\n", "asset A.lat: want -90..90"},
		{"bad crs", invHead + "  - id: A\n    profile: binsense-ws3\n    crs: bd09\n" + ok, `want wgs84 or gcj02, got "bd09"`},
		{"bad id", invHead + "  - id: 'a/b'\n    profile: binsense-ws3\n" + ok, "without spaces"},
		{"duplicate id", invHead + "  - id: A\n    profile: binsense-ws3\n" + ok + "  - id: A\n    profile: binsense-ws3\n" + ok, "inv.yaml:6: asset A.id: duplicate asset id (first at line 2)"},
		{"duplicate unit", invHead + "  - id: A\n    profile: citylight-slc200\n    modbus: {host: 'h:1', unit: 1}\n" + ok + "  - id: B\n    profile: citylight-slc200\n    modbus: {host: 'h:1', unit: 1}\n" + ok, "unit 1 on tcp:h:1 is already asset A"},
		{"bad duration", invHead + "  - id: A\n    profile: citylight-slc200\n    modbus: {host: 'h:1', unit: 1, interval: 5 minutes}\n" + ok, `inv.yaml:4:`},
		{"unknown key", invHead + "  - id: A\n    profle: x\n", `inv.yaml:3:5: unknown field "profle"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseInventoryYAML("inv.yaml", []byte(tt.src), cat)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error:\n%v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseInventoryCSV(t *testing.T) {
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	src := `id,profile,transport,lat,lon,district,grid,code,attrs
# a comment line
SL-1,citylight-slc200,modbus+tcp://127.0.0.1:15020?unit=3&interval=5s,31.3,120.6,320508,32050800101,3205080118000001,circuit=C1;rated_power_w=100
BIN-1,binsense-ws3,mqtt:city/bins/BIN-1/telemetry,31.31,120.61,320508,,,capacity_l=240
GAS-1,gasreg-rtu500,modbus+rtu:///dev/ttyUSB0?unit=7&baud=19200&parity=E,31.32,120.62,,,,
`
	inv, err := ParseInventoryCSV("inv.csv", []byte(src), cat)
	if err != nil {
		t.Fatal(err)
	}
	sl := inv.Lookup("SL-1")
	if sl.Modbus.Host != "127.0.0.1:15020" || sl.Modbus.Unit != 3 || sl.Modbus.Interval.D().Seconds() != 5 || sl.AttrFloat("rated_power_w") != 100 || sl.Line != 3 {
		t.Errorf("SL-1 %+v %+v", sl, sl.Modbus)
	}
	if g := inv.Lookup("GAS-1"); g.Modbus.Serial != "/dev/ttyUSB0" || g.Modbus.Baud != 19200 || g.Modbus.Parity != "E" || g.Modbus.Endpoint() != "rtu:/dev/ttyUSB0" {
		t.Errorf("GAS-1 %+v", g.Modbus)
	}
	if inv.ByTopic("city/bins/BIN-1/telemetry") == nil {
		t.Error("BIN-1 not found by topic")
	}

	bad := `id,profile,transport,lat,lon,colour
A,binsense-ws3,mqtt:x,1,1,red
`
	if _, err := ParseInventoryCSV("inv.csv", []byte(bad), cat); err == nil || !strings.Contains(err.Error(), "inv.csv:1:6: colour: unknown column") {
		t.Errorf("unknown column: %v", err)
	}
	bad = `id,profile,transport,lat,lon
A,binsense-ws3,mqtt:x,north,1
B,citylight-slc200,modbus+tcp://h:1?unit=x,1,1
`
	_, err = ParseInventoryCSV("inv.csv", []byte(bad), cat)
	for _, want := range []string{`inv.csv:2:23: lat: not a number: "north"`, `inv.csv:3:`, `transport: unit: want 0..255`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
}

func TestLoadInventoryFile(t *testing.T) {
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "inv.yml")
	os.WriteFile(p, []byte(invHead+"  - {id: B, profile: binsense-ws3, lat: 1, lon: 2}\n"), 0o644)
	if inv, err := LoadInventory(p, cat); err != nil || inv.Len() != 1 {
		t.Fatalf("LoadInventory: %v", err)
	}
	if _, err := LoadInventory(filepath.Join(dir, "inv.json"), cat); err == nil {
		t.Error("want an error for a missing file")
	}
}

func FuzzParseProfile(f *testing.F) {
	entries, _ := os.ReadDir("profiles")
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join("profiles", e.Name()))
		f.Add(b)
	}
	f.Add([]byte("model: m\nkind: k\ntransport: mqtt\nfields:\n  - {name: a, path: x.0.y, type: int}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseProfile("f.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if _, err := NewCatalog(p); err != nil {
			t.Fatalf("valid profile makes an invalid catalog: %v", err)
		}
	})
}

func FuzzParseInventory(f *testing.F) {
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(invHead+"  - {id: B, profile: binsense-ws3, lat: 1, lon: 2, attrs: {a: 1}}\n"), false)
	f.Add([]byte("id,profile,transport,lat,lon\nA,binsense-ws3,mqtt:x,1,1\n"), true)
	f.Add([]byte("id,profile,transport,lat,lon,attrs\nA,citylight-slc200,modbus+tcp://h:1?unit=1,1,1,a=b;c\n"), true)
	f.Fuzz(func(t *testing.T, data []byte, csv bool) {
		var inv *Inventory
		var err error
		if csv {
			inv, err = ParseInventoryCSV("f.csv", data, cat)
		} else {
			inv, err = ParseInventoryYAML("f.yaml", data, cat)
		}
		if err != nil {
			return
		}
		for i, a := range inv.Assets {
			if a.Seq != i || a.Profile == nil || a.Schema == nil || inv.Lookup(a.ID) != a {
				t.Fatalf("asset %d inconsistent: %+v", i, a)
			}
		}
	})
}

// A big YAML inventory is parsed in chunks: the same assets as one piece,
// and errors at the file's own lines, whichever chunk they are in.
func TestInventoryYAMLChunks(t *testing.T) {
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("# a city\nassets:\n")
	lineOf := map[int]int{} // asset index -> line of its "- id:"
	line := 3
	n := 3*inventoryChunk + 17
	for i := range n {
		lineOf[i] = line
		fmt.Fprintf(&b, "  - id: BIN-%05d\n    profile: binsense-ws3\n    lat: 31.2\n    lon: 121.4\n", i)
		line += 4
		if i%100 == 0 {
			b.WriteString("    # a comment inside an item\n\n")
			line += 2
		}
	}
	good := b.String()
	chunks, ok := splitInventoryYAML([]byte(good))
	if !ok || len(chunks) != 4 {
		t.Fatalf("split into %d chunks (ok %v), want 4", len(chunks), ok)
	}
	inv, err := ParseInventoryYAML("inv.yaml", []byte(good), cat)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Len() != n {
		t.Fatalf("%d assets, want %d", inv.Len(), n)
	}
	for _, i := range []int{0, inventoryChunk - 1, inventoryChunk, 2*inventoryChunk + 5, n - 1} {
		a := inv.Assets[i]
		if a.ID != fmt.Sprintf("BIN-%05d", i) || a.Line != lineOf[i] {
			t.Errorf("asset %d: %s at line %d, want BIN-%05d at line %d", i, a.ID, a.Line, i, lineOf[i])
		}
	}
	// The same file in flow style is parsed whole, to the same assets.
	flow := "assets: [" + strings.TrimSuffix(strings.Repeat("{id: X, profile: binsense-ws3, lat: 31.2, lon: 121.4},", 1), ",") + "]\n"
	if _, ok := splitInventoryYAML([]byte(flow)); ok {
		t.Error("flow style was split")
	}
	if inv, err := ParseInventoryYAML("flow.yaml", []byte(flow), cat); err != nil || inv.Len() != 1 {
		t.Errorf("flow style: %v", err)
	}

	// Errors in a later chunk name the file's line.
	bad := strings.Replace(good, fmt.Sprintf("  - id: BIN-%05d\n    profile: binsense-ws3\n    lat: 31.2\n", 2*inventoryChunk+5),
		fmt.Sprintf("  - id: BIN-%05d\n    profile: binsense-ws3\n    lat: 95.0\n", 2*inventoryChunk+5), 1)
	_, err = ParseInventoryYAML("inv.yaml", []byte(bad), cat)
	want := fmt.Sprintf("inv.yaml:%d:", lineOf[2*inventoryChunk+5]+2)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "lat") {
		t.Errorf("bad latitude: %v, want an error at %s", err, want)
	}
	unknown := strings.Replace(good, fmt.Sprintf("  - id: BIN-%05d\n", 3*inventoryChunk+2), fmt.Sprintf("  - id: BIN-%05d\n    colour: red\n", 3*inventoryChunk+2), 1)
	_, err = ParseInventoryYAML("inv.yaml", []byte(unknown), cat)
	want = fmt.Sprintf("inv.yaml:%d:", lineOf[3*inventoryChunk+2]+1)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("unknown key: %v, want an error at %s", err, want)
	}
	dup := good + "  - id: BIN-00003\n    profile: binsense-ws3\n    lat: 31.2\n    lon: 121.4\n"
	if _, err := ParseInventoryYAML("inv.yaml", []byte(dup), cat); err == nil || !strings.Contains(err.Error(), "BIN-00003") {
		t.Errorf("duplicate id across chunks: %v", err)
	}
}
