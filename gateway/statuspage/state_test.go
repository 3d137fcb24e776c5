package statuspage

import (
	"context"
	"math"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/pipeline"
	"github.com/citygw/citygw/rules"
)

func TestClassify(t *testing.T) {
	const min = int64(time.Minute)
	now := base.UnixNano()
	start := now - 60*min
	tests := []struct {
		name   string
		seen   int64
		silent int64
		start  int64
		flags  uint8
		want   State
	}{
		{"recent reading", now - min, 10 * min, start, 0, Reporting},
		{"exactly at the threshold", now - 10*min, 10 * min, start, 0, Reporting},
		{"past the threshold", now - 10*min - 1, 10 * min, start, 0, Silent},
		{"threshold from a long interval", now - 20*min, 30 * min, start, 0, Reporting},
		{"never seen, gateway young", 0, 10 * min, now - 5*min, 0, Waiting},
		{"never seen, gateway old", 0, 10 * min, start, 0, Silent},
		{"firing wins over silent", now - 90*min, 10 * min, start, flagFiring, Firing},
		{"firing wins over pending", now, 10 * min, start, flagFiring | flagPending, Firing},
		{"firing wins over shadow", now, 10 * min, start, flagFiring | flagShadow, Firing},
		{"pending", now, 10 * min, start, flagPending, Pending},
		{"pending wins over shadow", now, 10 * min, start, flagPending | flagShadow, Pending},
		{"shadow only", now, 10 * min, start, flagShadow, Shadow},
		{"shadow and never seen", 0, 10 * min, start, flagShadow, Shadow},
		{"reading from the future", now + min, 10 * min, start, 0, Reporting},
	}
	for _, tt := range tests {
		if got := classify(tt.seen, now, tt.silent, tt.start, tt.flags); got != tt.want {
			t.Errorf("%s: classify = %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestSilenceThreshold(t *testing.T) {
	iv := func(d time.Duration) *devices.ModbusAddr {
		return &devices.ModbusAddr{Host: "h:502", Interval: yamlDur(d)}
	}
	tests := []struct {
		name string
		a    *devices.Asset
		def  time.Duration
		want time.Duration
	}{
		{"mqtt: the configured minimum", &devices.Asset{MQTT: &devices.MQTTAddr{Topic: "t"}}, 2 * time.Second, 10 * time.Minute},
		{"fast modbus: the minimum", &devices.Asset{Modbus: iv(5 * time.Second)}, 0, 10 * time.Minute},
		{"slow modbus: 3 intervals", &devices.Asset{Modbus: iv(15 * time.Minute)}, 0, 45 * time.Minute},
		{"modbus without interval: the poller default", &devices.Asset{Modbus: iv(0)}, 5 * time.Minute, 15 * time.Minute},
	}
	for _, tt := range tests {
		if got := silenceThreshold(tt.a, tt.def, 10*time.Minute); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestMarkEpisodes(t *testing.T) {
	_, inv := demo(t)
	flags := make([]uint8, inv.Len())
	markEpisodes(flags, []rules.Episode{
		{Rule: "a", State: rules.Firing, Assets: []string{"GAS-001", "unknown"}},
		{Rule: "b", State: rules.Pending, Assets: []string{"GAS-001", "GAS-002"}},
		{Rule: "c", State: rules.Firing, Shadow: true, Assets: []string{"BIN-0001"}},
		{Rule: "d", State: rules.Inactive, Assets: []string{"BIN-0002"}},
	}, inv)
	want := map[string]uint8{"GAS-001": flagFiring | flagPending, "GAS-002": flagPending, "BIN-0001": flagShadow}
	for i, a := range inv.Assets {
		if flags[i] != want[a.ID] {
			t.Errorf("%s: flags %b, want %b", a.ID, flags[i], want[a.ID])
		}
	}
}

func TestFilters(t *testing.T) {
	_, inv := demo(t)
	ix := newIndex(inv, 2*time.Second, 10*time.Minute)
	count := func(q string) (n int, ids map[string]bool) {
		v, err := url.ParseQuery(q)
		if err != nil {
			t.Fatal(err)
		}
		f := ix.parseFilter(v)
		ids = map[string]bool{}
		for i, a := range inv.Assets {
			if ix.match(&f, i) {
				n++
				ids[a.ID] = true
			}
		}
		return n, ids
	}
	// Ground truth from the inventory itself.
	truth := func(keep func(a *devices.Asset) bool) int {
		n := 0
		for _, a := range inv.Assets {
			if keep(a) {
				n++
			}
		}
		return n
	}
	grid := inv.Lookup("GAS-001").Grid
	tests := []struct {
		q    string
		want int
	}{
		{"", inv.Len()},
		{"kind=streetlight", 48},
		{"kind=cabinet", 4},
		{"kind=gas_station", 5},
		{"kind=waste_bin", 100},
		{"kind=nope", 0},
		{"district=310101", truth(func(a *devices.Asset) bool { return a.District == "310101" })},
		{"district=999999", 0},
		{"grid=" + grid, truth(func(a *devices.Asset) bool { return a.Grid == grid })},
		{"kind=gas_station&grid=" + grid, truth(func(a *devices.Asset) bool { return a.Grid == grid && a.Kind == "gas_station" })},
		{"kind=waste_bin&district=310101", truth(func(a *devices.Asset) bool { return a.District == "310101" && a.Kind == "waste_bin" })},
		{"kind=&district=&grid=", inv.Len()},
	}
	for _, tt := range tests {
		if n, _ := count(tt.q); n != tt.want {
			t.Errorf("filter %q matches %d, want %d", tt.q, n, tt.want)
		}
	}
	if _, ids := count("kind=gas_station&grid=" + grid); !ids["GAS-001"] {
		t.Error("GAS-001 not in its own grid and kind")
	}
}

func TestProjection(t *testing.T) {
	lats := []float64{31.20, 31.25, 31.20, 31.25}
	lons := []float64{121.40, 121.40, 121.50, 121.50}
	p := fit(lats, lons)
	for i := range lats {
		x, y := p.xy(lats[i], lons[i])
		if x < mapMargin-0.01 || x > mapWidth-mapMargin+0.01 || y < mapMargin-0.01 || y > p.height-mapMargin+0.01 {
			t.Errorf("(%v,%v) -> (%v,%v) outside the %vx%v map", lats[i], lons[i], x, y, mapWidth, p.height)
		}
	}
	// North up, east right.
	x0, y0 := p.xy(31.20, 121.40)
	x1, y1 := p.xy(31.25, 121.50)
	if !(x1 > x0 && y1 < y0) {
		t.Errorf("orientation: SW (%v,%v) NE (%v,%v)", x0, y0, x1, y1)
	}
	// Equirectangular: a degree of longitude is cos(lat) of a degree of latitude.
	w, h := x1-x0, y0-y1
	wantRatio := 0.10 * math.Cos(31.225*math.Pi/180) / 0.05
	if math.Abs(w/h-wantRatio) > 1e-9 {
		t.Errorf("aspect %v, want %v", w/h, wantRatio)
	}
	// One point: a small box around it, the point in the middle.
	q := fit([]float64{31.2}, []float64{121.4})
	x, y := q.xy(31.2, 121.4)
	if math.Abs(x-mapWidth/2) > 1 || math.Abs(y-q.height/2) > 1 || math.IsNaN(x) {
		t.Errorf("single point at (%v,%v) of %vx%v", x, y, mapWidth, q.height)
	}
	// Cells cover the map and clamp outside positions.
	if c := q.cell(-5, -5); c != 0 {
		t.Errorf("cell of a position outside = %d", c)
	}
	if c := q.cell(mapWidth+5, q.height+5); c != q.rows*binCols-1 || c >= maxCells {
		t.Errorf("cell of the far corner = %d (rows %d)", c, q.rows)
	}
}

func TestTracker(t *testing.T) {
	tr := NewTracker(3)
	tr.Seen(1, base)
	tr.Seen(1, base.Add(-time.Minute)) // late reading: ignored
	tr.Seen(7, base)                   // out of range: ignored
	tr.Seen(-1, base)
	got := tr.LastSeen(nil)
	if len(got) != 3 || got[0] != 0 || got[1] != base.UnixNano() || got[2] != 0 {
		t.Errorf("LastSeen = %v", got)
	}
	if n := testing.AllocsPerRun(100, func() { tr.Seen(2, base) }); n != 0 {
		t.Errorf("Seen allocates %v", n)
	}
	if n := testing.AllocsPerRun(100, func() { got = tr.LastSeen(got) }); n != 0 {
		t.Errorf("LastSeen allocates %v", n)
	}
	// As the pipeline's evaluator: the receive time, else the sample time.
	_, inv := demo(t)
	tr2 := NewTracker(inv.Len())
	a, b := inv.Lookup("GAS-001"), inv.Lookup("BIN-0001")
	tr2.Eval(context.Background(), &devices.Reading{Asset: a, Time: base, Received: base.Add(time.Second)})
	tr2.Eval(context.Background(), &devices.Reading{Asset: b, Time: base})
	tr2.Eval(context.Background(), &devices.Reading{})
	if s := tr2.LastSeen(nil); s[a.Seq] != base.Add(time.Second).UnixNano() || s[b.Seq] != base.UnixNano() {
		t.Errorf("Eval recorded %d and %d", s[a.Seq], s[b.Seq])
	}
	var _ pipeline.Evaluator = tr2

	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				tr.Seen(0, base.Add(time.Duration(g*1000+i)))
			}
		}(g)
	}
	wg.Wait()
	if got := tr.LastSeen(nil)[0]; got != base.Add(3999).UnixNano() {
		t.Errorf("after concurrent Seen: %d, want the latest", got)
	}
}
