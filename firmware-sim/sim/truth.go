package sim

import (
	"fmt"
	"sort"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/firmware-sim/faults"
)

// PublishCounter is the MQTT publisher's per-bin accounting (bin i as in
// the engine's Message).
type PublishCounter interface {
	Counts(i int) (attempted, acked, failed int64)
	Connected() bool
}

// SetPublisher attaches the MQTT publisher for the stats.
func (e *Engine) SetPublisher(p PublishCounter) { e.pub = p }

// Sample is what one device served (Modbus: one tick's image) or published
// (MQTT: one message), decoded with the profile.
type Sample struct {
	Asset      string            `json:"asset,omitempty"`
	Kind       string            `json:"kind,omitempty"`
	DeviceTime time.Time         `json:"device_time"`
	UnixMs     int64             `json:"unix_ms"`
	Answering  bool              `json:"answering"` // Modbus: the device answered reads; MQTT: the message was published
	Values     map[string]any    `json:"values"`
	Errors     map[string]string `json:"errors,omitempty"`  // fields that did not decode
	Payload    string            `json:"payload,omitempty"` // MQTT: the raw payload, when it did not decode cleanly
}

// Truth is the ground truth at a moment.
type Truth struct {
	WallTime time.Time `json:"wall_time"`
	SimTime  time.Time `json:"sim_time"`
	Speed    float64   `json:"speed"`
	Assets   []Sample  `json:"assets"`
}

// Truth returns the current sample of every asset (of one asset or kind
// when given). Bins that have not published yet are left out.
func (e *Engine) Truth(asset, kind string) (*Truth, error) {
	now := time.Now()
	t := &Truth{WallTime: now, SimTime: e.SimAt(now), Speed: e.speed, Assets: []Sample{}}
	if asset != "" && e.city.Inventory.Lookup(asset) == nil {
		return nil, fmt.Errorf("no asset %q", asset)
	}
	for _, a := range e.city.Inventory.Assets {
		if asset != "" && a.ID != asset || kind != "" && a.Kind != kind {
			continue
		}
		if d := e.byID[a.ID]; d != nil {
			d.mu.RLock()
			s := d.sample(d.devTime, !d.reply.Silent && d.reply.Exception == 0, d.words)
			d.mu.RUnlock()
			t.Assets = append(t.Assets, s)
			continue
		}
		if i, ok := e.binByID[a.ID]; ok {
			b := e.bins[i]
			var last *Sample
			b.each(func(m *message) {
				s := decodeMessage(a, m)
				last = &s
			})
			if last != nil {
				t.Assets = append(t.Assets, *last)
			}
		}
	}
	return t, nil
}

func (d *Device) sample(unix int64, answering bool, words []uint16) Sample {
	vals, errs := d.decode(words)
	return Sample{Asset: d.Asset.ID, Kind: d.Asset.Kind, DeviceTime: time.Unix(unix, 0).UTC(), UnixMs: unix * 1000,
		Answering: answering, Values: vals, Errors: errs}
}

func decodeMessage(a *devices.Asset, m *message) Sample {
	s := Sample{Asset: a.ID, Kind: a.Kind, DeviceTime: time.UnixMilli(m.ts).UTC(), UnixMs: m.ts, Answering: true, Values: map[string]any{}}
	var r devices.Reading
	r.Reset(a)
	_, err := a.Profile.DecodeJSON(m.payload, &r)
	for i, f := range a.Schema.Fields {
		if r.Values[i].Valid() {
			s.Values[f.Name] = r.Values[i].Any()
		}
	}
	if err != nil {
		s.Errors = map[string]string{"payload": err.Error()}
		s.Payload = string(m.payload)
	}
	return s
}

// History is what one asset served or published over a window.
type History struct {
	Asset   string   `json:"asset"`
	Kind    string   `json:"kind"`
	Samples []Sample `json:"samples"`
}

// History returns the asset's samples with device times within window
// before now (all kept samples when window is 0), oldest first.
func (e *Engine) History(asset string, window time.Duration) (*History, error) {
	a := e.city.Inventory.Lookup(asset)
	if a == nil {
		return nil, fmt.Errorf("no asset %q", asset)
	}
	h := &History{Asset: a.ID, Kind: a.Kind, Samples: []Sample{}}
	cut := int64(0)
	if window > 0 {
		cut = time.Now().Add(-window).UnixMilli()
	}
	if d := e.byID[asset]; d != nil {
		d.mu.RLock()
		d.hist.each(func(t int64, answering bool, words []uint16) {
			if t*1000 >= cut {
				s := d.sample(t, answering, words)
				s.Asset, s.Kind = "", ""
				h.Samples = append(h.Samples, s)
			}
		})
		d.mu.RUnlock()
		return h, nil
	}
	b := e.bins[e.binByID[asset]]
	b.each(func(m *message) {
		if m.ts >= cut {
			s := decodeMessage(a, m)
			s.Asset, s.Kind = "", ""
			h.Samples = append(h.Samples, s)
		}
	})
	return h, nil
}

// DeviceStats counts one Modbus device's requests.
type DeviceStats struct {
	Served     int64 `json:"served"`
	Exceptions int64 `json:"exceptions"`
	NoReply    int64 `json:"no_reply"`
}

// PublishStats counts one bin's messages.
type PublishStats struct {
	Attempted int64 `json:"attempted"`
	Acked     int64 `json:"acked"`
	Failed    int64 `json:"failed"`
}

// Stats are the simulator's counters.
type Stats struct {
	WallTime     time.Time `json:"wall_time"`
	SimTime      time.Time `json:"sim_time"`
	Ticks        int64     `json:"ticks"`
	EncodeErrors int64     `json:"encode_errors"`
	Faults       int       `json:"faults"`
	Modbus       struct {
		DeviceStats
		Assets map[string]DeviceStats `json:"assets"`
	} `json:"modbus"`
	MQTT struct {
		Connected bool `json:"connected"`
		PublishStats
		Assets map[string]PublishStats `json:"assets"`
	} `json:"mqtt"`
}

// Stats returns the counters.
func (e *Engine) Stats() *Stats {
	now := time.Now()
	s := &Stats{WallTime: now, SimTime: e.SimAt(now)}
	e.stMu.Lock()
	s.Ticks, s.EncodeErrors = e.ticks, e.encodeErrs
	e.stMu.Unlock()
	s.Faults = len(e.faults.List(now))
	s.Modbus.Assets = make(map[string]DeviceStats, len(e.byID))
	ids := make([]string, 0, len(e.byID))
	for id := range e.byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		d := e.byID[id]
		ds := DeviceStats{Served: d.requests.Load(), Exceptions: d.exceptions.Load(), NoReply: d.silent.Load()}
		s.Modbus.Assets[id] = ds
		s.Modbus.Served += ds.Served
		s.Modbus.Exceptions += ds.Exceptions
		s.Modbus.NoReply += ds.NoReply
	}
	s.MQTT.Assets = make(map[string]PublishStats, len(e.bins))
	if e.pub != nil {
		s.MQTT.Connected = e.pub.Connected()
		for i, b := range e.bins {
			var ps PublishStats
			ps.Attempted, ps.Acked, ps.Failed = e.pub.Counts(i)
			s.MQTT.Assets[b.Bin.Asset.ID] = ps
			s.MQTT.Attempted += ps.Attempted
			s.MQTT.Acked += ps.Acked
			s.MQTT.Failed += ps.Failed
		}
	}
	return s
}

// AddFault injects a fault starting now and applies it to how devices
// answer at once.
func (e *Engine) AddFault(sp faults.Spec) (faults.Fault, error) {
	if sp.Start.IsZero() {
		sp.Start = time.Now()
	}
	f, err := e.faults.Add(sp)
	if err == nil {
		e.ApplyFaults(time.Now())
	}
	return f, err
}

// RemoveFault removes a fault and applies the change at once.
func (e *Engine) RemoveFault(id string) bool {
	ok := e.faults.Remove(id)
	if ok {
		e.ApplyFaults(time.Now())
	}
	return ok
}

// ListFaults returns the faults in the set.
func (e *Engine) ListFaults() []faults.Fault { return e.faults.List(time.Now()) }

// TruthJSON is Truth for the control API.
func (e *Engine) TruthJSON(asset, kind string) (any, error) {
	t, err := e.Truth(asset, kind)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// HistoryJSON is History for the control API.
func (e *Engine) HistoryJSON(asset string, window time.Duration) (any, error) {
	h, err := e.History(asset, window)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// StatsJSON is Stats for the control API.
func (e *Engine) StatsJSON() any { return e.Stats() }

// InventoryYAML is the city's inventory.
func (e *Engine) InventoryYAML() ([]byte, error) { return e.city.InventoryYAML() }
