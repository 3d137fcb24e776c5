// Package sim runs a generated city: once per wall-clock second it steps the
// device dynamics and atomically replaces each Modbus device's register
// image; it builds the bins' MQTT messages on demand; and it keeps the
// ground truth (what each device served or published, decoded with the same
// profile decoders the gateway uses) for the control API.
//
// Simulated time runs at speed × wall time from the configured start; the
// devices' clocks (device_time registers, payload ts) report wall time so
// that a gateway's plausibility checks accept them.
package sim

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/firmware-sim/city"
	"github.com/citygw/citygw/firmware-sim/faults"
	"github.com/citygw/citygw/firmware-sim/modbussrv"
)

// Options configure an engine.
type Options struct {
	Speed     float64   // simulated seconds per wall second
	SimStart  time.Time // simulated time at WallStart
	WallStart time.Time
	History   time.Duration // ground-truth history per asset
	// MessageInterval is the bins' publish interval, to size their history.
	MessageInterval time.Duration
	Log             *slog.Logger
}

// Engine runs a city.
type Engine struct {
	city      *city.City
	faults    *faults.Set
	log       *slog.Logger
	speed     float64
	simStart  time.Time
	wallStart time.Time

	lamps    []*Device // parallel to city.Lamps
	cabinets []*Device // parallel to city.Cabinets
	gas      []*Device // parallel to city.Gas
	byID     map[string]*Device
	bins     []*BinDevice
	binByID  map[string]int
	ports    map[string]map[uint8]modbussrv.Unit

	pub PublishCounter

	stMu       sync.Mutex // guards the tick bookkeeping below for readers
	ticks      int64
	lastSim    time.Time
	lastWall   time.Time
	encodeErrs int64
}

// New returns an engine for the city. Faults resolve against the city's
// assets and circuits.
func New(c *city.City, opts Options) *Engine {
	if opts.Speed <= 0 {
		opts.Speed = 1
	}
	if opts.WallStart.IsZero() {
		opts.WallStart = time.Now()
	}
	if opts.SimStart.IsZero() {
		opts.SimStart = opts.WallStart
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.MessageInterval <= 0 {
		opts.MessageInterval = time.Minute
	}
	e := &Engine{city: c, log: opts.Log, speed: opts.Speed, simStart: opts.SimStart, wallStart: opts.WallStart,
		byID: map[string]*Device{}, binByID: map[string]int{}, ports: map[string]map[uint8]modbussrv.Unit{}}
	e.faults = faults.NewSet(e.resolve)
	histTicks := int(opts.History / time.Second)
	add := func(a *devices.Asset) *Device {
		d := newDevice(a, histTicks)
		e.byID[a.ID] = d
		host := a.Modbus.Host
		if e.ports[host] == nil {
			e.ports[host] = map[uint8]modbussrv.Unit{}
		}
		e.ports[host][a.Modbus.Unit] = d
		return d
	}
	for _, cab := range c.Cabinets {
		e.cabinets = append(e.cabinets, add(cab.Asset))
	}
	for _, l := range c.Lamps {
		e.lamps = append(e.lamps, add(l.Asset))
	}
	for _, g := range c.Gas {
		e.gas = append(e.gas, add(g.Asset))
	}
	msgs := int(opts.History/opts.MessageInterval) + 2
	for i, b := range c.Bins {
		e.bins = append(e.bins, &BinDevice{Bin: b, Topic: b.Asset.MQTT.Topic, msgs: make([]message, msgs)})
		e.binByID[b.Asset.ID] = i
	}
	return e
}

func (e *Engine) resolve(id string) (string, bool) {
	if a := e.city.Inventory.Lookup(id); a != nil {
		return a.Kind, true
	}
	if _, ok := e.city.Circuits[id]; ok {
		return faults.KindCircuit, true
	}
	return "", false
}

// Faults returns the engine's fault set.
func (e *Engine) Faults() *faults.Set { return e.faults }

// City returns the simulated city.
func (e *Engine) City() *city.City { return e.city }

// Units returns the Modbus units behind each listen address.
func (e *Engine) Units() map[string]map[uint8]modbussrv.Unit { return e.ports }

// SimAt returns the simulated time at wall time w.
func (e *Engine) SimAt(w time.Time) time.Time {
	d := float64(w.Sub(e.wallStart)) * e.speed
	if d > math.MaxInt64 {
		d = math.MaxInt64
	}
	return e.simStart.Add(time.Duration(d))
}

// Tick steps every Modbus device to wall time w (a whole second: the
// devices' clock) and publishes their new images. Ticks must not run
// concurrently.
func (e *Engine) Tick(w time.Time) {
	sim := e.SimAt(w)
	e.stMu.Lock()
	dt := 0.0
	if !e.lastSim.IsZero() {
		dt = math.Max(0, sim.Sub(e.lastSim).Seconds())
	}
	e.lastSim, e.lastWall = sim, w
	e.ticks++
	e.stMu.Unlock()
	e.faults.Expire(w)
	env := e.city.Env(sim, w, dt, sim.Sub(e.simStart).Seconds(), w.Sub(e.wallStart).Seconds())
	unix := w.Unix()
	c := e.city
	for _, cab := range c.Cabinets {
		cab.PreStep(&env)
	}
	for i, l := range c.Lamps {
		d := e.lamps[i]
		eff := e.faults.Effects(l.Asset.ID, w)
		eff.Merge(e.faults.Effects(l.CircuitID, w))
		l.Step(&env, &eff, d.vals)
		e.commit(d, unix, &eff)
	}
	var circ [4]faults.Effects
	for i, cab := range c.Cabinets {
		d := e.cabinets[i]
		eff := e.faults.Effects(cab.Asset.ID, w)
		for n := 1; n <= 4; n++ {
			circ[n-1] = e.faults.Effects(city.CircuitID(cab.Asset.ID, n), w)
		}
		cab.Step(&env, &eff, &circ, d.vals)
		e.commit(d, unix, &eff)
	}
	for i, g := range c.Gas {
		d := e.gas[i]
		eff := e.faults.Effects(g.Asset.ID, w)
		g.Step(&env, &eff, d.vals)
		e.commit(d, unix, &eff)
	}
}

func (e *Engine) commit(d *Device, unix int64, eff *faults.Effects) {
	if errs := d.commit(unix, eff); len(errs) > 0 {
		e.stMu.Lock()
		e.encodeErrs += int64(len(errs))
		e.stMu.Unlock()
		e.log.Warn("encoding registers failed", "asset", d.Asset.ID, "err", errs[0])
	}
}

// ApplyFaults makes fault changes to how devices answer take effect now
// rather than at the next tick (value changes wait for the tick).
func (e *Engine) ApplyFaults(now time.Time) {
	for _, d := range e.byID {
		eff := e.faults.Effects(d.Asset.ID, now)
		if c := d.Asset.Attr("circuit"); c != "" {
			eff.Merge(e.faults.Effects(c, now))
		}
		d.setReply(replyFor(&eff))
	}
}

// Run ticks at every wall-clock second until ctx ends. It ticks once at
// once, so the devices have values before the servers start.
func (e *Engine) Run(ctx context.Context) {
	for {
		now := time.Now()
		next := now.Truncate(time.Second).Add(time.Second)
		t := time.NewTimer(next.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		e.Tick(next)
	}
}

// Start ticks once for the current second; call it before serving.
func (e *Engine) Start() { e.Tick(time.Now().Truncate(time.Second)) }

// Describe is a one-line summary of the city.
func (e *Engine) Describe() string {
	return fmt.Sprintf("%d modbus devices on %d ports, %d mqtt assets", len(e.byID), len(e.ports), len(e.bins))
}
