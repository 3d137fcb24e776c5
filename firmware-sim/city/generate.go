package city

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/citygw/citygw/devices"
)

// Profile models used for each kind.
const (
	ModelStreetlight = "citylight-slc200"
	ModelCabinet     = "citylight-ccu300"
	ModelGasStation  = "gasreg-rtu500"
	ModelWasteBin    = "binsense-ws3"
)

// City is a generated city: its inventory and the simulated devices.
type City struct {
	Config    *Config
	Loc       *time.Location
	Catalog   *devices.Catalog
	Inventory *devices.Inventory

	Cabinets []*Cabinet
	Lamps    []*Lamp
	Gas      []*GasStation
	Bins     []*Bin
	// Circuits maps a circuit id (CAB-001-C2) to its cabinet and number.
	Circuits map[string]CircuitRef
	// Ports lists the Modbus listen addresses in order; the assets' inventory
	// addresses point at them.
	Ports []string

	dimFrom, dimTo int   // minutes after local midnight
	collections    []int // minutes after local midnight, sorted
}

// CircuitRef names one lighting circuit of a cabinet.
type CircuitRef struct {
	Cabinet *Cabinet
	N       int // 1..4
}

// Generate builds the city described by c (already checked), deterministic
// from c.Seed.
func Generate(c *Config, cat *devices.Catalog) (*City, error) {
	if err := c.Check(); err != nil {
		return nil, err
	}
	for _, m := range []string{ModelStreetlight, ModelCabinet, ModelGasStation, ModelWasteBin} {
		if cat.Profile(m) == nil {
			return nil, fmt.Errorf("profile %s missing from the catalog", m)
		}
	}
	if last := c.Modbus.BasePort + c.Ports() - 1; last > 65535 {
		return nil, fmt.Errorf("modbus ports %d..%d exceed 65535", c.Modbus.BasePort, last)
	}
	loc, err := time.LoadLocation(c.Timezone)
	if err != nil {
		return nil, fmt.Errorf("loading time zone: %w", err)
	}
	ct := &City{Config: c, Loc: loc, Catalog: cat, Circuits: map[string]CircuitRef{}}
	ct.dimFrom, _ = parseClock(c.Streetlights.DimFrom)
	ct.dimTo, _ = parseClock(c.Streetlights.DimTo)
	for _, s := range c.Bins.Collections {
		m, _ := parseClock(s)
		ct.collections = append(ct.collections, m)
	}
	slices.Sort(ct.collections)

	g := &generator{c: c, ct: ct, cat: cat, rng: rand.New(rand.NewPCG(c.Seed, 0x6369747967770001))}
	g.streetlights()
	g.gas()
	g.bins()
	inv, err := devices.NewInventory(cat, g.assets)
	if err != nil {
		return nil, fmt.Errorf("generated inventory is invalid: %w", err)
	}
	ct.Inventory = inv
	if err := ct.bindModels(); err != nil {
		return nil, err
	}
	return ct, nil
}

type generator struct {
	c      *Config
	ct     *City
	cat    *devices.Catalog
	rng    *rand.Rand
	assets []*devices.Asset
	port   int
	serial map[string]int
}

// width is the number of digits ids of n items get (at least min).
func width(n, min int) int {
	w := len(strconv.Itoa(n))
	if w < min {
		return min
	}
	return w
}

// offset returns the position d metres from lat/lon at bearing b (radians from north).
func offset(lat, lon, d, b float64) (float64, float64) {
	const r = 6371000.0
	dLat := d * math.Cos(b) / r
	dLon := d * math.Sin(b) / (r * math.Cos(lat*math.Pi/180))
	return round6(lat + dLat*180/math.Pi), round6(lon + dLon*180/math.Pi)
}

func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }

// randomPoint returns a point uniformly within the city's radius.
func (g *generator) randomPoint() (float64, float64) {
	d := g.c.RadiusM * math.Sqrt(g.rng.Float64())
	return offset(g.c.Center.Lat, g.c.Center.Lon, d, g.rng.Float64()*2*math.Pi)
}

// grid returns the unit-grid code of a position: the city is cut into
// west-to-east strips, one per configured grid.
func (g *generator) grid(lon float64) string {
	n := len(g.c.Grids)
	if n == 0 {
		return ""
	}
	_, westLon := offset(g.c.Center.Lat, g.c.Center.Lon, g.c.RadiusM, -math.Pi/2)
	span := 2 * (g.c.Center.Lon - westLon)
	i := int(float64(n) * (lon - westLon) / span)
	return g.c.Grids[max(0, min(n-1, i))]
}

func (g *generator) code(class string) string {
	if g.serial == nil {
		g.serial = map[string]int{}
	}
	g.serial[class]++
	return fmt.Sprintf("%s%s%06d", g.c.District, class, g.serial[class])
}

func (g *generator) nextPort() string {
	p := g.c.Modbus.BasePort + g.port
	g.port++
	addr := net.JoinHostPort(g.c.Modbus.Host, strconv.Itoa(p))
	g.ct.Ports = append(g.ct.Ports, addr)
	return addr
}

func (g *generator) modbusAddr(host string, unit int) *devices.ModbusAddr {
	return &devices.ModbusAddr{Host: host, Unit: uint8(unit), Interval: g.c.Modbus.PollInterval, Timeout: g.c.Modbus.PollTimeout}
}

func (g *generator) asset(id, model, code string, lat, lon float64) *devices.Asset {
	a := &devices.Asset{ID: id, Model: model, Lat: lat, Lon: lon, District: g.c.District, Grid: g.grid(lon), Code: code, Attrs: map[string]any{}}
	g.assets = append(g.assets, a)
	return a
}

func (g *generator) streetlights() {
	s := &g.c.Streetlights
	nc, nl := *s.Cabinets, *s.LampsPerCabinet
	cw, lw := width(nc, 3), width(nl, 2)
	for i := 1; i <= nc; i++ {
		host := g.nextPort()
		lat, lon := g.randomPoint()
		id := fmt.Sprintf("CAB-%0*d", cw, i)
		a := g.asset(id, ModelCabinet, g.code(g.c.Codes.Cabinet), lat, lon)
		a.Modbus = g.modbusAddr(host, 1)
		circuits := min(s.CircuitsPerCabinet, max(1, nl))
		a.Attrs["circuits"] = float64(circuits)
		cab := &Cabinet{Asset: a, NCircuits: circuits, seed: g.rng.Uint64(),
			voltOffset: g.rng.NormFloat64() * 2, leakBase: 2 + 4*g.rng.Float64(),
			energy: 5000 + 50000*g.rng.Float64()}
		g.ct.Cabinets = append(g.ct.Cabinets, cab)
		for n := 1; n <= circuits; n++ {
			g.ct.Circuits[CircuitID(id, n)] = CircuitRef{Cabinet: cab, N: n}
		}
		// Lamps stand along a street leaving the cabinet; each circuit feeds
		// a contiguous stretch of it.
		bearing := g.rng.Float64() * 2 * math.Pi
		rated := s.RatedPowerW[g.rng.IntN(len(s.RatedPowerW))]
		for j := 1; j <= nl; j++ {
			llat, llon := offset(lat, lon, s.SpacingM*float64(j), bearing)
			lid := fmt.Sprintf("SL-%0*d-%0*d", cw, i, lw, j)
			la := g.asset(lid, ModelStreetlight, g.code(g.c.Codes.Streetlight), llat, llon)
			la.Modbus = g.modbusAddr(host, 1+j)
			circuit := 1 + (j-1)*circuits/nl
			la.Attrs["rated_power_w"] = rated
			la.Attrs["circuit"] = CircuitID(id, circuit)
			la.Attrs["cabinet"] = id
			hours := 2000 + 18000*g.rng.Float64()
			lamp := &Lamp{Asset: la, Cabinet: cab, Circuit: circuit, CircuitID: CircuitID(id, circuit), RatedW: rated,
				seed: g.rng.Uint64(), hours: hours, energyKWh: hours * rated * 0.75 / 1000,
				drop: 0.05 * float64(j), tiltBase: 0.2 + 1.3*g.rng.Float64()}
			cab.Lamps[circuit-1] = append(cab.Lamps[circuit-1], lamp)
			g.ct.Lamps = append(g.ct.Lamps, lamp)
		}
	}
}

// CircuitID names circuit n of a cabinet, for example CAB-001-C2.
func CircuitID(cabinet string, n int) string { return fmt.Sprintf("%s-C%d", cabinet, n) }

func (g *generator) gas() {
	gc := &g.c.Gas
	n := *gc.Stations
	w := width(n, 3)
	var host string
	for i := 1; i <= n; i++ {
		unit := (i-1)%gc.PerPort + 1
		if unit == 1 {
			host = g.nextPort()
		}
		lat, lon := g.randomPoint()
		id := fmt.Sprintf("GAS-%0*d", w, i)
		a := g.asset(id, ModelGasStation, g.code(g.c.Codes.GasStation), lat, lon)
		a.Modbus = g.modbusAddr(host, unit)
		band := gc.OutletKPa * gc.BandPct / 100
		a.Attrs["nominal_kpa"] = gc.OutletKPa
		a.Attrs["pressure_min_kpa"] = round6(gc.OutletKPa - band)
		a.Attrs["pressure_max_kpa"] = round6(gc.OutletKPa + band)
		a.Attrs["inlet_nominal_kpa"] = gc.InletKPa
		st := &GasStation{Asset: a, seed: g.rng.Uint64(), NominalKPa: gc.OutletKPa, MinKPa: gc.OutletKPa - band, MaxKPa: gc.OutletKPa + band,
			InletKPa: gc.InletKPa, MaxFlow: gc.MaxFlowM3H * (0.5 + 0.7*g.rng.Float64()),
			volume: 1e5 + 9e5*g.rng.Float64(), bootAgo: time.Duration(1+g.rng.IntN(200)) * 24 * time.Hour}
		g.ct.Gas = append(g.ct.Gas, st)
	}
}

func (g *generator) bins() {
	bc := &g.c.Bins
	n := *bc.Count
	w := width(n, 4)
	for i := 1; i <= n; i++ {
		lat, lon := g.randomPoint()
		id := fmt.Sprintf("BIN-%0*d", w, i)
		a := g.asset(id, ModelWasteBin, g.code(g.c.Codes.WasteBin), lat, lon)
		a.MQTT = &devices.MQTTAddr{Topic: strings.ReplaceAll(g.c.MQTT.Topic, "{asset}", id)}
		capL := bc.CapacityL[g.rng.IntN(len(bc.CapacityL))]
		route := g.rng.IntN(bc.Routes)
		a.Attrs["capacity_l"] = capL
		a.Attrs["route"] = fmt.Sprintf("R%d", route+1)
		rate := bc.FillPerHour[0] + (bc.FillPerHour[1]-bc.FillPerHour[0])*g.rng.Float64()
		if g.rng.IntN(10) == 0 {
			rate *= 2 // a busy corner
		}
		b := &Bin{Asset: a, CapacityL: capL, DepthCm: binDepth(capL), Route: route, RatePerHour: rate,
			seed: g.rng.Uint64(), battery0: 55 + 45*g.rng.Float64(), rssi: -75 - 37*g.rng.Float64(),
			snr: 2 + 9*g.rng.Float64(), tiltBase: 0.5 + 3*g.rng.Float64()}
		g.ct.Bins = append(g.ct.Bins, b)
	}
}

// binDepth is the sensor-to-bottom distance of a bin of the capacity.
func binDepth(capL float64) float64 {
	switch {
	case capL <= 120:
		return 80
	case capL <= 240:
		return 95
	case capL <= 660:
		return 110
	}
	return 125
}

// SetPortAddrs moves the Modbus ports to addrs (one per c.Ports, in order),
// for example to ports the operating system chose; the assets' inventory
// addresses follow.
func (c *City) SetPortAddrs(addrs []string) error {
	if len(addrs) != len(c.Ports) {
		return fmt.Errorf("city has %d Modbus ports, got %d addresses", len(c.Ports), len(addrs))
	}
	m := make(map[string]string, len(addrs))
	for i, old := range c.Ports {
		m[old] = addrs[i]
	}
	for _, a := range c.Inventory.Assets {
		if a.Modbus != nil {
			a.Modbus.Host = m[a.Modbus.Host]
		}
	}
	c.Ports = append([]string(nil), addrs...)
	return nil
}
