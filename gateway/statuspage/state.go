package statuspage

import (
	"math"
	"net/url"
	"sort"
	"time"

	"github.com/citygw/citygw/caseclient"
	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/rules"
)

// State is an asset's state on the page.
type State uint8

// Asset states, least urgent first: the map draws more urgent states on
// top, and a binned cell takes the colour of its most urgent asset.
const (
	// Waiting: no reading since the gateway started, which was less than
	// the asset's silence threshold ago.
	Waiting State = iota
	Reporting
	// Silent: no reading for longer than max(3 × expected interval,
	// the configured threshold).
	Silent
	// Shadow: in an episode of a shadow rule only (one being tried out
	// that opens no cases).
	Shadow
	Pending // in a pending episode: the anomaly has not held for the rule's `for` yet
	Firing  // in a firing episode
	numStates
)

var stateNames = [numStates]string{"waiting", "reporting", "silent", "shadow", "pending", "firing"}

func (s State) String() string {
	if s < numStates {
		return stateNames[s]
	}
	return "unknown"
}

// MarshalText implements encoding.TextMarshaler.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Episode flags per asset.
const (
	flagFiring uint8 = 1 << iota
	flagPending
	flagShadow
)

// markEpisodes sets each episode's flag on its assets.
func markEpisodes(flags []uint8, eps []rules.Episode, inv *devices.Inventory) {
	for i := range eps {
		e := &eps[i]
		var f uint8
		switch {
		case e.Shadow:
			f = flagShadow
		case e.State == rules.Firing:
			f = flagFiring
		case e.State == rules.Pending:
			f = flagPending
		default:
			continue
		}
		for _, id := range e.Assets {
			if a := inv.Lookup(id); a != nil && a.Seq < len(flags) {
				flags[a.Seq] |= f
			}
		}
	}
}

// classify returns one asset's state. seen is its last receive time (unix
// ns, 0 for never), silentAfter its silence threshold, start when the
// gateway started.
func classify(seen, now, silentAfter, start int64, flags uint8) State {
	switch {
	case flags&flagFiring != 0:
		return Firing
	case flags&flagPending != 0:
		return Pending
	case flags&flagShadow != 0:
		return Shadow
	case seen == 0:
		if now-start > silentAfter {
			return Silent
		}
		return Waiting
	case now-seen > silentAfter:
		return Silent
	}
	return Reporting
}

// classifyAll classifies every asset into dst. seen and flags may be
// shorter than dst (missing entries count as never seen, no episode).
func classifyAll(dst []State, seen []int64, flags []uint8, silentAfter []int64, now, start int64) {
	for i := range dst {
		var s int64
		if i < len(seen) {
			s = seen[i]
		}
		var f uint8
		if i < len(flags) {
			f = flags[i]
		}
		dst[i] = classify(s, now, silentAfter[i], start, f)
	}
}

// snapshot is the state of everything at one instant, shared by requests.
type snapshot struct {
	at       time.Time
	state    []State // by asset Seq
	counts   [numStates]int
	episodes []rules.Episode // pending and firing, firing first
	cases    map[string]*caseclient.CaseStatus
	health   Health
	version  uint64
}

// index is what the page precomputes per asset: small integer codes for
// the filters, the map position and bin, and the silence threshold.
type index struct {
	n         int
	kinds     []string // sorted
	districts []string
	grids     []string
	kindOf    []uint8
	distOf    []uint32
	gridOf    []uint32
	kindIdx   map[string]uint32
	distIdx   map[string]uint32
	gridIdx   map[string]uint32
	silentNs  []int64
	proj      projection
	x, y      []float32 // map position in SVG units
	cellOf    []uint32  // bin of the binned map
}

func newIndex(inv *devices.Inventory, modbusInterval, silentAfter time.Duration) *index {
	n := inv.Len()
	ix := &index{n: n, kindOf: make([]uint8, n), distOf: make([]uint32, n), gridOf: make([]uint32, n),
		silentNs: make([]int64, n), x: make([]float32, n), y: make([]float32, n), cellOf: make([]uint32, n)}
	ix.kinds, ix.kindIdx = values(inv, func(a *devices.Asset) string { return a.Kind })
	ix.districts, ix.distIdx = values(inv, func(a *devices.Asset) string { return a.District })
	ix.grids, ix.gridIdx = values(inv, func(a *devices.Asset) string { return a.Grid })
	lats, lons := make([]float64, n), make([]float64, n)
	for i, a := range inv.Assets {
		ix.kindOf[i] = uint8(ix.kindIdx[a.Kind])
		ix.distOf[i] = ix.distIdx[a.District]
		ix.gridOf[i] = ix.gridIdx[a.Grid]
		ix.silentNs[i] = int64(silenceThreshold(a, modbusInterval, silentAfter))
		lats[i], lons[i] = wgs84(a)
	}
	ix.proj = fit(lats, lons)
	for i := range inv.Assets {
		x, y := ix.proj.xy(lats[i], lons[i])
		ix.x[i], ix.y[i] = float32(x), float32(y)
		ix.cellOf[i] = uint32(ix.proj.cell(x, y))
	}
	return ix
}

// silenceThreshold is max(3 × the asset's expected interval, min).
func silenceThreshold(a *devices.Asset, modbusDefault, min time.Duration) time.Duration {
	var iv time.Duration
	if a.Modbus != nil {
		iv = a.Modbus.Interval.D()
		if iv <= 0 {
			iv = modbusDefault
		}
	}
	return max(3*iv, min)
}

// wgs84 returns an asset's WGS84 position.
func wgs84(a *devices.Asset) (lat, lon float64) {
	if a.CRS == devices.GCJ02 {
		return caseclient.GCJ02ToWGS84(a.Lat, a.Lon)
	}
	return a.Lat, a.Lon
}

func values(inv *devices.Inventory, get func(*devices.Asset) string) ([]string, map[string]uint32) {
	set := map[string]bool{}
	for _, a := range inv.Assets {
		set[get(a)] = true
	}
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	idx := make(map[string]uint32, len(out))
	for i, v := range out {
		idx[v] = uint32(i)
	}
	return out, idx
}

// filter selects assets by kind, district and grid; an empty field matches
// everything and a value the inventory lacks matches nothing.
type filter struct {
	Kind, District, Grid string
	kind, dist, grid     int64 // -1 any, -2 none
}

func (ix *index) parseFilter(q url.Values) filter {
	f := filter{Kind: q.Get("kind"), District: q.Get("district"), Grid: q.Get("grid")}
	f.kind = lookup(ix.kindIdx, f.Kind)
	f.dist = lookup(ix.distIdx, f.District)
	f.grid = lookup(ix.gridIdx, f.Grid)
	return f
}

func lookup(m map[string]uint32, v string) int64 {
	if v == "" {
		return -1
	}
	if i, ok := m[v]; ok {
		return int64(i)
	}
	return -2
}

func (f *filter) any() bool { return f.kind == -1 && f.dist == -1 && f.grid == -1 }

// match reports whether asset i passes the filter.
func (ix *index) match(f *filter, i int) bool {
	return (f.kind == -1 || int64(ix.kindOf[i]) == f.kind) &&
		(f.dist == -1 || int64(ix.distOf[i]) == f.dist) &&
		(f.grid == -1 || int64(ix.gridOf[i]) == f.grid)
}

// query returns the filter as a query string ("" when empty), for links.
func (f *filter) query() string {
	v := url.Values{}
	if f.Kind != "" {
		v.Set("kind", f.Kind)
	}
	if f.District != "" {
		v.Set("district", f.District)
	}
	if f.Grid != "" {
		v.Set("grid", f.Grid)
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// counts aggregates the states of the assets passing f.
func (ix *index) counts(s *snapshot, f *filter) (c [numStates]int, n int) {
	if f.any() {
		return s.counts, ix.n
	}
	for i, st := range s.state {
		if ix.match(f, i) {
			c[st]++
			n++
		}
	}
	return c, n
}

// Health is the sources' and sinks' health.
type Health struct {
	ModbusUp      int       `json:"modbus_up"`
	ModbusTotal   int       `json:"modbus_total"`
	MQTT          bool      `json:"mqtt"` // an MQTT subscriber is configured
	MQTTConnected bool      `json:"mqtt_connected"`
	MQTTLast      time.Time `json:"mqtt_last_message,omitzero"`
	MQTTBroker    string    `json:"mqtt_broker,omitempty"`
	Influx        bool      `json:"influxdb"`
	InfluxUp      bool      `json:"influxdb_up"`
	InfluxQueued  int64     `json:"influxdb_queued"`
	InfluxError   string    `json:"influxdb_error,omitempty"`
	InfluxLast    time.Time `json:"influxdb_last_write,omitzero"`
	WAL           bool      `json:"wal"`
	WALBacklog    int64     `json:"wal_backlog"`
	WALBytes      int64     `json:"wal_bytes"`
	WALAge        float64   `json:"wal_backlog_age_seconds"`
	WALDiskFull   bool      `json:"wal_disk_full,omitempty"`
	Cases         bool      `json:"cases"`
	Outbox        int       `json:"outbox"`
	OutboxAge     float64   `json:"outbox_oldest_seconds"`
	DeadLetters   int       `json:"dead_letters"`
	SinksOK       int       `json:"sinks_ok"`
	Sinks         []Sink    `json:"sinks,omitempty"`

	cases caseclient.Status
}

// Sink is one case sink's health.
type Sink struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Breaker string `json:"breaker"`
	Pending int    `json:"pending"`
	OK      bool   `json:"ok"`
}

func (p *Page) health() Health {
	var h Health
	if p.opts.Modbus != nil {
		for _, d := range p.opts.Modbus.Status() {
			h.ModbusTotal++
			if d.Up {
				h.ModbusUp++
			}
		}
	}
	if p.opts.MQTT != nil {
		st := p.opts.MQTT.Status()
		h.MQTT, h.MQTTConnected, h.MQTTLast, h.MQTTBroker = true, st.Connected, st.LastMessage, st.Broker
	}
	if p.opts.Influx != nil {
		st := p.opts.Influx.Stats()
		h.Influx, h.InfluxUp, h.InfluxQueued, h.InfluxError, h.InfluxLast = true, p.opts.Influx.Healthy(), st.Queued, st.LastError, st.LastWrite
	}
	if p.opts.WAL != nil {
		st := p.opts.WAL.Stats()
		h.WAL, h.WALBacklog, h.WALBytes, h.WALAge, h.WALDiskFull = true, st.Backlog, st.Bytes, st.BacklogAge.Seconds(), st.DiskFull
	}
	if p.opts.Cases != nil {
		st := p.opts.Cases.Status()
		h.cases = st
		h.Cases, h.Outbox, h.OutboxAge, h.DeadLetters = true, st.OutboxDepth, st.OldestSeconds, st.DeadLetters
		for _, s := range st.Sinks {
			ok := !s.Disabled && s.Breaker == caseclient.BreakerClosed
			if ok {
				h.SinksOK++
			}
			h.Sinks = append(h.Sinks, Sink{Name: s.Name, Type: s.Type, Breaker: string(s.Breaker), Pending: s.Pending, OK: ok})
		}
	}
	return h
}

// round1 rounds for display.
func round1(x float64) float64 { return math.Round(x*10) / 10 }
