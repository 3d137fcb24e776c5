package city

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/firmware-sim/faults"
)

func catalog(t testing.TB) *devices.Catalog {
	t.Helper()
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

const smallYAML = `
name: t
seed: 3
center: {lat: 31.2304, lon: 121.4737}
district: "310101"
grids: ["31010100101", "31010100102", "31010100103"]
streetlights: {cabinets: 3, lamps_per_cabinet: 10, circuits_per_cabinet: 4}
gas: {stations: 5, per_port: 2}
bins: {count: 25}
`

func small(t testing.TB) *City {
	t.Helper()
	conf, err := ParseConfig("small.yaml", []byte(smallYAML))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Generate(conf, catalog(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte("center: {lat: 31.2, lon: 121.5}\ndistrict: \"310101\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if *c.Streetlights.Cabinets != 4 || *c.Streetlights.LampsPerCabinet != 12 || *c.Gas.Stations != 5 || *c.Bins.Count != 100 {
		t.Errorf("default counts: %d cabinets × %d lamps, %d gas, %d bins", *c.Streetlights.Cabinets, *c.Streetlights.LampsPerCabinet, *c.Gas.Stations, *c.Bins.Count)
	}
	if c.Timezone != "Asia/Shanghai" || c.MQTT.Topic != "city/bins/{asset}/telemetry" || *c.MQTT.QoS != 1 || c.Codes.Cabinet != "0117" {
		t.Errorf("defaults: %+v", c)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown key", "center: {lat: 31, lon: 121}\ndistrict: \"310101\"\nlampz: 3\n", "c.yaml:3"},
		{"bad district", "center: {lat: 31, lon: 121}\ndistrict: \"3101\"\n", "c.yaml:2:11: district: want a 6-digit"},
		{"too many lamps", "center: {lat: 31, lon: 121}\ndistrict: \"310101\"\nstreetlights:\n  lamps_per_cabinet: 300\n", "c.yaml:4:22: streetlights.lamps_per_cabinet"},
		{"topic", "center: {lat: 31, lon: 121}\ndistrict: \"310101\"\nmqtt: {topic: bins/x}\n", "must contain {asset}"},
		{"collection", "center: {lat: 31, lon: 121}\ndistrict: \"310101\"\nbins: {collections: [\"25:00\"]}\n", "bins.collections"},
		{"no center", "district: \"310101\"\n", "center"},
		{"bad duration", "center: {lat: 31, lon: 121}\ndistrict: \"310101\"\nmqtt: {interval: soon}\n", "c.yaml:3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("c.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestGenerate(t *testing.T) {
	c := small(t)
	if len(c.Cabinets) != 3 || len(c.Lamps) != 30 || len(c.Gas) != 5 || len(c.Bins) != 25 {
		t.Fatalf("counts: %d cabinets, %d lamps, %d gas, %d bins", len(c.Cabinets), len(c.Lamps), len(c.Gas), len(c.Bins))
	}
	// One port per cabinet (cabinet unit 1, lamps 2..11), gas 2 per port.
	if len(c.Ports) != 3+3 {
		t.Errorf("ports: %v", c.Ports)
	}
	classes := map[string]string{"streetlight": "0118", "cabinet": "0117", "gas_station": "0135", "waste_bin": "0305"}
	seen := map[string]bool{}
	for _, a := range c.Inventory.Assets {
		if len(a.Code) != 16 || a.Code[:6] != "310101" || a.Code[6:10] != classes[a.Kind] {
			t.Errorf("%s: code %q", a.ID, a.Code)
		}
		if seen[a.Code] {
			t.Errorf("%s: duplicate code %s", a.ID, a.Code)
		}
		seen[a.Code] = true
		if d := distanceM(a.Lat, a.Lon, 31.2304, 121.4737); d > 1500+30*10+1 {
			t.Errorf("%s is %.0f m from the center", a.ID, d)
		}
		if a.Grid == "" {
			t.Errorf("%s: no grid", a.ID)
		}
	}
	l := c.Inventory.Lookup("SL-002-07")
	if l == nil || l.Modbus.Unit != 8 || l.Modbus.Host != c.Inventory.Lookup("CAB-002").Modbus.Host || c.Inventory.Lookup("CAB-002").Modbus.Unit != 1 {
		t.Fatalf("SL-002-07: %+v", l)
	}
	if l.Attr("cabinet") != "CAB-002" || l.Attr("circuit") != "CAB-002-C3" || l.AttrFloat("rated_power_w") <= 0 {
		t.Errorf("SL-002-07 attrs: %v", l.Attrs)
	}
	g3 := c.Inventory.Lookup("GAS-003")
	if g3.Modbus.Unit != 1 || g3.Modbus.Host == c.Inventory.Lookup("GAS-002").Modbus.Host || c.Inventory.Lookup("GAS-004").Modbus.Unit != 2 {
		t.Errorf("gas units: GAS-003 %+v", g3.Modbus)
	}
	if g3.AttrFloat("pressure_min_kpa") >= g3.AttrFloat("nominal_kpa") || g3.AttrFloat("pressure_max_kpa") <= g3.AttrFloat("nominal_kpa") {
		t.Errorf("gas band: %v", g3.Attrs)
	}
	b := c.Inventory.Lookup("BIN-0025")
	if b == nil || b.MQTT.Topic != "city/bins/BIN-0025/telemetry" || b.AttrFloat("capacity_l") <= 0 {
		t.Errorf("BIN-0025: %+v", b)
	}
	if n := c.Inventory.Lookup("CAB-001").AttrFloat("circuits"); n != 4 {
		t.Errorf("circuits: %v", n)
	}
	if _, ok := c.Circuits["CAB-003-C4"]; !ok {
		t.Error("circuit CAB-003-C4 missing")
	}
}

func distanceM(lat1, lon1, lat2, lon2 float64) float64 {
	dy := (lat1 - lat2) * math.Pi / 180 * 6371000
	dx := (lon1 - lon2) * math.Pi / 180 * 6371000 * math.Cos(lat2*math.Pi/180)
	return math.Hypot(dx, dy)
}

func TestGenerateDeterministic(t *testing.T) {
	a, _ := small(t).InventoryYAML()
	b, _ := small(t).InventoryYAML()
	if string(a) != string(b) {
		t.Fatal("same seed, different cities")
	}
	conf, _ := ParseConfig("s.yaml", []byte(smallYAML))
	conf.Seed = 4
	c, err := Generate(conf, catalog(t))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := c.InventoryYAML()
	if string(a) == string(d) {
		t.Fatal("different seeds, same city")
	}
}

func TestInventoryRoundTrip(t *testing.T) {
	c := small(t)
	file := filepath.Join(t.TempDir(), "inventory.yaml")
	if err := c.WriteInventory(file); err != nil {
		t.Fatal(err)
	}
	inv, err := devices.LoadInventory(file, c.Catalog)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Len() != c.Inventory.Len() {
		t.Fatalf("%d assets read back, %d written", inv.Len(), c.Inventory.Len())
	}
	for i, want := range c.Inventory.Assets {
		got := inv.Assets[i]
		if got.ID != want.ID || got.Kind != want.Kind || got.Model != want.Model || got.Lat != want.Lat || got.Lon != want.Lon ||
			got.District != want.District || got.Grid != want.Grid || got.Code != want.Code {
			t.Errorf("asset %d: got %+v, want %+v", i, got, want)
		}
		if (got.Modbus == nil) != (want.Modbus == nil) || got.Modbus != nil && (got.Modbus.Host != want.Modbus.Host || got.Modbus.Unit != want.Modbus.Unit) {
			t.Errorf("%s: modbus %+v, want %+v", want.ID, got.Modbus, want.Modbus)
		}
		if want.MQTT != nil && got.MQTT.Topic != want.MQTT.Topic {
			t.Errorf("%s: topic %q", want.ID, got.MQTT.Topic)
		}
		for k := range want.Attrs {
			if got.Attr(k) != want.Attr(k) {
				t.Errorf("%s: attr %s = %q, want %q", want.ID, k, got.Attr(k), want.Attr(k))
			}
		}
	}
}

func TestShippedConfigs(t *testing.T) {
	for _, f := range []string{"city-demo.yaml", "city-small.yaml"} {
		conf, err := LoadConfig(filepath.Join("..", "..", "configs", f))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Generate(conf, catalog(t)); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	// The committed demo inventory is what the tool generates from the demo city.
	conf, _ := LoadConfig("../../configs/city-demo.yaml")
	c, _ := Generate(conf, catalog(t))
	want, _ := c.InventoryYAML()
	got, err := os.ReadFile("../../configs/inventory-demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Error("configs/inventory-demo.yaml is stale: regenerate it with firmware-sim inventory -city configs/city-demo.yaml -o configs/inventory-demo.yaml")
	}
}

// values steps one city at a simulated local time and returns the named
// fields of each model kind.
type stepper struct {
	c    *City
	last time.Time
}

func (s *stepper) env(t *testing.T, local string) Env {
	t.Helper()
	at, err := time.ParseInLocation("2006-01-02 15:04", local, s.c.Loc)
	if err != nil {
		t.Fatal(err)
	}
	dt := 0.0
	if !s.last.IsZero() {
		dt = at.Sub(s.last).Seconds()
	}
	s.last = at
	return s.c.Env(at, time.Now(), dt, 0, 0)
}

func fieldOf(t *testing.T, model string, c *City, vals []devices.Value, name string) devices.Value {
	t.Helper()
	p := c.Catalog.Profile(model)
	for i := range p.Fields {
		if p.Fields[i].Name == name {
			return vals[i]
		}
	}
	t.Fatalf("%s has no field %s", model, name)
	return devices.Value{}
}

func stepAll(c *City, e *Env, lampEff func(*Lamp) faults.Effects) (lamps [][]devices.Value, cabs [][]devices.Value) {
	for _, cab := range c.Cabinets {
		cab.PreStep(e)
	}
	for _, l := range c.Lamps {
		v := make([]devices.Value, len(c.Catalog.Profile(ModelStreetlight).Fields))
		var eff faults.Effects
		if lampEff != nil {
			eff = lampEff(l)
		}
		l.Step(e, &eff, v)
		lamps = append(lamps, v)
	}
	for _, cab := range c.Cabinets {
		v := make([]devices.Value, len(c.Catalog.Profile(ModelCabinet).Fields))
		var eff faults.Effects
		var circ [4]faults.Effects
		cab.Step(e, &eff, &circ, v)
		cabs = append(cabs, v)
	}
	return lamps, cabs
}

func TestLampsDuskToDawn(t *testing.T) {
	c := small(t)
	s := &stepper{c: c}
	tests := []struct {
		local  string
		on     bool
		dim    int64
		minLux int64
		maxLux int64
	}{
		{"2026-01-15 12:00", false, 0, 20000, 80000},
		{"2026-01-15 16:30", false, 0, 400, 20000}, // sunset in Shanghai is about 17:20 in mid-January
		{"2026-01-15 18:30", true, 100, 0, 5},
		{"2026-01-15 23:30", true, 100, 0, 1},
		{"2026-01-16 02:00", true, 50, 0, 1},
		{"2026-01-16 06:30", true, 100, 0, 50},
		{"2026-01-16 08:00", false, 0, 400, 40000}, // sunrise about 06:52
	}
	for _, tt := range tests {
		e := s.env(t, tt.local)
		lamps, cabs := stepAll(c, &e, nil)
		for i, v := range lamps {
			l := c.Lamps[i]
			get := func(n string) devices.Value { return fieldOf(t, ModelStreetlight, c, v, n) }
			if get("relay_on").Bool() != tt.on {
				t.Errorf("%s %s: relay_on %v, want %v", tt.local, l.Asset.ID, get("relay_on"), tt.on)
			}
			if get("dim_level").I != tt.dim {
				t.Errorf("%s %s: dim_level %v, want %d", tt.local, l.Asset.ID, get("dim_level"), tt.dim)
			}
			if lux := get("ambient_lux").I; lux < tt.minLux || lux > tt.maxLux {
				t.Errorf("%s %s: ambient_lux %d, want %d..%d", tt.local, l.Asset.ID, lux, tt.minLux, tt.maxLux)
			}
			cur, pw := get("current_a").F, get("power_w").F
			want := l.RatedW * float64(tt.dim) / 100
			if math.Abs(pw-want) > 0.05*l.RatedW || tt.on && math.Abs(cur-want/225/0.95) > 0.1*want/225+0.01 || !tt.on && cur != 0 {
				t.Errorf("%s %s: power %.1f W current %.3f A, want about %.1f W", tt.local, l.Asset.ID, pw, cur, want)
			}
			if get("fault").S != "ok" {
				t.Errorf("fault %v", get("fault"))
			}
		}
		for i, v := range cabs {
			cab := c.Cabinets[i]
			for n := 1; n <= 4; n++ {
				on := fieldOf(t, ModelCabinet, c, v, "c"+string(rune('0'+n))+"_on").Bool()
				if on != tt.on {
					t.Errorf("%s %s: c%d_on %v", tt.local, cab.Asset.ID, n, on)
				}
				sum := 0.0
				for _, l := range cab.Lamps[n-1] {
					sum += l.current
				}
				if got := fieldOf(t, ModelCabinet, c, v, "c"+string(rune('0'+n))+"_a").F; got != sum {
					t.Errorf("%s %s: c%d_a %v, want the sum of its lamps %v", tt.local, cab.Asset.ID, n, got, sum)
				}
			}
			if va := fieldOf(t, ModelCabinet, c, v, "va_v").F; va < 220 || va > 240 {
				t.Errorf("va_v %v", va)
			}
		}
	}
	// Energy and lamp hours accumulate over the night.
	l := c.Lamps[0]
	e0, h0 := l.energyKWh, l.hours
	s.env(t, "2026-01-16 17:30")
	e := s.env(t, "2026-01-16 18:30")
	stepAll(c, &e, nil)
	if got := l.energyKWh - e0; math.Abs(got-l.RatedW/1000) > 0.05*l.RatedW/1000 {
		t.Errorf("an hour at full power added %.3f kWh, want %.3f", got, l.RatedW/1000)
	}
	if got := l.hours - h0; math.Abs(got-1) > 1e-6 {
		t.Errorf("lamp hours +%v, want +1", got)
	}
}

func effects(t *testing.T, set *faults.Set, sp faults.Spec) faults.Effects {
	t.Helper()
	sp.Start = time.Now().Add(-time.Hour)
	if _, err := set.Add(sp); err != nil {
		t.Fatal(err)
	}
	return set.Effects(sp.Asset, time.Now())
}

func TestLampFaults(t *testing.T) {
	c := small(t)
	set := faults.NewSet(func(id string) (string, bool) {
		if a := c.Inventory.Lookup(id); a != nil {
			return a.Kind, true
		}
		return faults.KindCircuit, true
	})
	out := effects(t, set, faults.Spec{Kind: faults.LampOut, Asset: "SL-001-01"})
	day := effects(t, set, faults.Spec{Kind: faults.DayBurning, Asset: "SL-001-02"})
	s := &stepper{c: c}
	for _, at := range []string{"2026-01-15 12:00", "2026-01-15 21:00"} {
		e := s.env(t, at)
		lamps, _ := stepAll(c, &e, func(l *Lamp) faults.Effects {
			switch l.Asset.ID {
			case "SL-001-01":
				return out
			case "SL-001-02":
				return day
			}
			return faults.Effects{}
		})
		night := at[11:] == "21:00"
		v := lamps[0]
		if fieldOf(t, ModelStreetlight, c, v, "fault").S != "lamp_failure" || fieldOf(t, ModelStreetlight, c, v, "current_a").F != 0 ||
			fieldOf(t, ModelStreetlight, c, v, "relay_on").Bool() != night {
			t.Errorf("%s lamp_out: %v", at, v)
		}
		v = lamps[1]
		if !fieldOf(t, ModelStreetlight, c, v, "relay_on").Bool() || fieldOf(t, ModelStreetlight, c, v, "current_a").F < 0.2 ||
			fieldOf(t, ModelStreetlight, c, v, "dim_level").I != 100 {
			t.Errorf("%s day_burning: %v", at, v)
		}
	}
}

func TestCircuitDeadAndLeakage(t *testing.T) {
	c := small(t)
	set := faults.NewSet(func(id string) (string, bool) {
		if a := c.Inventory.Lookup(id); a != nil {
			return a.Kind, true
		}
		if _, ok := c.Circuits[id]; ok {
			return faults.KindCircuit, true
		}
		return "", false
	})
	dead := effects(t, set, faults.Spec{Kind: faults.CircuitDead, Asset: "CAB-001-C2"})
	leak := effects(t, set, faults.Spec{Kind: faults.Leakage, Asset: "CAB-001", Params: map[string]any{"ma": 80}})
	e := (&stepper{c: c}).env(t, "2026-01-15 21:00")
	cab := c.Cabinets[0]
	cab.PreStep(&e)
	for _, l := range c.Lamps {
		v := make([]devices.Value, 15)
		eff := set.Effects(l.Asset.ID, time.Now())
		eff.Merge(set.Effects(l.CircuitID, time.Now()))
		l.Step(&e, &eff, v)
	}
	v := make([]devices.Value, len(c.Catalog.Profile(ModelCabinet).Fields))
	circ := [4]faults.Effects{{}, dead, {}, {}}
	cab.Step(&e, &leak, &circ, v)
	if got := fieldOf(t, ModelCabinet, c, v, "c2_a").F; got != 0 {
		t.Errorf("dead circuit current %v", got)
	}
	if !fieldOf(t, ModelCabinet, c, v, "c2_on").Bool() {
		t.Error("contactor of the dead circuit opened")
	}
	if got := fieldOf(t, ModelCabinet, c, v, "c1_a").F; got < 0.2 {
		t.Errorf("live circuit current %v", got)
	}
	if got := fieldOf(t, ModelCabinet, c, v, "leakage_ma").F; math.Abs(got-80) > 3 {
		t.Errorf("leakage %v, want about 80", got)
	}
}

func TestGasDemandCurve(t *testing.T) {
	tests := []struct {
		hi, lo float64
	}{{7.5, 3}, {7.5, 10}, {18.75, 15}, {18.75, 23}, {12, 10}, {18.75, 7.5}}
	for _, tt := range tests {
		if Demand(tt.hi) <= Demand(tt.lo) {
			t.Errorf("demand at %v (%.2f) not above %v (%.2f)", tt.hi, Demand(tt.hi), tt.lo, Demand(tt.lo))
		}
	}
	for h := 0.0; h < 24; h += 0.25 {
		if d := Demand(h); d < 0.1 || d > 1.1 {
			t.Errorf("demand at %v = %v", h, d)
		}
	}
}

func TestGasStation(t *testing.T) {
	c := small(t)
	set := faults.NewSet(func(id string) (string, bool) { return faults.KindGasStation, true })
	g := c.Gas[0]
	vals := make([]devices.Value, len(c.Catalog.Profile(ModelGasStation).Fields))
	get := func(n string) devices.Value { return fieldOf(t, ModelGasStation, c, vals, n) }
	s := &stepper{c: c}
	e := s.env(t, "2026-01-15 03:00")
	var none faults.Effects
	g.Step(&e, &none, vals)
	night := get("flow_m3h").F
	if out := get("outlet_pressure_kpa").F; out < g.MinKPa || out > g.MaxKPa || get("alarm").S != "none" {
		t.Errorf("normal outlet %v alarm %v", out, get("alarm"))
	}
	if get("inlet_pressure_kpa").F < 250 || get("methane_lel_pct").F > 1 || get("valve_closed").Bool() || !get("mains_ok").Bool() {
		t.Errorf("normal values %v", vals)
	}
	e = s.env(t, "2026-01-15 18:45")
	vol := g.volume
	g.Step(&e, &none, vals)
	if peak := get("flow_m3h").F; peak < 2*night {
		t.Errorf("evening flow %v not well above the night's %v", peak, night)
	}
	if g.volume <= vol {
		t.Error("volume did not accumulate")
	}
	low := effects(t, set, faults.Spec{Kind: faults.GasPressureLow, Asset: "GAS-001"})
	g.Step(&e, &low, vals)
	if out := get("outlet_pressure_kpa").F; out >= g.MinKPa || get("alarm").S != "pressure_low" {
		t.Errorf("pressure_low: outlet %v alarm %v", out, get("alarm"))
	}
	set = faults.NewSet(func(id string) (string, bool) { return faults.KindGasStation, true })
	high := effects(t, set, faults.Spec{Kind: faults.GasPressureHigh, Asset: "GAS-001", Params: map[string]any{"kpa": 4.2}})
	g.Step(&e, &high, vals)
	if out := get("outlet_pressure_kpa").F; math.Abs(out-4.2) > 0.2 || get("alarm").S != "pressure_high" {
		t.Errorf("pressure_high: outlet %v alarm %v", out, get("alarm"))
	}
	set = faults.NewSet(func(id string) (string, bool) { return faults.KindGasStation, true })
	leak := effects(t, set, faults.Spec{Kind: faults.GasLeak, Asset: "GAS-001"}) // an hour old: at its max
	g.Step(&e, &leak, vals)
	if m := get("methane_lel_pct").F; m < 59 || m > 60 || get("alarm").S != "gas_detected" {
		t.Errorf("gas_leak: methane %v alarm %v", m, get("alarm"))
	}
}

func TestBinFillAndCollection(t *testing.T) {
	c := small(t)
	b := c.Bins[0]
	b.Route = 0
	at := func(s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, c.Loc)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	if got := b.Fill(at("2026-01-15 06:00")); got != residual {
		t.Errorf("just emptied: %v", got)
	}
	morning, noon := b.Fill(at("2026-01-15 08:00")), b.Fill(at("2026-01-15 13:59"))
	if !(morning < noon) {
		t.Errorf("fill not rising through the day: %v at 08:00, %v at 13:59", morning, noon)
	}
	want := residual + b.RatePerHour*(6+59.0/60) + b.RatePerHour*nightShare*1 // 06:00-07:00 is night
	if math.Abs(noon-math.Min(100, want)) > 1e-9 {
		t.Errorf("fill at 13:59 = %v, want %v", noon, want)
	}
	if after := b.Fill(at("2026-01-15 14:01")); after > residual+1 {
		t.Errorf("not emptied at 14:00: %v", after)
	}
	b.Route = 2 // collected 40 min after the round starts
	if before, after := b.Fill(at("2026-01-15 14:39")), b.Fill(at("2026-01-15 14:41")); before <= after {
		t.Errorf("route 3 not emptied at 14:40: %v then %v", before, after)
	}
	// Overnight the bin fills slowly: 8 hours of night add less than 2 daytime hours.
	night := b.Fill(at("2026-01-16 05:59")) - b.Fill(at("2026-01-15 22:00"))
	if night <= 0 || night > 2*b.RatePerHour {
		t.Errorf("overnight fill %v with day rate %v", night, b.RatePerHour)
	}
}

func TestBinPayload(t *testing.T) {
	c := small(t)
	b := c.Bins[0]
	a := b.Asset
	set := faults.NewSet(func(string) (string, bool) { return faults.KindWasteBin, true })
	s := &stepper{c: c}
	e := s.env(t, "2026-01-15 11:00")
	decode := func(eff faults.Effects) (*devices.Reading, time.Time, error) {
		var r devices.Reading
		r.Reset(a)
		p := b.Payload(&e, &eff, nil)
		ts, err := a.Profile.DecodeJSON(p, &r)
		return &r, ts, err
	}
	r, ts, err := decode(faults.Effects{})
	if err != nil {
		t.Fatal(err)
	}
	if ts.UnixMilli() != e.Wall.UnixMilli() {
		t.Errorf("ts %v, want the device clock %v", ts, e.Wall)
	}
	if r.NumValid() != len(a.Schema.Fields) {
		t.Errorf("only %d of %d fields: %v", r.NumValid(), len(a.Schema.Fields), r)
	}
	if f := r.Get("fill_pct").F; math.Abs(f-b.Fill(e.Sim)) > 3 {
		t.Errorf("fill_pct %v, true fill %v", f, b.Fill(e.Sim))
	}
	tests := []struct {
		sp    faults.Spec
		check func(r *devices.Reading, err error) bool
	}{
		{faults.Spec{Kind: faults.BinOverflow}, func(r *devices.Reading, err error) bool {
			return err == nil && r.Get("fill_pct").F == 100 && r.Get("lid_open").Bool()
		}},
		{faults.Spec{Kind: faults.BinFire}, func(r *devices.Reading, err error) bool { return err == nil && r.Get("temperature_c").F > 70 }},
		{faults.Spec{Kind: faults.BinKnockedOver}, func(r *devices.Reading, err error) bool { return err == nil && r.Get("tilt_deg").F > 80 }},
		{faults.Spec{Kind: faults.MalformedPayload}, func(r *devices.Reading, err error) bool {
			return err != nil && strings.Contains(err.Error(), "invalid JSON")
		}},
		{faults.Spec{Kind: faults.MalformedPayload, Params: map[string]any{"mode": "types"}}, func(r *devices.Reading, err error) bool {
			return err != nil && !r.Get("fill_pct").Valid() && !r.Get("lid_open").Valid() && r.Get("battery_pct").Valid()
		}},
	}
	for _, tt := range tests {
		set := faults.NewSet(func(string) (string, bool) { return faults.KindWasteBin, true })
		tt.sp.Asset = a.ID
		r, _, err := decode(effects(t, set, tt.sp))
		if !tt.check(r, err) {
			t.Errorf("%s: reading %v, err %v", tt.sp.Kind, r, err)
		}
	}
	_ = set
}
