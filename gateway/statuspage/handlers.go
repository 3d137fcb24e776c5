package statuspage

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/citygw/citygw/caseclient"
	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/rules"
)

// csp allows the page's own inline style and script and requests to the
// gateway itself, nothing else.
const csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

func htmlHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", csp)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
}

type stateCount struct {
	State, Class, Badge string
	N                   int
}

type assetLink struct{ ID, Href string }

type caseLink struct{ Sink, ID, Link, Status string }

type episodeRow struct {
	ID, Rule, Title, Severity, Muted string
	State                            rules.State
	Badge                            string
	Shadow                           bool
	Since                            time.Time
	Assets                           []assetLink
	More                             int
	Cases                            []caseLink
}

type pageData struct {
	Title  string
	Back   string
	CSS    template.CSS
	Script template.JS
	Now    time.Time
	Loc    *time.Location
}

type cityData struct {
	pageData
	Version        string
	Filter         filter
	FilterQuery    string
	Kinds          []string
	Districts      []string
	DistrictSelect bool
	Grids          []string
	Counts         []stateCount
	Matched, Total int
	Map            mapInfo
	Health         Health
	Episodes       []episodeRow
	MoreEpisodes   int
	FiringN        int
	PendingN       int
	ShadowN        int
}

func (p *Page) script(s string) template.JS {
	return template.JS(strings.ReplaceAll(s, "REFRESH_MS", strconv.FormatInt(p.opts.Refresh.Milliseconds(), 10)))
}

func (p *Page) title() string {
	if p.opts.Gateway != "" {
		return "citygw " + p.opts.Gateway + " · city status"
	}
	return "citygw · city status"
}

// serveCity renders the city page, or with ?partial=1 only its live part.
func (p *Page) serveCity(w http.ResponseWriter, r *http.Request) {
	s := p.current()
	q := r.URL.Query()
	f := p.idx.parseFilter(q)
	counts, matched := p.idx.counts(s, &f)
	d := &cityData{pageData: pageData{Title: p.title(), CSS: template.CSS(css), Script: p.script(cityScript), Now: s.at, Loc: p.opts.loc()},
		Version: strconv.FormatUint(s.version, 16), Filter: f, FilterQuery: f.query(), Kinds: p.idx.kinds,
		Districts: p.idx.districts, DistrictSelect: len(p.idx.districts) <= 300, Matched: matched, Total: p.idx.n, Health: s.health}
	if len(p.idx.grids) <= 500 {
		d.Grids = p.idx.grids
	}
	for st := numStates - 1; ; st-- {
		d.Counts = append(d.Counts, stateCount{State: stateNames[st], Class: stateClass[st], Badge: "b-" + stateNames[st], N: counts[st]})
		if st == 0 {
			break
		}
	}
	d.Episodes, d.MoreEpisodes, d.FiringN, d.PendingN, d.ShadowN = p.episodeRows(s, &f)
	htmlHeaders(w)
	w.Header().Set("X-Version", d.Version)
	w.Header().Set("Vary", "Accept-Encoding")
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		// The binned map of a big city is about a megabyte of SVG; it
		// compresses tenfold.
		zw := p.gz.Get().(*gzip.Writer)
		zw.Reset(w)
		defer func() {
			zw.Close()
			zw.Reset(nil)
			p.gz.Put(zw)
		}()
		w.Header().Set("Content-Encoding", "gzip")
		w = gzipWriter{ResponseWriter: w, w: zw}
	}
	partial := q.Get("partial") != ""
	o := p.outs.Get().(*out)
	o.w, o.err, o.b = w, nil, o.b[:0]
	defer func() {
		o.w = nil
		p.outs.Put(o)
	}()
	if !partial {
		if err := templates.ExecuteTemplate(w, "head", d); err != nil {
			p.log.Warn("rendering the status page", "err", err)
			return
		}
		if err := templates.ExecuteTemplate(w, "filters", d); err != nil {
			p.log.Warn("rendering the status page", "err", err)
			return
		}
	}
	if err := templates.ExecuteTemplate(w, "live-a", d); err != nil {
		p.log.Warn("rendering the status page", "err", err)
		return
	}
	d.Map = p.writeMap(o, s, &f, matched)
	if o.err != nil {
		return
	}
	names := []string{"live-b"}
	if !partial {
		names = append(names, "live-end", "foot")
	}
	for _, n := range names {
		if err := templates.ExecuteTemplate(w, n, d); err != nil {
			p.log.Warn("rendering the status page", "err", err)
			return
		}
	}
}

// gzipWriter sends a response body through gzip.
type gzipWriter struct {
	http.ResponseWriter
	w *gzip.Writer
}

func (g gzipWriter) Write(b []byte) (int, error) { return g.w.Write(b) }

// episodeRows lists the episodes touching the filtered assets.
func (p *Page) episodeRows(s *snapshot, f *filter) (rows []episodeRow, more, firing, pending, shadow int) {
	inv := p.opts.Inventory
	for i := range s.episodes {
		e := &s.episodes[i]
		if !f.any() && !p.episodeMatches(e, f) {
			continue
		}
		switch {
		case e.Shadow:
			shadow++
		case e.State == rules.Firing:
			firing++
		case e.State == rules.Pending:
			pending++
		}
		if len(rows) >= p.opts.MaxEpisodes {
			more++
			continue
		}
		row := episodeRow{ID: e.ID, Rule: e.Rule, Title: e.Title, Severity: e.Severity, Muted: e.Muted, State: e.State,
			Badge: "b-" + e.State.String(), Shadow: e.Shadow, Since: e.Start}
		if e.State == rules.Firing && !e.FiredAt.IsZero() {
			row.Since = e.FiredAt
		}
		if row.Title == "" {
			row.Title = e.GroupKey
		}
		for _, id := range e.Assets {
			if len(row.Assets) == 5 {
				row.More = len(e.Assets) - 5
				break
			}
			if a := inv.Lookup(id); a != nil {
				row.Assets = append(row.Assets, assetLink{ID: id, Href: "assets/" + url.PathEscape(id)})
			}
		}
		row.Cases = caseLinks(s.cases[e.ID])
		rows = append(rows, row)
	}
	return rows, more, firing, pending, shadow
}

func (p *Page) episodeMatches(e *rules.Episode, f *filter) bool {
	for _, id := range e.Assets {
		if a := p.opts.Inventory.Lookup(id); a != nil && p.idx.match(f, a.Seq) {
			return true
		}
	}
	return false
}

func caseLinks(c *caseclient.CaseStatus) []caseLink {
	if c == nil {
		return nil
	}
	out := make([]caseLink, 0, len(c.Sinks))
	for _, s := range c.Sinks {
		out = append(out, caseLink{Sink: s.Sink, ID: s.ID, Link: s.Link, Status: s.Status})
	}
	return out
}

// Summary is the /api/summary document (and, without Episodes, each
// /events message).
type Summary struct {
	Gateway   string            `json:"gateway,omitempty"`
	Generated time.Time         `json:"generated"`
	Version   string            `json:"version"`
	Filter    map[string]string `json:"filter,omitempty"`
	Assets    int               `json:"assets"`
	Matched   int               `json:"matched"`
	States    map[string]int    `json:"states"`
	Firing    int               `json:"firing_episodes"`
	Pending   int               `json:"pending_episodes"`
	Shadow    int               `json:"shadow_episodes"`
	Counters  Counters          `json:"counters"`
	Health    *Health           `json:"health,omitempty"`
	Episodes  []SummaryEpisode  `json:"episodes,omitempty"`
}

// Counters are the queue depths, which the page updates in place.
type Counters struct {
	WALBacklog   int64 `json:"wal_backlog"`
	InfluxQueued int64 `json:"influxdb_queued"`
	Outbox       int   `json:"outbox"`
}

// SummaryEpisode is one episode in the summary.
type SummaryEpisode struct {
	ID       string      `json:"id"`
	Rule     string      `json:"rule"`
	Title    string      `json:"title"`
	State    rules.State `json:"state"`
	Shadow   bool        `json:"shadow,omitempty"`
	Severity string      `json:"severity"`
	Since    time.Time   `json:"since"`
	Assets   []string    `json:"assets"`
	More     int         `json:"more_assets,omitempty"`
	Cases    []caseLink  `json:"cases,omitempty"`
}

func (p *Page) summary(s *snapshot, f *filter, full bool) Summary {
	counts, matched := p.idx.counts(s, f)
	sum := Summary{Gateway: p.opts.Gateway, Generated: s.at, Version: strconv.FormatUint(s.version, 16), Assets: p.idx.n,
		Matched: matched, States: make(map[string]int, numStates),
		Counters: Counters{WALBacklog: s.health.WALBacklog, InfluxQueued: s.health.InfluxQueued, Outbox: s.health.Outbox}}
	for st, n := range counts {
		sum.States[stateNames[st]] = n
	}
	if q := f.query(); q != "" {
		sum.Filter = map[string]string{}
		for k, v := range map[string]string{"kind": f.Kind, "district": f.District, "grid": f.Grid} {
			if v != "" {
				sum.Filter[k] = v
			}
		}
	}
	rows, _, firing, pending, shadow := p.episodeRows(s, f)
	sum.Firing, sum.Pending, sum.Shadow = firing, pending, shadow
	if full {
		h := s.health
		sum.Health = &h
		sum.Episodes = []SummaryEpisode{}
		for _, r := range rows {
			e := SummaryEpisode{ID: r.ID, Rule: r.Rule, Title: r.Title, State: r.State, Shadow: r.Shadow, Severity: r.Severity,
				Since: r.Since, More: r.More, Cases: r.Cases}
			for _, a := range r.Assets {
				e.Assets = append(e.Assets, a.ID)
			}
			sum.Episodes = append(sum.Episodes, e)
		}
	}
	return sum
}

func (p *Page) serveSummary(w http.ResponseWriter, r *http.Request) {
	s := p.current()
	f := p.idx.parseFilter(r.URL.Query())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(p.summary(s, &f, true)); err != nil {
		p.log.Debug("writing the status summary", "err", err)
	}
}

// serveEvents streams a summary every refresh interval as server-sent
// events ("summary"), until the client goes, or Run's context ends.
func (p *Page) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	f := p.idx.parseFilter(r.URL.Query())
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	p.m.streams.Inc()
	defer p.m.streams.Dec()
	if _, err := fmt.Fprintf(w, "retry: %d\n\n", max(p.opts.Refresh.Milliseconds(), 1000)); err != nil {
		return
	}
	send := func() error {
		b, err := json.Marshal(p.summary(p.current(), &f, false))
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: summary\ndata: %s\n\n", b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if send() != nil {
		return
	}
	t := time.NewTicker(p.opts.Refresh)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-p.stopped:
			return
		case <-t.C:
			if send() != nil {
				return
			}
		}
	}
}

type assetData struct {
	pageData
	State       string
	StateClass  string
	LastSeen    time.Time
	SilentAfter string
	Reading     bool
	ReadingTime time.Time
	Fields      []fieldRow
	Rules       []ruleRow
	Record      []kv
}

type fieldRow struct {
	Name, Value, Unit string
	Spark             template.HTML
	SparkNote         string
}

type ruleRow struct {
	rules.AssetRule
	Cases []caseLink
}

type kv struct{ K, V string }

// serveAsset renders one asset's page, or with ?partial=1 its live part.
func (p *Page) serveAsset(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	a := p.opts.Inventory.Lookup(id)
	if a == nil {
		http.Error(w, "no asset "+strconv.Quote(id)+" in the inventory", http.StatusNotFound)
		return
	}
	s := p.current()
	st := s.state[a.Seq]
	d := &assetData{pageData: pageData{Title: a.ID + " · " + a.Kind, Back: "../", CSS: template.CSS(css), Script: p.script(assetScript),
		Now: s.at, Loc: p.opts.loc()},
		State: st.String(), StateClass: stateClass[st], SilentAfter: durText(time.Duration(p.idx.silentNs[a.Seq])),
		Record: record(a)}
	if p.opts.Seen != nil {
		p.mu.Lock()
		if a.Seq < len(p.seen) && p.seen[a.Seq] != 0 {
			d.LastSeen = time.Unix(0, p.seen[a.Seq])
		}
		p.mu.Unlock()
	}
	if p.opts.Rules != nil {
		if rd, ok := p.opts.Rules.LastReading(a.ID); ok {
			d.Reading, d.ReadingTime = true, rd.Time
			if d.LastSeen.IsZero() || rd.Received.After(d.LastSeen) {
				d.LastSeen = rd.Received
			}
			d.Fields = fieldRows(a, rd.Values)
		}
		addSparks(d, a, histories(p.opts.Rules, a))
		for _, ar := range p.opts.Rules.AssetRules(a.ID) {
			rr := ruleRow{AssetRule: ar}
			if ar.EpisodeID != "" {
				rr.Cases = caseLinks(s.cases[ar.EpisodeID])
			}
			d.Rules = append(d.Rules, rr)
		}
	}
	htmlHeaders(w)
	names := []string{"asset"}
	if r.URL.Query().Get("partial") == "" {
		names = []string{"head", "live-start", "asset", "live-end", "foot"}
	}
	for _, n := range names {
		if err := templates.ExecuteTemplate(w, n, d); err != nil {
			p.log.Warn("rendering an asset page", "asset", a.ID, "err", err)
			return
		}
	}
}

func fieldRows(a *devices.Asset, vals []devices.Value) []fieldRow {
	if a.Schema == nil {
		return nil
	}
	var rows []fieldRow
	for i, f := range a.Schema.Fields {
		if i >= len(vals) || !vals[i].Valid() {
			continue
		}
		v := vals[i]
		text := v.String()
		if v.Type == devices.Float {
			text = strconv.FormatFloat(v.F, 'f', -1, 64)
			if math.Abs(v.F) >= 0.01 {
				text = strconv.FormatFloat(math.Round(v.F*1000)/1000, 'f', -1, 64)
			}
		}
		rows = append(rows, fieldRow{Name: f.Name, Value: text, Unit: f.Unit})
	}
	return rows
}

// history is one field's samples for a sparkline and where they come from.
type history struct {
	field   string
	samples []rules.Sample
	source  string
}

// histories picks a history per numeric field, in schema order: the rule
// engine's window history (every reading within the longest window a rule
// reads the field through) when it holds at least as many samples as the
// display history (the field's last readings, kept for every field), else
// the display history.
func histories(rv RuleView, a *devices.Asset) []history {
	wf, ws := rv.AssetHistory(a.ID)
	df, ds := rv.DisplayHistory(a.ID)
	return pickHistories(a.Schema, wf, ws, df, ds)
}

func pickHistories(schema *devices.Schema, wf []string, ws [][]rules.Sample, df []string, ds [][]rules.Sample) []history {
	byName := map[string]history{}
	for i, f := range df {
		byName[f] = history{f, ds[i], "recent readings"}
	}
	for i, f := range wf {
		if h, ok := byName[f]; !ok || len(ws[i]) >= len(h.samples) {
			byName[f] = history{f, ws[i], "rule window"}
		}
	}
	var out []history
	if schema != nil {
		for _, f := range schema.Fields {
			if h, ok := byName[f.Name]; ok {
				out = append(out, h)
				delete(byName, f.Name)
			}
		}
	}
	for _, f := range append(df, wf...) { // fields outside the schema, if any
		if h, ok := byName[f]; ok {
			out = append(out, h)
			delete(byName, f)
		}
	}
	return out
}

// addSparks attaches a sparkline to each field with history, adding a row
// for a field the last reading lacked.
func addSparks(d *assetData, a *devices.Asset, hs []history) {
	for _, h := range hs {
		name, ss := h.field, h.samples
		ts, vs := make([]int64, len(ss)), make([]float64, len(ss))
		for j, s := range ss {
			ts[j], vs[j] = s.Time.UnixNano(), s.Value.Float64()
		}
		spark := sparkline(ts, vs)
		if spark == "" {
			continue
		}
		note := fmt.Sprintf("%d samples over %s · %s", len(ss), durText(time.Duration(ts[len(ts)-1]-ts[0])), h.source)
		found := false
		for k := range d.Fields {
			if d.Fields[k].Name == name {
				d.Fields[k].Spark, d.Fields[k].SparkNote, found = spark, note, true
			}
		}
		if !found {
			unit := ""
			if a.Schema != nil {
				if j, ok := a.Schema.Index(name); ok {
					unit = a.Schema.Fields[j].Unit
				}
			}
			last := ss[len(ss)-1].Value.String()
			d.Fields = append(d.Fields, fieldRow{Name: name, Value: last, Unit: unit, Spark: spark, SparkNote: note})
		}
	}
}

// record is the asset's inventory entry as rows.
func record(a *devices.Asset) []kv {
	out := []kv{{"id", a.ID}, {"kind", a.Kind}, {"profile", a.Model}}
	switch {
	case a.Modbus != nil:
		m := a.Modbus
		v := "Modbus " + m.Endpoint() + " unit " + strconv.Itoa(int(m.Unit))
		if m.Interval > 0 {
			v += " every " + m.Interval.String()
		}
		out = append(out, kv{"transport", v})
	case a.MQTT != nil:
		out = append(out, kv{"transport", "MQTT " + a.MQTT.Topic})
	}
	pos := strconv.FormatFloat(a.Lat, 'f', 6, 64) + ", " + strconv.FormatFloat(a.Lon, 'f', 6, 64)
	if a.CRS != "" {
		pos += " (" + a.CRS + ")"
	}
	out = append(out, kv{"position", pos}, kv{"district", a.District}, kv{"grid", a.Grid}, kv{"code", a.Code})
	keys := make([]string, 0, len(a.Attrs))
	for k := range a.Attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, kv{k, a.Attr(k)})
	}
	return out
}
