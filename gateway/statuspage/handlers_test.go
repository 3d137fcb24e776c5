package statuspage

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/rules"
)

// fixture is a page over the demo city fed by a real rule engine running
// the shipped rules: GAS-001 fires gas_station.outlet_pressure_out_of_band
// (and pressure_dropping_fast), every asset but SL-004-12 (never seen) and
// BIN-0050 (two hours ago) reported a minute ago.
type fixture struct {
	inv   *devices.Inventory
	eng   *rules.Engine
	page  *Page
	clk   *clock
	reg   *prometheus.Registry
	srv   *httptest.Server
	cases *cases
}

func newFixture(t testing.TB, mod func(*Options)) *fixture { return newFixtureWith(t, false, mod) }

// newFixtureWith also runs the case chain, when withCases, with the page
// reading the case client.
func newFixtureWith(t testing.TB, withCases bool, mod func(*Options)) *fixture {
	t.Helper()
	cat, inv := demo(t)
	f := &fixture{inv: inv, clk: &clock{t: base.Add(-time.Hour)}, reg: prometheus.NewRegistry()}
	var sink rules.Sink
	if withCases {
		f.cases = startCases(t, inv)
		sink = f.cases.client
	}
	f.eng = shippedEngine(t, cat, inv, sink)
	for _, a := range inv.Assets {
		switch a.ID {
		case "SL-004-12", "GAS-001":
		case "BIN-0050":
			report(t, f.eng, inv, a.ID, base.Add(-2*time.Hour))
		default:
			report(t, f.eng, inv, a.ID, base.Add(-time.Minute))
		}
	}
	fireGasPressure(t, f.eng, inv, "GAS-001", base)
	opts := Options{Gateway: "gw-test", Inventory: inv, Rules: f.eng, ModbusInterval: 2 * time.Second, Now: f.clk.now}
	if withCases {
		opts.Cases = f.cases.client
	}
	if mod != nil {
		mod(&opts)
	}
	var err error
	// The page starts an hour before base, so never-seen assets are silent by then.
	if f.page, err = New(opts, f.reg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	f.clk.set(base)
	f.srv = httptest.NewServer(f.page.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) get(t testing.TB, path string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(f.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// circles returns the map's circles: asset id -> state.
func circles(body string) map[string]string {
	out := map[string]string{}
	for _, m := range circleRe.FindAllStringSubmatch(body, -1) {
		if m[1] != "s-"+m[3] {
			out[m[2]] = "class " + m[1] + " does not match state " + m[3]
			continue
		}
		out[m[2]] = m[3]
	}
	return out
}

var circleRe = regexp.MustCompile(`<circle class="a (s-[a-z]+)" data-id="([^"]+)" data-state="([a-z]+)"`)

func TestCityPage(t *testing.T) {
	f := newFixture(t, nil)
	code, h, body := f.get(t, "/")
	if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") || !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("GET / = %d %v", code, h)
	}
	for _, want := range []string{"<!doctype html>", "citygw gw-test", `<svg id="map"`, `<script>`, `id="live"`,
		"gas_station.outlet_pressure_out_of_band", "调压站出口压力异常 GAS-001", "Episodes: 2 firing, 0 pending"} {
		if !strings.Contains(body, want) {
			t.Errorf("city page lacks %q", want)
		}
	}
	for _, bad := range []string{"http://", "https://", "<link rel=\"stylesheet\"", "src=\""} {
		if strings.Contains(strings.ReplaceAll(body, `xmlns="http://www.w3.org/2000/svg"`, ""), bad) {
			t.Errorf("city page refers to something outside: %q", bad)
		}
	}
	cs := circles(body)
	if len(cs) != f.inv.Len() {
		t.Errorf("%d circles, want one per asset (%d)", len(cs), f.inv.Len())
	}
	want := map[string]string{"GAS-001": "firing", "SL-004-12": "silent", "BIN-0050": "silent", "GAS-002": "reporting", "SL-001-01": "reporting"}
	for id, st := range want {
		if cs[id] != st {
			t.Errorf("%s drawn as %q, want %q", id, cs[id], st)
		}
	}
	for _, chip := range []string{`data-state="firing">1 firing`, `data-state="silent">2 silent`,
		`data-state="reporting">` + strconv.Itoa(f.inv.Len()-3) + ` reporting`} {
		if !strings.Contains(body, chip) {
			t.Errorf("city page lacks count %q", chip)
		}
	}
	// Firing assets are drawn last, on top.
	if i, j := strings.Index(body, `data-id="GAS-001"`), strings.Index(body, `data-id="GAS-002"`); i < j {
		t.Error("the firing asset is drawn under a reporting one")
	}
}

func TestCityFilters(t *testing.T) {
	f := newFixture(t, nil)
	grid := f.inv.Lookup("GAS-001").Grid
	inGrid := 0
	for _, a := range f.inv.Assets {
		if a.Grid == grid {
			inGrid++
		}
	}
	tests := []struct {
		query    string
		circles  int
		gas001   string // its state, "" when not drawn
		episodes string
	}{
		{"?kind=waste_bin", 100, "", "Episodes: 0 firing"},
		{"?kind=gas_station", 5, "firing", "Episodes: 2 firing"},
		{"?kind=gas_station&district=310101", 5, "firing", "Episodes: 2 firing"},
		{"?grid=" + grid, inGrid, "firing", "Episodes: 2 firing"},
		{"?kind=streetlight&grid=" + grid, inGrid - countKind(f.inv, grid, "streetlight", true), "", "Episodes: 0 firing"},
		{"?kind=nope", 0, "", "Episodes: 0 firing"},
		{"?district=999999", 0, "", "Episodes: 0 firing"},
	}
	for _, tt := range tests {
		code, _, body := f.get(t, "/"+tt.query)
		if code != 200 {
			t.Errorf("GET /%s = %d", tt.query, code)
			continue
		}
		cs := circles(body)
		if len(cs) != tt.circles || cs["GAS-001"] != tt.gas001 || !strings.Contains(body, tt.episodes) {
			t.Errorf("GET /%s: %d circles (want %d), GAS-001 %q (want %q), episodes heading want %q", tt.query, len(cs), tt.circles, cs["GAS-001"], tt.gas001, tt.episodes)
		}
		if !strings.Contains(body, `<a href="./">clear</a>`) {
			t.Errorf("GET /%s: no link clearing the filter", tt.query)
		}
	}
	// The filter form keeps what was chosen.
	if _, _, body := f.get(t, "/?kind=gas_station"); !strings.Contains(body, "<option selected>gas_station</option>") {
		t.Error("the kind filter is not kept selected")
	}
}

// countKind counts the assets of the grid that are (or are not) of kind.
func countKind(inv *devices.Inventory, grid, kind string, not bool) int {
	n := 0
	for _, a := range inv.Assets {
		if a.Grid == grid && (a.Kind == kind) != not {
			n++
		}
	}
	return n
}

func TestPartialAndVersion(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Refresh = time.Second })
	code, h, body := f.get(t, "/?partial=1&kind=gas_station")
	if code != 200 || strings.Contains(body, "<html") || strings.Contains(body, "<script") || !strings.Contains(body, `data-id="GAS-001"`) {
		t.Fatalf("partial = %d, %.200q", code, body)
	}
	v1 := h.Get("X-Version")
	if v1 == "" {
		t.Fatal("no X-Version")
	}
	// Nothing changed: same version, even after a refresh.
	f.clk.add(2 * time.Second)
	if _, h, _ := f.get(t, "/?partial=1"); h.Get("X-Version") != v1 {
		t.Errorf("version changed without a change: %s -> %s", v1, h.Get("X-Version"))
	}
	// GAS-002 fires: a new version once the state is refreshed.
	fireGasPressure(t, f.eng, f.inv, "GAS-002", base)
	if _, h, _ := f.get(t, "/?partial=1"); h.Get("X-Version") != v1 {
		t.Error("version changed before the refresh interval passed")
	}
	f.clk.add(2 * time.Second)
	_, h, body = f.get(t, "/?partial=1")
	if h.Get("X-Version") == v1 || circles(body)["GAS-002"] != "firing" {
		t.Errorf("after GAS-002 fired: version %s (was %s), GAS-002 %q", h.Get("X-Version"), v1, circles(body)["GAS-002"])
	}
}

func TestBinnedMap(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.MaxPoints = 20 })
	_, _, body := f.get(t, "/")
	if !strings.Contains(body, `<rect class="c `) || !strings.Contains(body, "assets binned into") {
		t.Fatal("map not binned with more assets than MaxPoints")
	}
	// The urgent assets stay visible on top of the cells; nothing else is a circle.
	cs := circles(body)
	if len(cs) != 1 || cs["GAS-001"] != "firing" {
		t.Errorf("circles over the cells: %v, want only GAS-001 firing", cs)
	}
	// Every asset is counted in exactly one cell, and the cells' states add up.
	total := 0
	perState := map[string]int{}
	for _, m := range regexp.MustCompile(`<title>(\d+) assets((?:, \d+ [a-z]+)*)</title></rect>`).FindAllStringSubmatch(body, -1) {
		n, _ := strconv.Atoi(m[1])
		total += n
		sum := 0
		for _, part := range regexp.MustCompile(`(\d+) ([a-z]+)`).FindAllStringSubmatch(m[2], -1) {
			k, _ := strconv.Atoi(part[1])
			sum += k
			perState[part[2]] += k
		}
		if sum != n {
			t.Errorf("cell %q: states add up to %d", m[0], sum)
		}
	}
	if total != f.inv.Len() || perState["firing"] != 1 || perState["silent"] != 2 {
		t.Errorf("cells hold %d assets (%v), want %d with 1 firing and 2 silent", total, perState, f.inv.Len())
	}
	// A filter small enough is drawn as circles again.
	if _, _, body := f.get(t, "/?kind=gas_station"); strings.Contains(body, `<rect class="c `) || len(circles(body)) != 5 {
		t.Error("5 gas stations are binned")
	}
	// A second request reuses the pooled counts: the same answer.
	if _, _, again := f.get(t, "/"); again != body && strings.Count(again, `<rect class="c `) != strings.Count(body, `<rect class="c `) {
		t.Error("a second binned render differs")
	}
}

func TestAssetPage(t *testing.T) {
	f := newFixture(t, nil)
	code, _, body := f.get(t, "/assets/GAS-001")
	if code != 200 {
		t.Fatalf("GET /assets/GAS-001 = %d", code)
	}
	for _, want := range []string{
		`id="state" data-state="firing"`,
		`data-rule="gas_station.outlet_pressure_out_of_band" data-state="firing"`,
		`data-rule="gas_station.pressure_dropping_fast" data-state="firing"`,
		`data-rule="gas_station.methane_alarm" data-state="inactive"`,
		"3101010135000001", "Modbus tcp:127.0.0.1:15024 unit 1", "pressure_min_kpa", // the inventory record
		"outlet_pressure_kpa", "<polyline points=", "8 samples over 4m", // last reading and the delta() window history
		`<a href="../">`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("asset page lacks %q", want)
		}
	}
	if strings.Contains(body, `data-rule="streetlight.`) {
		t.Error("a gas station is shown streetlight rules")
	}
	for path, want := range map[string]string{
		"/assets/BIN-0050":  `data-state="silent"`,
		"/assets/SL-004-12": "no reading since the gateway started",
		"/assets/GAS-002":   `data-state="reporting"`,
	} {
		if code, _, body := f.get(t, path); code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s = %d, lacks %q", path, code, want)
		}
	}
	if code, _, body := f.get(t, "/assets/GAS-001?partial=1"); code != 200 || strings.Contains(body, "<html") || !strings.Contains(body, "outlet_pressure_kpa") {
		t.Errorf("partial asset page = %d %.100q", code, body)
	}
	if code, _, _ := f.get(t, "/assets/NOPE"); code != 404 {
		t.Errorf("unknown asset = %d, want 404", code)
	}
}

func TestSummary(t *testing.T) {
	f := newFixture(t, nil)
	get := func(q string) Summary {
		t.Helper()
		code, h, body := f.get(t, "/api/summary"+q)
		if code != 200 || h.Get("Content-Type") != "application/json" {
			t.Fatalf("GET /api/summary%s = %d %s", q, code, h.Get("Content-Type"))
		}
		var s Summary
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("summary: %v\n%s", err, body)
		}
		return s
	}
	s := get("")
	if s.Gateway != "gw-test" || s.Assets != f.inv.Len() || s.Matched != f.inv.Len() || s.States["firing"] != 1 ||
		s.States["silent"] != 2 || s.Firing != 2 || s.Pending != 0 || s.Health == nil || len(s.Episodes) != 2 {
		t.Errorf("summary = %+v", s)
	}
	for _, e := range s.Episodes {
		if len(e.Assets) != 1 || e.Assets[0] != "GAS-001" || e.State != rules.Firing || e.ID == "" {
			t.Errorf("episode %+v", e)
		}
	}
	s = get("?kind=waste_bin")
	if s.Matched != 100 || s.States["firing"] != 0 || s.Firing != 0 || len(s.Episodes) != 0 || s.Filter["kind"] != "waste_bin" {
		t.Errorf("filtered summary = %+v", s)
	}
}

func TestEvents(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Refresh = 50 * time.Millisecond })
	// Real time drives the stream's ticker; the page's clock follows it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/events?kind=gas_station", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() Summary {
		t.Helper()
		var ev string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: ") && ev == "summary":
				var s Summary
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &s); err != nil {
					t.Fatal(err)
				}
				return s
			}
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return Summary{}
	}
	s := next()
	if s.Matched != 5 || s.States["firing"] != 1 || s.Health != nil || s.Episodes != nil {
		t.Errorf("first event = %+v", s)
	}
	_, h, _ := f.get(t, "/?partial=1&kind=gas_station")
	if s.Version != h.Get("X-Version") {
		t.Errorf("event version %s, page version %s", s.Version, h.Get("X-Version"))
	}
	if n := testutil.ToFloat64(f.page.m.streams); n != 1 {
		t.Errorf("open streams gauge = %v", n)
	}
	// A change reaches the stream.
	fireGasPressure(t, f.eng, f.inv, "GAS-003", base)
	for i := 0; ; i++ {
		f.clk.add(time.Second)
		if s2 := next(); s2.States["firing"] == 2 {
			if s2.Version == s.Version {
				t.Error("version unchanged after a change")
			}
			break
		}
		if i > 50 {
			t.Fatal("the change never reached the stream")
		}
	}
	// Run's end closes the stream.
	f.page.close()
	for sc.Scan() {
	}
	if ctx.Err() != nil {
		t.Error("stream still open after the page stopped")
	}
	if n := testutil.ToFloat64(f.page.m.requests.WithLabelValues("events")); n != 1 {
		t.Errorf("events requests = %v", n)
	}
}

func TestRunRefreshes(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Refresh = 20 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.page.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.CollectAndCount(f.reg, "citygw_statuspage_refresh_seconds") == 0 ||
		histCount(t, f.reg) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("Run does not refresh")
		}
		f.clk.add(time.Second)
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	select {
	case <-f.page.stopped:
	default:
		t.Error("Run's end did not stop the event streams")
	}
}

func histCount(t *testing.T, reg *prometheus.Registry) uint64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "citygw_statuspage_refresh_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Options{}, nil, nil); err == nil {
		t.Error("New without an inventory succeeded")
	}
	_, inv := demo(t)
	reg := prometheus.NewRegistry()
	if _, err := New(Options{Inventory: inv}, reg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Inventory: inv}, reg, nil); err == nil {
		t.Error("a second page on one registry succeeded (duplicate metrics)")
	}
}

// TestNoSources: a page with only an inventory works: everything waits.
func TestNoSources(t *testing.T) {
	_, inv := demo(t)
	p, err := New(Options{Inventory: inv}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	for _, path := range []string{"/", "/assets/GAS-001", "/api/summary"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s = %d", path, resp.StatusCode)
		}
		if path == "/" && (len(circles(string(b))) != inv.Len() || !strings.Contains(string(b), "not configured")) {
			t.Errorf("bare page: %d circles", len(circles(string(b))))
		}
	}
}

// TestAssetPageSparklineEveryField: every numeric field the asset reported
// gets a sparkline from the engine's display history, whether or not a rule
// reads it; a field a rule reads through a window keeps the window history
// when it holds at least as many samples.
func TestAssetPageSparklineEveryField(t *testing.T) {
	f := newFixture(t, nil)
	for i := 0; i < 20; i++ {
		feed(t, f.eng, f.inv, "SL-001-01", base.Add(time.Duration(i-20)*30*time.Second), map[string]any{
			"relay_on": i%3 == 0, "dim_level": 50 + i, "voltage_v": 220.0 + float64(i), "power_w": 90.0 - float64(i)})
	}
	_, _, body := f.get(t, "/assets/SL-001-01")
	rows := map[string]string{}
	for _, m := range regexp.MustCompile(`<tr><td>([a-z_]+)</td>(.*?)</tr>`).FindAllStringSubmatch(body, -1) {
		rows[m[1]] = m[2]
	}
	for _, field := range []string{"relay_on", "dim_level", "voltage_v", "power_w"} {
		if r := rows[field]; !strings.Contains(r, "<polyline points=") || !strings.Contains(r, "16 samples over 7m30s · recent readings") {
			t.Errorf("field %s: row %q lacks a 16-sample sparkline of recent readings", field, r)
		}
	}
	if len(rows) != 4 {
		t.Errorf("rows %v: want the four fields reported", rows)
	}
	_, _, gas := f.get(t, "/assets/GAS-001")
	if !strings.Contains(gas, "8 samples over 4m · rule window") {
		t.Error("GAS-001's outlet pressure does not show its window history")
	}
}

func TestPickHistories(t *testing.T) {
	s := &devices.Schema{Fields: []devices.SchemaField{{Name: "a", Type: devices.Float}, {Name: "b", Type: devices.Float}, {Name: "c", Type: devices.Int}}}
	n := func(k int) []rules.Sample {
		ss := make([]rules.Sample, k)
		for i := range ss {
			ss[i] = rules.Sample{Time: base.Add(time.Duration(i) * time.Second), Value: devices.FloatValue(float64(i))}
		}
		return ss
	}
	tests := []struct {
		name   string
		wf     []string
		ws     [][]rules.Sample
		df     []string
		ds     [][]rules.Sample
		expect string // field:samples:source, schema order
	}{
		{"display only", nil, nil, []string{"c", "a"}, [][]rules.Sample{n(16), n(3)}, "a:3:recent readings c:16:recent readings"},
		{"window longer", []string{"a"}, [][]rules.Sample{n(40)}, []string{"a", "b"}, [][]rules.Sample{n(16), n(16)}, "a:40:rule window b:16:recent readings"},
		{"window shorter", []string{"a"}, [][]rules.Sample{n(2)}, []string{"a"}, [][]rules.Sample{n(16)}, "a:16:recent readings"},
		{"equal: window", []string{"b"}, [][]rules.Sample{n(16)}, []string{"b"}, [][]rules.Sample{n(16)}, "b:16:rule window"},
		{"window only (display off)", []string{"c"}, [][]rules.Sample{n(5)}, nil, nil, "c:5:rule window"},
		{"none", nil, nil, nil, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, h := range pickHistories(s, tc.wf, tc.ws, tc.df, tc.ds) {
				got = append(got, fmt.Sprintf("%s:%d:%s", h.field, len(h.samples), h.source))
			}
			if g := strings.Join(got, " "); g != tc.expect {
				t.Fatalf("got %q, want %q", g, tc.expect)
			}
		})
	}
}
