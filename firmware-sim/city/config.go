// Package city generates a simulated city from a YAML config, deterministic
// from a seed (cabinets with their lamps on up to four circuits, gas
// pressure-regulating stations, waste bins, their positions, codes,
// attributes and transport addresses), and computes the devices' values as
// time passes: lamps switched at dusk and dawn with midnight dimming, gas flow
// following daily demand, bins filling through the day and emptied on
// collection rounds, with the effects of injected faults.
package city

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/citygw/citygw/devices/yamlconf"
)

// Config is a city config file.
type Config struct {
	Name     string            `yaml:"name,omitempty"`
	Seed     uint64            `yaml:"seed,omitempty"`
	Timezone string            `yaml:"timezone,omitempty"` // IANA zone of local time (dimming, demand, collections); default Asia/Shanghai
	Center   LatLon            `yaml:"center"`
	RadiusM  float64           `yaml:"radius_m,omitempty"` // assets are placed within this distance of the center; default 1500
	District string            `yaml:"district"`           // 6-digit GB/T 2260 code
	Grids    []string          `yaml:"grids,omitempty"`    // unit-grid codes; assets fall in west-to-east strips, one per grid
	Codes    Codes             `yaml:"codes,omitempty"`
	Speed    float64           `yaml:"speed,omitempty"`         // simulated seconds per wall second; default 1
	Start    string            `yaml:"start,omitempty"`         // simulated start time, RFC 3339 or "now" (default)
	History  yamlconf.Duration `yaml:"truth_history,omitempty"` // ground-truth history kept per asset; default 10m

	Streetlights Streetlights `yaml:"streetlights,omitempty"`
	Gas          Gas          `yaml:"gas,omitempty"`
	Bins         Bins         `yaml:"bins,omitempty"`
	Modbus       ModbusConf   `yaml:"modbus,omitempty"`
	MQTT         MQTTConf     `yaml:"mqtt,omitempty"`
}

// LatLon is a WGS84 position.
type LatLon struct {
	Lat float64 `yaml:"lat"`
	Lon float64 `yaml:"lon"`
}

// Codes are the 4-digit class+subclass parts of the 16-digit component codes.
type Codes struct {
	Streetlight string `yaml:"streetlight,omitempty"` // default 0118
	Cabinet     string `yaml:"cabinet,omitempty"`     // default 0117 (public facilities / lighting cabinet; set to your city's table)
	GasStation  string `yaml:"gas_station,omitempty"` // default 0135
	WasteBin    string `yaml:"waste_bin,omitempty"`   // default 0305
}

// Streetlights configures cabinets and their lamps.
type Streetlights struct {
	Cabinets           *int      `yaml:"cabinets,omitempty"`             // default 4
	LampsPerCabinet    *int      `yaml:"lamps_per_cabinet,omitempty"`    // default 12, at most 246 (units 2..247 behind the cabinet's port)
	CircuitsPerCabinet int       `yaml:"circuits_per_cabinet,omitempty"` // 1..4, default 4
	RatedPowerW        []float64 `yaml:"rated_power_w,omitempty"`        // lamp ratings picked per cabinet street; default 100, 150, 250
	SpacingM           float64   `yaml:"spacing_m,omitempty"`            // pole spacing; default 30
	OnBelowElevation   *float64  `yaml:"on_below_elevation,omitempty"`   // sun elevation (°) below which circuits switch on; default -0.8
	DimFrom            string    `yaml:"dim_from,omitempty"`             // local time dimming starts; default 00:00
	DimTo              string    `yaml:"dim_to,omitempty"`               // local time dimming ends; default 05:00
	DimLevel           int       `yaml:"dim_level,omitempty"`            // percent while dimmed; default 50
	Firmware           string    `yaml:"firmware,omitempty"`
}

// Gas configures the pressure-regulating stations.
type Gas struct {
	Stations   *int    `yaml:"stations,omitempty"`     // default 5
	PerPort    int     `yaml:"per_port,omitempty"`     // stations (unit ids 1..N) behind one Modbus port; default 3
	InletKPa   float64 `yaml:"inlet_kpa,omitempty"`    // nominal inlet pressure; default 300 (medium pressure A)
	OutletKPa  float64 `yaml:"outlet_kpa,omitempty"`   // nominal outlet pressure; default 3.0
	BandPct    float64 `yaml:"band_pct,omitempty"`     // outlet band ± percent of nominal; default 15
	MaxFlowM3H float64 `yaml:"max_flow_m3h,omitempty"` // flow at peak demand; default 800
}

// Bins configures the waste bins.
type Bins struct {
	Count       *int       `yaml:"count,omitempty"`             // default 100
	CapacityL   []float64  `yaml:"capacity_l,omitempty"`        // default 240, 660, 1100
	Collections []string   `yaml:"collections,omitempty"`       // local times of collection rounds; default 06:00, 14:00
	Routes      int        `yaml:"routes,omitempty"`            // routes per round, each 20 min after the previous; default 4
	FillPerHour [2]float64 `yaml:"fill_pct_per_hour,omitempty"` // daytime fill rate range; default 2..7 %/h
	Firmware    string     `yaml:"firmware,omitempty"`
}

// ModbusConf is where the Modbus servers listen.
type ModbusConf struct {
	Host             string            `yaml:"host,omitempty"`              // default 127.0.0.1
	BasePort         int               `yaml:"base_port,omitempty"`         // default 15020; ports are allocated consecutively
	ConverterTimeout yamlconf.Duration `yaml:"converter_timeout,omitempty"` // how long a serial converter waits for a silent unit before exception 0x0B; default 200ms
	PollInterval     yamlconf.Duration `yaml:"poll_interval,omitempty"`     // written to the inventory when set
	PollTimeout      yamlconf.Duration `yaml:"poll_timeout,omitempty"`      // written to the inventory when set
}

// MQTTConf is how bins publish.
type MQTTConf struct {
	Broker   string            `yaml:"broker,omitempty"`    // default tcp://127.0.0.1:1883
	ClientID string            `yaml:"client_id,omitempty"` // default firmware-sim
	Topic    string            `yaml:"topic,omitempty"`     // default city/bins/{asset}/telemetry
	Interval yamlconf.Duration `yaml:"interval,omitempty"`  // per bin; default 60s
	QoS      *int              `yaml:"qos,omitempty"`       // default 1
	Username string            `yaml:"username,omitempty"`
	Password string            `yaml:"password,omitempty"`
}

// LoadConfig reads and checks a city config file.
func LoadConfig(file string) (*Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading city config: %w", err)
	}
	return ParseConfig(file, data)
}

// ParseConfig decodes a city config and fills in defaults.
func ParseConfig(file string, data []byte) (*Config, error) {
	var c Config
	doc, err := yamlconf.Decode(file, data, &c)
	if err != nil {
		return nil, err
	}
	if errs := c.check(doc); len(errs) > 0 {
		return nil, errs
	}
	return &c, nil
}

func intp(v int) *int { return &v }

// Defaults fills unset fields with their defaults.
func (c *Config) Defaults() {
	if c.Name == "" {
		c.Name = "city"
	}
	if c.Timezone == "" {
		c.Timezone = "Asia/Shanghai"
	}
	if c.RadiusM == 0 {
		c.RadiusM = 1500
	}
	if c.Codes.Streetlight == "" {
		c.Codes.Streetlight = "0118"
	}
	if c.Codes.Cabinet == "" {
		c.Codes.Cabinet = "0117"
	}
	if c.Codes.GasStation == "" {
		c.Codes.GasStation = "0135"
	}
	if c.Codes.WasteBin == "" {
		c.Codes.WasteBin = "0305"
	}
	if c.Speed == 0 {
		c.Speed = 1
	}
	if c.History == 0 {
		c.History = yamlconf.Duration(10 * time.Minute)
	}
	s := &c.Streetlights
	if s.Cabinets == nil {
		s.Cabinets = intp(4)
	}
	if s.LampsPerCabinet == nil {
		s.LampsPerCabinet = intp(12)
	}
	if s.CircuitsPerCabinet == 0 {
		s.CircuitsPerCabinet = 4
	}
	if len(s.RatedPowerW) == 0 {
		s.RatedPowerW = []float64{100, 150, 250}
	}
	if s.SpacingM == 0 {
		s.SpacingM = 30
	}
	if s.OnBelowElevation == nil {
		v := -0.8
		s.OnBelowElevation = &v
	}
	if s.DimFrom == "" {
		s.DimFrom = "00:00"
	}
	if s.DimTo == "" {
		s.DimTo = "05:00"
	}
	if s.DimLevel == 0 {
		s.DimLevel = 50
	}
	if s.Firmware == "" {
		s.Firmware = "2.4.1"
	}
	g := &c.Gas
	if g.Stations == nil {
		g.Stations = intp(5)
	}
	if g.PerPort == 0 {
		g.PerPort = 3
	}
	if g.InletKPa == 0 {
		g.InletKPa = 300
	}
	if g.OutletKPa == 0 {
		g.OutletKPa = 3.0
	}
	if g.BandPct == 0 {
		g.BandPct = 15
	}
	if g.MaxFlowM3H == 0 {
		g.MaxFlowM3H = 800
	}
	b := &c.Bins
	if b.Count == nil {
		b.Count = intp(100)
	}
	if len(b.CapacityL) == 0 {
		b.CapacityL = []float64{240, 660, 1100}
	}
	if len(b.Collections) == 0 {
		b.Collections = []string{"06:00", "14:00"}
	}
	if b.Routes == 0 {
		b.Routes = 4
	}
	if b.FillPerHour == [2]float64{} {
		b.FillPerHour = [2]float64{2, 7}
	}
	if b.Firmware == "" {
		b.Firmware = "3.1.4"
	}
	m := &c.Modbus
	if m.Host == "" {
		m.Host = "127.0.0.1"
	}
	if m.BasePort == 0 {
		m.BasePort = 15020
	}
	if m.ConverterTimeout == 0 {
		m.ConverterTimeout = yamlconf.Duration(200 * time.Millisecond)
	}
	q := &c.MQTT
	if q.Broker == "" {
		q.Broker = "tcp://127.0.0.1:1883"
	}
	if q.ClientID == "" {
		q.ClientID = "firmware-sim"
	}
	if q.Topic == "" {
		q.Topic = "city/bins/{asset}/telemetry"
	}
	if q.Interval == 0 {
		q.Interval = yamlconf.Duration(60 * time.Second)
	}
	if q.QoS == nil {
		q.QoS = intp(1)
	}
}

// parseClock parses "HH:MM" into minutes after midnight.
func parseClock(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("want a local time HH:MM, got %q", s)
	}
	return t.Hour()*60 + t.Minute(), nil
}

func digits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// Check validates a config (after Defaults and any overrides).
func (c *Config) Check() error { return c.check(nil).Err() }

func (c *Config) check(doc *yamlconf.Doc) yamlconf.Errors {
	c.Defaults()
	var errs yamlconf.Errors
	add := func(path, field, format string, args ...any) {
		errs = append(errs, doc.Errorf(path, field, format, args...))
	}
	if _, err := time.LoadLocation(c.Timezone); err != nil {
		add("$.timezone", "timezone", "%v", err)
	}
	if c.Center.Lat < -90 || c.Center.Lat > 90 || c.Center.Lon < -180 || c.Center.Lon > 180 || c.Center.Lat == 0 && c.Center.Lon == 0 {
		add("$.center", "center", "want a WGS84 lat/lon of the city, got %v,%v", c.Center.Lat, c.Center.Lon)
	}
	if c.RadiusM < 0 || c.RadiusM > 50000 {
		add("$.radius_m", "radius_m", "want 0..50000 m, got %v", c.RadiusM)
	}
	if !digits(c.District, 6) {
		add("$.district", "district", "want a 6-digit district code, got %q", c.District)
	}
	for i, g := range c.Grids {
		if g == "" || strings.Trim(g, "0123456789") != "" {
			add(fmt.Sprintf("$.grids[%d]", i), "grids", "want a unit-grid code of digits, got %q", g)
		}
	}
	for _, cc := range []struct{ key, v string }{{"streetlight", c.Codes.Streetlight}, {"cabinet", c.Codes.Cabinet}, {"gas_station", c.Codes.GasStation}, {"waste_bin", c.Codes.WasteBin}} {
		if !digits(cc.v, 4) {
			add("$.codes."+cc.key, "codes."+cc.key, "want 4 digits (class and subclass), got %q", cc.v)
		}
	}
	if c.Speed <= 0 || c.Speed > 100000 {
		add("$.speed", "speed", "want a time acceleration factor in (0, 100000], got %v", c.Speed)
	}
	if c.Start != "" && c.Start != "now" {
		if _, err := time.Parse(time.RFC3339, c.Start); err != nil {
			add("$.start", "start", "want an RFC 3339 time such as 2026-01-15T17:30:00+08:00 or \"now\", got %q", c.Start)
		}
	}
	s := &c.Streetlights
	if *s.Cabinets < 0 || *s.Cabinets > 9999 {
		add("$.streetlights.cabinets", "streetlights.cabinets", "want 0..9999, got %d", *s.Cabinets)
	}
	if *s.LampsPerCabinet < 0 || *s.LampsPerCabinet > 246 {
		add("$.streetlights.lamps_per_cabinet", "streetlights.lamps_per_cabinet", "want 0..246 (unit ids 2..247 behind the cabinet's port), got %d", *s.LampsPerCabinet)
	}
	if s.CircuitsPerCabinet < 1 || s.CircuitsPerCabinet > 4 {
		add("$.streetlights.circuits_per_cabinet", "streetlights.circuits_per_cabinet", "want 1..4, got %d", s.CircuitsPerCabinet)
	}
	for i, p := range s.RatedPowerW {
		if p <= 0 || p > 1000 {
			add(fmt.Sprintf("$.streetlights.rated_power_w[%d]", i), "streetlights.rated_power_w", "want 0 < W <= 1000, got %v", p)
		}
	}
	for _, t := range []struct{ key, v string }{{"dim_from", s.DimFrom}, {"dim_to", s.DimTo}} {
		if _, err := parseClock(t.v); err != nil {
			add("$.streetlights."+t.key, "streetlights."+t.key, "%v", err)
		}
	}
	if s.DimLevel < 1 || s.DimLevel > 100 {
		add("$.streetlights.dim_level", "streetlights.dim_level", "want 1..100, got %d", s.DimLevel)
	}
	if len(s.Firmware) > 8 {
		add("$.streetlights.firmware", "streetlights.firmware", "at most 8 characters (4 registers), got %q", s.Firmware)
	}
	g := &c.Gas
	if *g.Stations < 0 || *g.Stations > 9999 {
		add("$.gas.stations", "gas.stations", "want 0..9999, got %d", *g.Stations)
	}
	if g.PerPort < 1 || g.PerPort > 247 {
		add("$.gas.per_port", "gas.per_port", "want 1..247, got %d", g.PerPort)
	}
	if g.InletKPa <= g.OutletKPa || g.OutletKPa <= 0 {
		add("$.gas", "gas", "want inlet_kpa > outlet_kpa > 0, got %v and %v", g.InletKPa, g.OutletKPa)
	}
	if g.BandPct <= 0 || g.BandPct >= 100 {
		add("$.gas.band_pct", "gas.band_pct", "want 0..100, got %v", g.BandPct)
	}
	b := &c.Bins
	if *b.Count < 0 || *b.Count > 10_000_000 {
		add("$.bins.count", "bins.count", "want 0..10000000, got %d", *b.Count)
	}
	for i, v := range b.CapacityL {
		if v <= 0 {
			add(fmt.Sprintf("$.bins.capacity_l[%d]", i), "bins.capacity_l", "want a positive volume, got %v", v)
		}
	}
	for i, t := range b.Collections {
		if _, err := parseClock(t); err != nil {
			add(fmt.Sprintf("$.bins.collections[%d]", i), "bins.collections", "%v", err)
		}
	}
	if b.Routes < 1 || b.Routes > 72 {
		add("$.bins.routes", "bins.routes", "want 1..72, got %d", b.Routes)
	}
	if b.FillPerHour[0] < 0 || b.FillPerHour[1] < b.FillPerHour[0] {
		add("$.bins.fill_pct_per_hour", "bins.fill_pct_per_hour", "want [min, max] with 0 <= min <= max, got %v", b.FillPerHour)
	}
	m := &c.Modbus
	if m.BasePort < 1 || m.BasePort > 65535 {
		add("$.modbus.base_port", "modbus.base_port", "want a TCP port, got %d", m.BasePort)
	}
	q := &c.MQTT
	if !strings.Contains(q.Topic, "{asset}") {
		add("$.mqtt.topic", "mqtt.topic", "the topic pattern must contain {asset}, got %q", q.Topic)
	}
	if *q.QoS < 0 || *q.QoS > 2 {
		add("$.mqtt.qos", "mqtt.qos", "want 0, 1 or 2, got %d", *q.QoS)
	}
	return errs
}

// Ports returns how many Modbus ports the city needs: one per cabinet and
// one per gas.per_port stations.
func (c *Config) Ports() int {
	n := *c.Streetlights.Cabinets
	if gs := *c.Gas.Stations; gs > 0 {
		n += (gs + c.Gas.PerPort - 1) / c.Gas.PerPort
	}
	return n
}
