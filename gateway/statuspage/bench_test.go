package statuspage

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/rules"
)

// cityInventory makes a city of n assets spread over central Shanghai in
// the seed city's mix: mostly lamps, a cabinet per 50 lamps, a few gas
// stations, bins; 16 districts, a unit grid per ~50 assets.
func cityInventory(tb testing.TB, n int) (*devices.Catalog, *devices.Inventory) {
	tb.Helper()
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	as := make([]*devices.Asset, 0, n)
	for i := 0; i < n; i++ {
		lat, lon := 31.10+rng.Float64()*0.25, 121.30+rng.Float64()*0.35
		d := fmt.Sprintf("3101%02d", 1+int((lat-31.10)/0.25*4)*4+int((lon-121.30)/0.35*4))
		grid := fmt.Sprintf("%s%05d", d, int((lat-31.10)/0.25*50)*50+int((lon-121.30)/0.35*50))
		a := &devices.Asset{Lat: lat, Lon: lon, District: d, Grid: grid}
		host := fmt.Sprintf("10.%d.%d.%d:502", i/65536, i/256%256, i%256)
		switch r := i % 1000; {
		case r < 780:
			a.ID, a.Model = fmt.Sprintf("SL-%06d", i), "citylight-slc200"
			a.Modbus = &devices.ModbusAddr{Host: host, Unit: 1}
			a.Attrs = map[string]any{"rated_power_w": 100.0, "circuit": fmt.Sprintf("C%05d", i/50), "cabinet": fmt.Sprintf("CAB%05d", i/50)}
		case r < 796:
			a.ID, a.Model = fmt.Sprintf("CAB-%06d", i), "citylight-ccu300"
			a.Modbus = &devices.ModbusAddr{Host: host, Unit: 1}
		case r < 800:
			a.ID, a.Model = fmt.Sprintf("GAS-%06d", i), "gasreg-rtu500"
			a.Modbus = &devices.ModbusAddr{Host: host, Unit: 1}
			a.Attrs = map[string]any{"pressure_min_kpa": 2.55, "pressure_max_kpa": 3.45}
		default:
			a.ID, a.Model = fmt.Sprintf("BIN-%06d", i), "binsense-ws3"
			a.MQTT = &devices.MQTTAddr{Topic: "city/bins/" + fmt.Sprint(i) + "/telemetry"}
			a.Attrs = map[string]any{"capacity_l": 240.0}
		}
		as = append(as, a)
	}
	inv, err := devices.NewInventory(cat, as)
	if err != nil {
		tb.Fatal(err)
	}
	return cat, inv
}

var (
	bigOnce sync.Once
	bigPage *Page
	bigErr  error
)

// bigCity is a page over 126,000 assets fed by the shipped rules: every
// asset reported a minute ago except 1 % silent, and 100 gas stations fire.
func bigCity(tb testing.TB) *Page {
	bigOnce.Do(func() {
		cat, inv := cityInventory(tb, 126_000)
		e, err := rules.NewEngine(rules.Options{Location: time.UTC}, cat, inv, prometheus.NewRegistry(), nil)
		if err != nil {
			bigErr = err
			return
		}
		files := []string{"../../configs/rules/streetlight.yaml", "../../configs/rules/cabinet.yaml",
			"../../configs/rules/gas_station.yaml", "../../configs/rules/waste_bin.yaml"}
		if err := e.Load(files...); err != nil {
			bigErr = err
			return
		}
		fired := 0
		for i, a := range inv.Assets {
			switch {
			case a.Kind == "gas_station" && fired < 100:
				fireGasPressure(tb, e, inv, a.ID, base)
				fired++
			case i%100 == 7:
				report(tb, e, inv, a.ID, base.Add(-time.Hour))
			default:
				report(tb, e, inv, a.ID, base.Add(-time.Minute))
			}
		}
		clk := &clock{t: base}
		bigPage, bigErr = New(Options{Inventory: inv, Rules: e, ModbusInterval: 10 * time.Second, Now: clk.now,
			Refresh: time.Hour}, prometheus.NewRegistry(), nil)
	})
	if bigErr != nil {
		tb.Fatal(bigErr)
	}
	return bigPage
}

// discard is a ResponseWriter that counts and drops the body.
type discard struct {
	h http.Header
	n int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { d.n += len(b); return len(b), nil }
func (d *discard) WriteHeader(int)             {}

func benchRoute(b *testing.B, path string, gzip bool) {
	p := bigPage
	h := p.Handler()
	req := httptest.NewRequest("GET", path, nil)
	if gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	w := &discard{h: http.Header{}}
	h.ServeHTTP(w, req)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w.n = 0
		clear(w.h)
		h.ServeHTTP(w, req)
	}
	b.ReportMetric(float64(w.n), "body-bytes")
}

// BenchmarkCityPage renders the city page of 126,000 assets from a
// current state (what every viewer pays); the state's refresh is
// BenchmarkRefresh.
func BenchmarkCityPage(b *testing.B) {
	bigCity(b)
	for _, c := range []struct {
		name, path string
		gzip       bool
	}{
		{"all-binned", "/", false},
		{"all-binned-gzip", "/", true},
		{"district-binned", "/?district=310106", false},
		{"bins-binned-no-episodes", "/?kind=waste_bin", false},
		{"gas-points", "/?kind=gas_station", false},
		{"grid-points", "/?grid=31010600000", false},
		{"partial-binned", "/?partial=1", false},
	} {
		b.Run(c.name, func(b *testing.B) { benchRoute(b, c.path, c.gzip) })
	}
}

func BenchmarkSummary(b *testing.B) {
	bigCity(b)
	benchRoute(b, "/api/summary", false)
}

func BenchmarkAssetPage(b *testing.B) {
	p := bigCity(b)
	var id string
	for _, a := range p.opts.Inventory.Assets {
		if a.Kind == "gas_station" {
			id = a.ID
			break
		}
	}
	benchRoute(b, "/assets/"+id, false)
}

// BenchmarkRefresh classifies 126,000 assets (once per refresh interval,
// shared by all requests).
func BenchmarkRefresh(b *testing.B) {
	p := bigCity(b)
	b.ReportAllocs()
	for b.Loop() {
		p.snap.Store(nil)
		p.refresh()
	}
}

// TestBigCity checks the 126,000-asset page: binned, every asset counted,
// the firing stations on top, and a bounded number of allocations per
// request whatever the number of assets.
func TestBigCity(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 126,000-asset city")
	}
	p := bigCity(t)
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	s := p.current()
	if s.counts[Firing] != 100 || s.counts[Silent] < 1000 || s.counts[Reporting] < 120_000 {
		t.Errorf("state counts %v", s.counts)
	}
	// Allocations grow with the episodes listed (template execution), not
	// with the assets: 23,000 bins binned with no episode allocate little.
	h := p.Handler()
	allocs := func(path string) float64 {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		w := &discard{h: http.Header{}}
		return testing.AllocsPerRun(5, func() { h.ServeHTTP(w, req) })
	}
	if n := allocs("/?kind=waste_bin"); n > 1000 {
		t.Errorf("the binned map of 23,000 bins makes %v allocations", n)
	}
	if n, eps := allocs("/"), len(s.episodes); n > 1000+150*float64(eps) {
		t.Errorf("the city page of 126,000 assets and %d episodes makes %v allocations", eps, n)
	}
	body := get(t, srv.URL+"/")
	cs := circles(body)
	if len(cs) != 100 {
		t.Errorf("%d circles over the binned map, want the 100 firing stations", len(cs))
	}
	for id, st := range cs {
		if st != "firing" {
			t.Errorf("%s drawn as %s", id, st)
		}
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil {
			break
		}
	}
	return string(b)
}
