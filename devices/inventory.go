package devices

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/citygw/citygw/devices/yamlconf"
)

// ModbusAddr is where and how a Modbus device is reached: TCP (Host) or RTU
// over a serial line (Serial), with its unit id and optional polling settings
// that override the gateway's defaults.
type ModbusAddr struct {
	Host     string            `yaml:"host,omitempty"`   // host:port for Modbus TCP
	Serial   string            `yaml:"serial,omitempty"` // device path for Modbus RTU
	Baud     int               `yaml:"baud,omitempty"`
	DataBits int               `yaml:"data_bits,omitempty"`
	Parity   string            `yaml:"parity,omitempty"` // N, E or O
	StopBits int               `yaml:"stop_bits,omitempty"`
	Unit     uint8             `yaml:"unit"`
	Interval yamlconf.Duration `yaml:"interval,omitempty"`
	Timeout  yamlconf.Duration `yaml:"timeout,omitempty"`
}

// Endpoint names the connection the device shares with others: the TCP
// address or the serial device. Devices with one endpoint are polled over one
// connection, one request at a time.
func (m *ModbusAddr) Endpoint() string {
	if m.Serial != "" {
		return "rtu:" + m.Serial
	}
	return "tcp:" + m.Host
}

// MQTTAddr is where an MQTT device publishes.
type MQTTAddr struct {
	Topic string `yaml:"topic"`
}

// Coordinate reference systems of inventory positions.
const (
	WGS84 = "wgs84"
	GCJ02 = "gcj02" // China's obfuscated datum, common in Chinese map data
)

// Asset is one instrumented city component from the inventory.
type Asset struct {
	ID       string         `yaml:"id"`
	Kind     string         `yaml:"kind,omitempty"`
	Model    string         `yaml:"profile"`
	Modbus   *ModbusAddr    `yaml:"modbus,omitempty"`
	MQTT     *MQTTAddr      `yaml:"mqtt,omitempty"`
	Lat      float64        `yaml:"lat"`
	Lon      float64        `yaml:"lon"`
	CRS      string         `yaml:"crs,omitempty"` // wgs84 (default) or gcj02
	District string         `yaml:"district"`      // 6-digit GB/T 2260 code
	Grid     string         `yaml:"grid"`          // unit-grid cell code
	Code     string         `yaml:"code"`          // 16-digit component code
	Attrs    map[string]any `yaml:"attrs,omitempty"`

	// Set when the inventory is loaded.
	Profile *Profile `yaml:"-"`
	Schema  *Schema  `yaml:"-"`
	Seq     int      `yaml:"-"` // dense index in Inventory.Assets, for slice-indexed per-asset state
	File    string   `yaml:"-"`
	Line    int      `yaml:"-"`
}

// Attr returns the attribute's value as a string ("" when absent).
func (a *Asset) Attr(name string) string {
	v, ok := a.Attrs[name]
	if !ok || v == nil {
		return ""
	}
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	return fmt.Sprint(v)
}

// AttrFloat returns a numeric attribute, or NaN.
func (a *Asset) AttrFloat(name string) float64 {
	switch v := a.Attrs[name].(type) {
	case float64:
		return v
	case string:
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return f
		}
	}
	return math.NaN()
}

// Inventory is the set of assets a gateway (or the simulator) knows.
type Inventory struct {
	Assets  []*Asset
	byID    map[string]*Asset
	byTopic map[string]*Asset
}

// Lookup returns the asset with the id, or nil.
func (inv *Inventory) Lookup(id string) *Asset { return inv.byID[id] }

// ByTopic returns the asset publishing on the exact topic, or nil.
func (inv *Inventory) ByTopic(topic string) *Asset { return inv.byTopic[topic] }

// Len returns the number of assets.
func (inv *Inventory) Len() int { return len(inv.Assets) }

// LoadInventory reads an inventory file, YAML (.yaml, .yml) or CSV (.csv),
// resolving profiles from cat.
func LoadInventory(file string, cat *Catalog) (*Inventory, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading inventory: %w", err)
	}
	switch strings.ToLower(filepath.Ext(file)) {
	case ".csv":
		return ParseInventoryCSV(file, data, cat)
	case ".yaml", ".yml":
		return ParseInventoryYAML(file, data, cat)
	}
	return nil, fmt.Errorf("inventory %s: unknown format (want .yaml, .yml or .csv)", file)
}

type inventoryFile struct {
	Assets []*Asset `yaml:"assets"`
}

// ParseInventoryYAML decodes a YAML inventory: a top-level "assets" list.
//
// A city's inventory holds a hundred thousand assets, and the YAML library
// builds a syntax tree of some 40 KB per asset: 126,000 bins took 35 s and
// 5.6 GB in one piece. When the list is written in plain block style (as
// firmware-sim and most tools write it), it is cut into chunks of
// inventoryChunk assets that are parsed on their own, on every core, with
// their error positions moved back to the file's lines; any other layout is
// parsed whole.
func ParseInventoryYAML(file string, data []byte, cat *Catalog) (*Inventory, error) {
	chunks, ok := splitInventoryYAML(data)
	if !ok {
		chunks = []yamlChunk{{data: data}}
	}
	type result struct {
		assets []*Asset
		errs   yamlconf.Errors
	}
	results := make([]result, len(chunks))
	var syntax atomic.Bool // a chunk could not be decoded at all
	cmp := newCompactor()
	next := make(chan int, len(chunks))
	for i := range chunks {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(chunks)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var decoded bool
				results[i].assets, results[i].errs, decoded = parseInventoryChunk(file, chunks[i], cat, cmp)
				if !decoded {
					syntax.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	var assets []*Asset
	var errs yamlconf.Errors
	for _, r := range results {
		assets = append(assets, r.assets...)
		errs = append(errs, r.errs...)
	}
	if syntax.Load() {
		return nil, errs.Err() // as for a file parsed whole: no inventory from a broken file
	}
	inv, ierrs := newInventory(assets)
	errs = append(errs, ierrs...)
	return inv, errs.Err()
}

// parseInventoryChunk decodes, checks and compacts one chunk's assets;
// error lines are the file's.
func parseInventoryChunk(file string, c yamlChunk, cat *Catalog, cmp *compactor) (_ []*Asset, _ yamlconf.Errors, decoded bool) {
	var f inventoryFile
	doc, err := yamlconf.Decode(file, c.data, &f)
	if err != nil {
		var errs yamlconf.Errors
		if !errors.As(err, &errs) {
			var one *yamlconf.Error
			if !errors.As(err, &one) {
				one = &yamlconf.Error{File: file, Msg: err.Error()}
			}
			errs = yamlconf.Errors{one}
		}
		for _, e := range errs {
			var ye *yamlconf.Error
			if errors.As(e, &ye) && ye.Line > 0 {
				ye.Line += c.lineOffset
			}
		}
		return nil, errs, false
	}
	var errs yamlconf.Errors
	add := func(e *yamlconf.Error) {
		if e.Line > 0 {
			e.Line += c.lineOffset
		}
		errs = append(errs, e)
	}
	assets := f.Assets[:0]
	for j, a := range f.Assets {
		i := c.first + j
		at := fmt.Sprintf("$.assets[%d]", j)
		if a == nil {
			add(doc.Errorf(at, "assets", "empty entry"))
			continue
		}
		a.File = file
		a.Line, _ = doc.Pos(at + ".id")
		a.Line += c.lineOffset
		for _, e := range a.validate(cat) {
			add(doc.Errorf(at+"."+e.key, assetField(a, i, e.key), "%s", e.msg))
		}
		assets = append(assets, a)
	}
	cmp.compact(assets) // now: the chunk's decoder allocations become garbage
	return assets, errs, true
}

// inventoryChunk is how many assets a chunk of a YAML inventory holds.
const inventoryChunk = 256

// yamlChunk is a part of a YAML inventory parsed on its own: "assets:" and
// some of the list's items.
type yamlChunk struct {
	data       []byte
	lineOffset int // added to a line in data to give the file's line
	first      int // index in the whole list of the chunk's first asset
}

// splitInventoryYAML cuts a YAML inventory written in plain block style —
// comments, a top-level "assets:" line, then the list's items, each
// starting with "- " at one indentation — into chunks of inventoryChunk
// items. ok is false for any other layout (flow style, other top-level
// keys, documents markers, tabs, anchors), which is then parsed whole and
// gets the YAML library's own errors.
func splitInventoryYAML(data []byte) (chunks []yamlChunk, ok bool) {
	if bytes.ContainsAny(data, "\t&*") || bytes.Contains(data, []byte("\n---")) || bytes.HasPrefix(data, []byte("---")) {
		return nil, false // tabs, anchors and aliases, several documents: keep it simple
	}
	indent := -1         // the items' indentation, once seen
	itemStart := -1      // byte offset of the pending chunk's first item
	itemLine := 0        // its line number (1-based)
	items, total := 0, 0 // items in the pending chunk, before it
	flush := func(end int) {
		if itemStart < 0 {
			return
		}
		buf := make([]byte, 0, len("assets:\n")+end-itemStart)
		buf = append(append(buf, "assets:\n"...), data[itemStart:end]...)
		chunks = append(chunks, yamlChunk{data: buf, lineOffset: itemLine - 2, first: total})
		total += items
		itemStart, items = -1, 0
	}
	seenAssets := false
	line := 0
	for off := 0; off < len(data); {
		end := bytes.IndexByte(data[off:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += off + 1
		}
		text := bytes.TrimRight(data[off:end], "\r\n")
		line++
		content := bytes.TrimLeft(text, " ")
		spaces := len(text) - len(content)
		switch {
		case len(content) == 0 || content[0] == '#':
			// blank or comment: belongs wherever it is
		case !seenAssets:
			if spaces != 0 || !isAssetsKey(content) {
				return nil, false
			}
			seenAssets = true
		case indent < 0:
			if !bytes.HasPrefix(content, []byte("- ")) && !bytes.Equal(content, []byte("-")) {
				return nil, false
			}
			indent = spaces
			fallthrough
		case spaces == indent && (bytes.HasPrefix(content, []byte("- ")) || bytes.Equal(content, []byte("-"))):
			if items == inventoryChunk {
				flush(off)
			}
			if itemStart < 0 {
				itemStart, itemLine = off, line
			}
			items++
		case spaces <= indent:
			return nil, false // another top-level key, or a line the list does not own
		}
		off = end
	}
	if !seenAssets {
		return nil, false
	}
	flush(len(data))
	return chunks, true
}

// isAssetsKey reports whether a top-level line is "assets:" (with an
// optional comment) and nothing else.
func isAssetsKey(content []byte) bool {
	rest, found := bytes.CutPrefix(content, []byte("assets:"))
	if !found {
		return false
	}
	rest = bytes.TrimLeft(rest, " ")
	return len(rest) == 0 || rest[0] == '#'
}

// CSVColumns are the columns of a CSV inventory, in any order; the header row
// names them. transport is a URL: modbus+tcp://host:port?unit=N[&interval=1s&timeout=500ms],
// modbus+rtu:///dev/ttyUSB0?unit=N&baud=9600&parity=E, or mqtt:topic/of/the/device.
// attrs is a list of key=value pairs separated by ';'.
var CSVColumns = []string{"id", "kind", "profile", "transport", "lat", "lon", "crs", "district", "grid", "code", "attrs"}

// ParseInventoryCSV decodes a CSV inventory (see CSVColumns).
func ParseInventoryCSV(file string, data []byte, cat *Catalog) (*Inventory, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.Comment = '#'
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, &yamlconf.Error{File: file, Line: 1, Msg: "reading CSV header: " + err.Error()}
	}
	col := map[string]int{}
	var errs yamlconf.Errors
	known := map[string]bool{}
	for _, c := range CSVColumns {
		known[c] = true
	}
	for i, h := range header {
		h = strings.TrimSpace(strings.ToLower(h))
		if !known[h] {
			errs = append(errs, &yamlconf.Error{File: file, Line: 1, Column: i + 1, Field: h, Msg: "unknown column (want " + strings.Join(CSVColumns, ", ") + ")"})
		}
		col[h] = i
	}
	for _, req := range []string{"id", "profile", "transport", "lat", "lon"} {
		if _, ok := col[req]; !ok {
			errs = append(errs, &yamlconf.Error{File: file, Line: 1, Field: req, Msg: "required column missing"})
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	var assets []*Asset
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			line := 0
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				line = pe.Line
			}
			// The reader cannot resynchronise after a quoting error.
			errs = append(errs, &yamlconf.Error{File: file, Line: line, Msg: err.Error()})
			break
		}
		line, _ := r.FieldPos(0)
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		fail := func(field, format string, args ...any) {
			c := 0
			if i, ok := col[field]; ok && i < len(rec) {
				_, c = r.FieldPos(i)
			}
			errs = append(errs, &yamlconf.Error{File: file, Line: line, Column: c, Field: field, Msg: fmt.Sprintf(format, args...)})
		}
		a := &Asset{ID: get("id"), Kind: get("kind"), Model: get("profile"), CRS: get("crs"),
			District: get("district"), Grid: get("grid"), Code: get("code"), File: file, Line: line}
		var perr error
		if a.Lat, perr = strconv.ParseFloat(get("lat"), 64); perr != nil {
			fail("lat", "not a number: %q", get("lat"))
		}
		if a.Lon, perr = strconv.ParseFloat(get("lon"), 64); perr != nil {
			fail("lon", "not a number: %q", get("lon"))
		}
		if err := a.parseTransport(get("transport")); err != nil {
			fail("transport", "%v", err)
		}
		if s := get("attrs"); s != "" {
			a.Attrs = map[string]any{}
			for _, kv := range strings.Split(s, ";") {
				k, v, ok := strings.Cut(kv, "=")
				k = strings.TrimSpace(k)
				if !ok || k == "" {
					fail("attrs", "want key=value pairs separated by ';', got %q", kv)
					continue
				}
				a.Attrs[k] = strings.TrimSpace(v)
			}
		}
		for _, e := range a.validate(cat) {
			fail(strings.SplitN(e.key, ".", 2)[0], "%s", e.msg)
		}
		assets = append(assets, a)
	}
	compactAssets(assets)
	inv, ierrs := newInventory(assets)
	errs = append(errs, ierrs...)
	return inv, errs.Err()
}

func (a *Asset) parseTransport(s string) error {
	if strings.HasPrefix(s, "mqtt:") {
		topic := strings.TrimPrefix(s, "mqtt:")
		topic = strings.TrimPrefix(topic, "//")
		a.MQTT = &MQTTAddr{Topic: topic}
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a transport URL: %v", err)
	}
	m := &ModbusAddr{}
	switch u.Scheme {
	case "modbus+tcp", "modbus":
		m.Host = u.Host
	case "modbus+rtu":
		m.Serial = u.Path
	default:
		return fmt.Errorf("unknown transport %q (want modbus+tcp://host:port?unit=N, modbus+rtu:///dev/tty?unit=N or mqtt:topic)", s)
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "unit", "baud", "data_bits", "stop_bits", "parity", "interval", "timeout":
		default:
			return fmt.Errorf("unknown transport parameter %q", k)
		}
	}
	unit, err := strconv.ParseUint(q.Get("unit"), 10, 8)
	if err != nil {
		return fmt.Errorf("unit: want 0..255, got %q", q.Get("unit"))
	}
	m.Unit = uint8(unit)
	for _, p := range []struct {
		key string
		dst *int
	}{{"baud", &m.Baud}, {"data_bits", &m.DataBits}, {"stop_bits", &m.StopBits}} {
		if v := q.Get(p.key); v != "" {
			if *p.dst, err = strconv.Atoi(v); err != nil {
				return fmt.Errorf("%s: not a number: %q", p.key, v)
			}
		}
	}
	m.Parity = q.Get("parity")
	for _, p := range []struct {
		key string
		dst *yamlconf.Duration
	}{{"interval", &m.Interval}, {"timeout", &m.Timeout}} {
		if v := q.Get(p.key); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%s: %v", p.key, err)
			}
			*p.dst = yamlconf.Duration(d)
		}
	}
	a.Modbus = m
	return nil
}

type fieldErr struct{ key, msg string }

func assetField(a *Asset, i int, key string) string {
	if a.ID != "" {
		return "asset " + a.ID + "." + key
	}
	return fmt.Sprintf("assets[%d].%s", i, key)
}

func allDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// validate checks one asset and resolves its profile.
func (a *Asset) validate(cat *Catalog) []fieldErr {
	var errs []fieldErr
	add := func(key, format string, args ...any) {
		errs = append(errs, fieldErr{key, fmt.Sprintf(format, args...)})
	}
	if a.ID == "" || strings.ContainsAny(a.ID, " \t\n/#+,=\"\\") {
		add("id", "required, without spaces or any of / # + , = \" \\ (got %q)", a.ID)
	}
	if cat != nil {
		a.Profile = cat.Profile(a.Model)
		if a.Profile == nil {
			add("profile", "unknown profile %q", a.Model)
		} else {
			if a.Kind == "" {
				a.Kind = a.Profile.Kind
			} else if a.Kind != a.Profile.Kind {
				add("kind", "is %q but profile %s is for kind %q", a.Kind, a.Model, a.Profile.Kind)
			}
			a.Schema = cat.Kinds[a.Profile.Kind]
			switch a.Profile.Transport {
			case Modbus:
				if a.Modbus == nil {
					add("profile", "profile %s is read over Modbus: the asset needs a modbus address", a.Model)
				}
			case MQTT:
				if a.MQTT == nil {
					a.MQTT = &MQTTAddr{}
				}
			}
		}
	}
	if a.Modbus != nil && a.MQTT != nil && a.MQTT.Topic != "" {
		add("mqtt", "an asset has either a modbus or an mqtt address, not both")
	}
	if m := a.Modbus; m != nil {
		switch {
		case m.Host != "" && m.Serial != "":
			add("modbus.host", "give host (Modbus TCP) or serial (Modbus RTU), not both")
		case m.Host != "":
			if _, port, err := net.SplitHostPort(m.Host); err != nil || port == "" {
				add("modbus.host", "want host:port, got %q", m.Host)
			}
		case m.Serial != "":
			if m.Parity != "" && m.Parity != "N" && m.Parity != "E" && m.Parity != "O" {
				add("modbus.parity", "want N, E or O, got %q", m.Parity)
			}
		default:
			add("modbus.host", "required: host:port for Modbus TCP or serial for Modbus RTU")
		}
		if m.Serial != "" && m.Unit == 0 {
			add("modbus.unit", "unit 0 is the RTU broadcast address and gets no reply")
		}
		if m.Unit > 247 {
			add("modbus.unit", "want 0..247, got %d", m.Unit)
		}
	}
	if math.IsNaN(a.Lat) || a.Lat < -90 || a.Lat > 90 {
		add("lat", "want -90..90, got %v", a.Lat)
	}
	if math.IsNaN(a.Lon) || a.Lon < -180 || a.Lon > 180 {
		add("lon", "want -180..180, got %v", a.Lon)
	}
	if a.Lat == 0 && a.Lon == 0 {
		add("lat", "position 0,0 is missing, not a place in the city")
	}
	switch a.CRS {
	case "":
		a.CRS = WGS84
	case WGS84, GCJ02:
	default:
		add("crs", "want wgs84 or gcj02, got %q", a.CRS)
	}
	if a.District != "" && (len(a.District) != 6 || !allDigits(a.District)) {
		add("district", "want a 6-digit GB/T 2260 code, got %q", a.District)
	}
	if a.Grid != "" && !allDigits(a.Grid) {
		add("grid", "want a unit-grid code of digits, got %q", a.Grid)
	}
	if a.Code != "" {
		if len(a.Code) != 16 || !allDigits(a.Code) {
			add("code", "want a 16-digit component code, got %q", a.Code)
		} else if a.District != "" && a.Code[:6] != a.District {
			add("code", "component code %s does not start with the asset's district %s", a.Code, a.District)
		}
	}
	for k, v := range a.Attrs {
		if !isIdent(k) {
			add("attrs", "attribute name %q must be an identifier", k)
		}
		switch x := v.(type) {
		case string:
			// "0123" stays a code; "150" and "0.5" become numbers.
			leadingZero := len(x) > 1 && x[0] == '0' && x[1] != '.'
			if f, err := strconv.ParseFloat(x, 64); err == nil && !leadingZero {
				a.Attrs[k] = f
			}
		case bool, float64:
		case int64:
			a.Attrs[k] = float64(x)
		case uint64:
			a.Attrs[k] = float64(x)
		case int:
			a.Attrs[k] = float64(x)
		default:
			add("attrs."+k, "attribute must be a number, string or boolean, got %T", v)
		}
	}
	return errs
}

func newInventory(assets []*Asset) (*Inventory, yamlconf.Errors) {
	var errs yamlconf.Errors
	inv := &Inventory{byID: map[string]*Asset{}, byTopic: map[string]*Asset{}}
	units := map[string]*Asset{}
	for _, a := range assets {
		if a == nil {
			continue
		}
		if prev, dup := inv.byID[a.ID]; dup {
			errs = append(errs, &yamlconf.Error{File: a.File, Line: a.Line, Field: "asset " + a.ID + ".id", Msg: fmt.Sprintf("duplicate asset id (first at line %d)", prev.Line)})
			continue
		}
		if a.Modbus != nil {
			key := fmt.Sprintf("%s/%d", a.Modbus.Endpoint(), a.Modbus.Unit)
			if prev, dup := units[key]; dup {
				errs = append(errs, &yamlconf.Error{File: a.File, Line: a.Line, Field: "asset " + a.ID + ".modbus.unit", Msg: fmt.Sprintf("unit %d on %s is already asset %s", a.Modbus.Unit, a.Modbus.Endpoint(), prev.ID)})
				continue
			}
			units[key] = a
		}
		if a.MQTT != nil && a.MQTT.Topic != "" {
			if prev, dup := inv.byTopic[a.MQTT.Topic]; dup {
				errs = append(errs, &yamlconf.Error{File: a.File, Line: a.Line, Field: "asset " + a.ID + ".mqtt.topic", Msg: fmt.Sprintf("topic already used by asset %s", prev.ID)})
				continue
			}
			inv.byTopic[a.MQTT.Topic] = a
		}
		a.Seq = len(inv.Assets)
		inv.byID[a.ID] = a
		inv.Assets = append(inv.Assets, a)
	}
	return inv, errs
}

// NewInventory builds an inventory from assets already validated, for
// programs (the simulator, tests) that make their assets in code.
func NewInventory(cat *Catalog, assets []*Asset) (*Inventory, error) {
	var errs yamlconf.Errors
	for _, a := range assets {
		for _, e := range a.validate(cat) {
			errs = append(errs, &yamlconf.Error{File: a.File, Line: a.Line, Field: "asset " + a.ID + "." + e.key, Msg: e.msg})
		}
	}
	inv, ierrs := newInventory(assets)
	errs = append(errs, ierrs...)
	return inv, errs.Err()
}

// Kinds returns the kinds present in the inventory, sorted.
func (inv *Inventory) Kinds() []string {
	seen := map[string]bool{}
	for _, a := range inv.Assets {
		seen[a.Kind] = true
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
