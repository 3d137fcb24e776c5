package city

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/firmware-sim/faults"
	"github.com/citygw/citygw/firmware-sim/sun"
)

// Env is the moment a step computes values for.
type Env struct {
	Sim   time.Time // simulated time: drives the sun, schedules and demand
	Wall  time.Time // the device clock (device_time, payload ts): real time
	DtSim float64   // simulated seconds since the previous step (0 on the first)
	Since float64   // simulated seconds since the simulation started
	Up    float64   // wall seconds since the simulation started

	localMin float64 // minutes after local midnight (simulated)
	ambient  float64 // outdoor temperature, °C
}

// Env returns the environment for simulated time sim and device time wall.
func (c *City) Env(sim, wall time.Time, dtSim, since, up float64) Env {
	l := sim.In(c.Loc)
	e := Env{Sim: sim, Wall: wall, DtSim: dtSim, Since: since, Up: up}
	e.localMin = float64(l.Hour()*60+l.Minute()) + float64(l.Second())/60
	h := e.localMin / 60
	doy := float64(l.YearDay())
	seasonal := 16.5 - 12.5*math.Cos(2*math.Pi*(doy-20)/365)
	if c.Config.Center.Lat < 0 {
		seasonal = 16.5 + 12.5*math.Cos(2*math.Pi*(doy-20)/365)
	}
	e.ambient = seasonal + 4*math.Sin(2*math.Pi*(h-9)/24)
	return e
}

// LocalHour returns the simulated local time of day in hours.
func (e *Env) LocalHour() float64 { return e.localMin / 60 }

// Ambient returns the outdoor temperature in °C.
func (e *Env) Ambient() float64 { return e.ambient }

// fieldIndex resolves profile field names to their position in Profile.Fields.
type fieldIndex struct {
	p    *devices.Profile
	errs []string
}

func (fi *fieldIndex) at(name string) int {
	for i := range fi.p.Fields {
		if fi.p.Fields[i].Name == name {
			return i
		}
	}
	fi.errs = append(fi.errs, fi.p.Model+"."+name)
	return 0
}

type lampFields struct {
	relay, tiltAlarm, dim, fw, volt, cur, pow, energy, hours, lux, tilt, fault, temp, pf, devTime int
}

type cabinetFields struct {
	door, mains, va, vb, vc, ia, ib, ic, leak, energy, freq, devTime int
	cA, cOn                                                          [4]int
}

type gasFields struct {
	door, inlet, outlet, flow, temp, methane, volume, valve, mains, battery, batteryV, alarm, uptime, devTime int
}

func (c *City) bindModels() error {
	var missing []string
	bind := func(model string) *fieldIndex { return &fieldIndex{p: c.Catalog.Profile(model)} }

	li := bind(ModelStreetlight)
	lf := lampFields{li.at("relay_on"), li.at("tilt_alarm"), li.at("dim_level"), li.at("firmware"), li.at("voltage_v"),
		li.at("current_a"), li.at("power_w"), li.at("energy_kwh"), li.at("lamp_hours"), li.at("ambient_lux"),
		li.at("tilt_deg"), li.at("fault"), li.at("temperature_c"), li.at("power_factor"), li.at("device_time")}
	missing = append(missing, li.errs...)

	ci := bind(ModelCabinet)
	cf := cabinetFields{door: ci.at("door_open"), mains: ci.at("mains_ok"), va: ci.at("va_v"), vb: ci.at("vb_v"), vc: ci.at("vc_v"),
		ia: ci.at("ia_a"), ib: ci.at("ib_a"), ic: ci.at("ic_a"), leak: ci.at("leakage_ma"), energy: ci.at("energy_kwh"),
		freq: ci.at("frequency_hz"), devTime: ci.at("device_time")}
	for n := 0; n < 4; n++ {
		cf.cA[n] = ci.at("c" + strconv.Itoa(n+1) + "_a")
		cf.cOn[n] = ci.at("c" + strconv.Itoa(n+1) + "_on")
	}
	missing = append(missing, ci.errs...)

	gi := bind(ModelGasStation)
	gf := gasFields{gi.at("door_open"), gi.at("inlet_pressure_kpa"), gi.at("outlet_pressure_kpa"), gi.at("flow_m3h"),
		gi.at("temperature_c"), gi.at("methane_lel_pct"), gi.at("volume_m3"), gi.at("valve_closed"), gi.at("mains_ok"),
		gi.at("on_battery"), gi.at("battery_v"), gi.at("alarm"), gi.at("uptime_s"), gi.at("device_time")}
	missing = append(missing, gi.errs...)
	if len(missing) > 0 {
		return fmt.Errorf("the shipped profiles lack fields the simulator sets: %v", missing)
	}
	on := *c.Config.Streetlights.OnBelowElevation
	for _, cab := range c.Cabinets {
		cab.f, cab.rng, cab.onBelow = &cf, rand.New(rand.NewPCG(cab.seed, 1)), on
	}
	for _, l := range c.Lamps {
		l.f, l.rng, l.city = &lf, rand.New(rand.NewPCG(l.seed, 2)), c
	}
	for _, g := range c.Gas {
		g.f, g.rng = &gf, rand.New(rand.NewPCG(g.seed, 3))
	}
	for _, b := range c.Bins {
		b.rng, b.city = rand.New(rand.NewPCG(b.seed, 4)), c
	}
	return nil
}

// Cabinet is a streetlight cabinet controller and its circuits.
type Cabinet struct {
	Asset     *devices.Asset
	NCircuits int
	Lamps     [4][]*Lamp // per circuit

	f          *cabinetFields
	rng        *rand.Rand
	seed       uint64
	onBelow    float64
	voltOffset float64
	leakBase   float64
	energy     float64 // kWh

	contactor [4]bool
	phaseV    [3]float64
}

// phase returns the supply phase (0..2) of circuit n (1..4).
func phase(n int) int { return (n - 1) % 3 }

// Dark reports whether the cabinet's astronomical clock has its circuits on.
func (c *Cabinet) Dark(e *Env) bool {
	return sun.Elevation(e.Sim, c.Asset.Lat, c.Asset.Lon) < c.onBelow
}

// PreStep decides the contactors and the supply voltages for the step; it
// runs before the cabinet's lamps step.
func (c *Cabinet) PreStep(e *Env) {
	dark := c.Dark(e)
	for n := range c.contactor {
		c.contactor[n] = dark && n < c.NCircuits
	}
	load := 0.0
	if dark {
		load = 2.5 // voltage sag under the lighting load
	}
	for p := range c.phaseV {
		c.phaseV[p] = 230 + c.voltOffset - load + 0.6*c.rng.NormFloat64()
	}
}

// Contactor reports whether circuit n (1..4) is switched on.
func (c *Cabinet) Contactor(n int) bool { return c.contactor[n-1] }

// Step computes the cabinet's values after its lamps stepped. circuitEff are
// the faults on its circuits (index n-1).
func (c *Cabinet) Step(e *Env, eff *faults.Effects, circuitEff *[4]faults.Effects, v []devices.Value) {
	f := c.f
	var circuitA [4]float64
	var phaseA [3]float64
	total := 0.0
	for n := 0; n < c.NCircuits; n++ {
		if circuitEff[n].Has(faults.CircuitDead) {
			continue
		}
		for _, l := range c.Lamps[n] {
			circuitA[n] += l.current
			total += l.power
		}
		phaseA[phase(n+1)] += circuitA[n]
	}
	for p := range phaseA {
		phaseA[p] += 0.15 + 0.01*c.rng.NormFloat64() // the controller and meters
		if phaseA[p] < 0 {
			phaseA[p] = 0
		}
	}
	c.energy += (total + 100) * e.DtSim / 3.6e6
	leak := c.leakBase + 0.3*c.rng.NormFloat64()
	if lf := eff.Get(faults.Leakage); lf != nil {
		leak = lf.Number("ma", 45) + 0.5*c.rng.NormFloat64()
	}
	v[f.door] = devices.BoolValue(false)
	v[f.mains] = devices.BoolValue(true)
	v[f.va] = devices.FloatValue(c.phaseV[0])
	v[f.vb] = devices.FloatValue(c.phaseV[1])
	v[f.vc] = devices.FloatValue(c.phaseV[2])
	v[f.ia] = devices.FloatValue(phaseA[0])
	v[f.ib] = devices.FloatValue(phaseA[1])
	v[f.ic] = devices.FloatValue(phaseA[2])
	v[f.leak] = devices.FloatValue(math.Max(0, leak))
	v[f.energy] = devices.FloatValue(c.energy)
	v[f.freq] = devices.FloatValue(50 + 0.02*c.rng.NormFloat64())
	for n := 0; n < 4; n++ {
		v[f.cA[n]] = devices.FloatValue(circuitA[n])
		v[f.cOn[n]] = devices.BoolValue(c.contactor[n])
	}
	v[f.devTime] = devices.IntValue(e.Wall.Unix())
}

// Lamp is a single-lamp controller on a pole.
type Lamp struct {
	Asset     *devices.Asset
	Cabinet   *Cabinet
	Circuit   int    // 1..4
	CircuitID string // CAB-001-C2
	RatedW    float64

	f         *lampFields
	rng       *rand.Rand
	city      *City
	seed      uint64
	hours     float64
	energyKWh float64
	drop      float64 // line voltage drop to this pole
	tiltBase  float64

	current, power float64 // this step's, for the cabinet
	relay          bool
}

// Relay reports the lamp relay state of the last step.
func (l *Lamp) Relay() bool { return l.relay }

// Dimmed reports whether simulated local time is in the dimming window.
func (c *City) Dimmed(e *Env) bool {
	m := int(e.localMin)
	if c.dimFrom <= c.dimTo {
		return m >= c.dimFrom && m < c.dimTo
	}
	return m >= c.dimFrom || m < c.dimTo
}

// Step computes the lamp's values. eff holds the lamp's faults merged with
// its circuit's.
func (l *Lamp) Step(e *Env, eff *faults.Effects, v []devices.Value) {
	f := l.f
	el := sun.Elevation(e.Sim, l.Asset.Lat, l.Asset.Lon)
	lux := sun.AmbientLux(el) * (1 + 0.03*l.rng.NormFloat64())
	relay := l.Cabinet.Contactor(l.Circuit)
	dim := 100
	if l.city.Dimmed(e) {
		dim = l.city.Config.Streetlights.DimLevel
	}
	if eff.Has(faults.DayBurning) && !relay {
		relay, dim = true, 100
	}
	if !relay {
		dim = 0
	}
	volts := l.Cabinet.phaseV[phase(l.Circuit)] - l.drop + 0.3*l.rng.NormFloat64()
	lampOut := eff.Has(faults.LampOut)
	dead := eff.Has(faults.CircuitDead)
	var power, current, pf float64
	if relay && !lampOut && !dead {
		power = l.RatedW * float64(dim) / 100 * (1 + 0.01*l.rng.NormFloat64())
		pf = math.Min(0.99, 0.95+0.01*l.rng.NormFloat64())
		current = power / (volts * pf)
		l.hours += e.DtSim / 3600
		l.energyKWh += power * e.DtSim / 3.6e6
	}
	l.current, l.power, l.relay = current, power, relay
	fault := "ok"
	if lampOut {
		fault = "lamp_failure"
	}
	temp := e.ambient + power/25 + 0.2*l.rng.NormFloat64()
	v[f.relay] = devices.BoolValue(relay)
	v[f.tiltAlarm] = devices.BoolValue(false)
	v[f.dim] = devices.IntValue(int64(dim))
	v[f.fw] = devices.StringValue(l.city.Config.Streetlights.Firmware)
	v[f.volt] = devices.FloatValue(volts)
	v[f.cur] = devices.FloatValue(current)
	v[f.pow] = devices.FloatValue(power)
	v[f.energy] = devices.FloatValue(l.energyKWh)
	v[f.hours] = devices.IntValue(int64(l.hours))
	v[f.lux] = devices.IntValue(int64(math.Min(65535, math.Round(lux))))
	v[f.tilt] = devices.FloatValue(l.tiltBase + 0.05*l.rng.NormFloat64())
	v[f.fault] = devices.StringValue(fault)
	v[f.temp] = devices.FloatValue(temp)
	v[f.pf] = devices.FloatValue(pf)
	v[f.devTime] = devices.IntValue(e.Wall.Unix())
}

// GasStation is a pressure-regulating station's RTU.
type GasStation struct {
	Asset      *devices.Asset
	NominalKPa float64
	MinKPa     float64
	MaxKPa     float64
	InletKPa   float64
	MaxFlow    float64 // m3/h at demand 1

	f       *gasFields
	rng     *rand.Rand
	seed    uint64
	volume  float64
	bootAgo time.Duration
}

// Demand is the relative gas demand (about 0.15 at night to about 1 at the
// evening peak) at a local time of day in hours: morning and evening peaks
// around 07:30 and 18:45 and a smaller one at noon.
func Demand(hour float64) float64 {
	g := func(mu, sigma float64) float64 {
		d := math.Abs(hour - mu)
		if d > 12 {
			d = 24 - d
		}
		return math.Exp(-d * d / (2 * sigma * sigma))
	}
	return 0.15 + 0.6*g(7.5, 1.3) + 0.3*g(12, 1.2) + 0.75*g(18.75, 1.6)
}

// Alarm thresholds of the RTU.
const gasAlarmLEL = 20.0

// Step computes the station's values.
func (g *GasStation) Step(e *Env, eff *faults.Effects, v []devices.Value) {
	f := g.f
	d := Demand(e.LocalHour())
	flow := g.MaxFlow * d * (1 + 0.03*g.rng.NormFloat64())
	if flow < 0 {
		flow = 0
	}
	inlet := g.InletKPa - 20*d + 1.5*g.rng.NormFloat64()
	// The regulator holds the outlet with a little droop under load.
	outlet := g.NominalKPa*(1-0.03*d) + 0.01*g.NominalKPa*g.rng.NormFloat64()
	alarm := "none"
	if pf := eff.Get(faults.GasPressureLow); pf != nil {
		outlet = pf.Number("kpa", 0.6*g.NominalKPa) + 0.01*g.NominalKPa*g.rng.NormFloat64()
		alarm = "pressure_low"
	}
	if pf := eff.Get(faults.GasPressureHigh); pf != nil {
		outlet = pf.Number("kpa", 1.4*g.NominalKPa) + 0.01*g.NominalKPa*g.rng.NormFloat64()
		alarm = "pressure_high"
	}
	methane := math.Max(0, 0.2+0.15*g.rng.NormFloat64())
	if lf := eff.Get(faults.GasLeak); lf != nil {
		rise := lf.Number("rate_per_min", 10) * lf.Age(e.Wall).Minutes()
		methane = math.Min(lf.Number("max", 60), methane+math.Max(0, rise))
		if methane >= gasAlarmLEL {
			alarm = "gas_detected"
		}
	}
	methane = math.Min(100, methane)
	g.volume += flow * e.DtSim / 3600
	v[f.door] = devices.BoolValue(false)
	v[f.inlet] = devices.FloatValue(inlet)
	v[f.outlet] = devices.FloatValue(outlet)
	v[f.flow] = devices.FloatValue(flow)
	v[f.temp] = devices.FloatValue(e.ambient + 2 + 0.2*g.rng.NormFloat64())
	v[f.methane] = devices.FloatValue(methane)
	v[f.volume] = devices.FloatValue(g.volume)
	v[f.valve] = devices.BoolValue(false)
	v[f.mains] = devices.BoolValue(true)
	v[f.battery] = devices.BoolValue(false)
	v[f.batteryV] = devices.FloatValue(13.5 + 0.02*g.rng.NormFloat64())
	v[f.alarm] = devices.StringValue(alarm)
	v[f.uptime] = devices.IntValue(int64(g.bootAgo.Seconds() + e.Up))
	v[f.devTime] = devices.IntValue(e.Wall.Unix())
}
