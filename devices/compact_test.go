package devices

import (
	"fmt"
	"reflect"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// TestCompactAssets checks that a loaded inventory shares what its assets
// repeat — equal attribute sets, kinds, districts, grids — and changes no
// value, from YAML and from CSV.
func TestCompactAssets(t *testing.T) {
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	bin := func(n int, attrs string) string {
		return fmt.Sprintf("  - id: BIN-%04d\n    profile: binsense-ws3\n    mqtt: {topic: city/bins/BIN-%04d/telemetry}\n"+
			"    lat: 31.2\n    lon: 121.4\n    district: \"310101\"\n    grid: \"31010100103\"\n    attrs: %s\n", n, n, attrs)
	}
	yamlSrc := invHead + bin(1, `{capacity_l: 240, route: R2}`) + bin(2, `{route: R2, capacity_l: 240.0}`) +
		bin(3, `{capacity_l: 1100, route: R2}`) + bin(4, `{capacity_l: "240", route: R2}`) + bin(5, `{capacity_l: 240, route: "R2 "}`)
	csvSrc := "id,profile,transport,lat,lon,district,grid,attrs\n" +
		"BIN-0001,binsense-ws3,mqtt:city/bins/BIN-0001/telemetry,31.2,121.4,310101,31010100103,capacity_l=240;route=R2\n" +
		"BIN-0002,binsense-ws3,mqtt:city/bins/BIN-0002/telemetry,31.2,121.4,310101,31010100103,route=R2;capacity_l=240.0\n" +
		"BIN-0003,binsense-ws3,mqtt:city/bins/BIN-0003/telemetry,31.2,121.4,310101,31010100103,capacity_l=1100;route=R2\n" +
		"BIN-0004,binsense-ws3,mqtt:city/bins/BIN-0004/telemetry,31.2,121.4,310101,31010100103,capacity_l=240;route=R2\n" +
		"BIN-0005,binsense-ws3,mqtt:city/bins/BIN-0005/telemetry,31.2,121.4,310101,31010100103,capacity_l=240;route=R3\n"
	for _, tc := range []struct {
		name  string
		parse func() (*Inventory, error)
		// which of the five bins share bin 1's attribute map
		shared []bool
		route5 string
	}{
		{"yaml", func() (*Inventory, error) { return ParseInventoryYAML("inv.yaml", []byte(yamlSrc), cat) }, []bool{true, true, false, true, false}, "R2 "},
		{"csv", func() (*Inventory, error) { return ParseInventoryCSV("inv.csv", []byte(csvSrc), cat) }, []bool{true, true, false, true, false}, "R3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := tc.parse()
			if err != nil {
				t.Fatal(err)
			}
			if inv.Len() != 5 {
				t.Fatalf("%d assets", inv.Len())
			}
			first := inv.Assets[0]
			for i, a := range inv.Assets {
				same := reflect.ValueOf(a.Attrs).UnsafePointer() == reflect.ValueOf(first.Attrs).UnsafePointer()
				if same != tc.shared[i] {
					t.Errorf("%s: attrs shared with %s = %v, want %v (%v vs %v)", a.ID, first.ID, same, tc.shared[i], a.Attrs, first.Attrs)
				}
				if unsafe.StringData(a.District) != unsafe.StringData(first.District) || unsafe.StringData(a.Grid) != unsafe.StringData(first.Grid) ||
					unsafe.StringData(a.Kind) != unsafe.StringData(first.Kind) {
					t.Errorf("%s: district, grid or kind not interned", a.ID)
				}
				if want := fmt.Sprintf("BIN-%04d", i+1); a.ID != want || a.MQTT.Topic != "city/bins/"+want+"/telemetry" || inv.ByTopic(a.MQTT.Topic) != a {
					t.Errorf("asset %d: id %q topic %q", i, a.ID, a.MQTT.Topic)
				}
			}
			if c := inv.Assets[2].AttrFloat("capacity_l"); c != 1100 {
				t.Errorf("bin 3 capacity %v", c)
			}
			if c := first.AttrFloat("capacity_l"); c != 240 || first.Attr("route") != "R2" {
				t.Errorf("bin 1 attrs %v", first.Attrs)
			}
			if r := inv.Assets[4].Attr("route"); r != tc.route5 {
				t.Errorf("bin 5 route %q, want %q", r, tc.route5)
			}
		})
	}
}

func TestAttrsKey(t *testing.T) {
	for _, tc := range []struct {
		a, b  map[string]any
		equal bool
	}{
		{map[string]any{"x": 1.0, "y": "a"}, map[string]any{"y": "a", "x": 1.0}, true},
		{map[string]any{"x": 1.0}, map[string]any{"x": "1"}, false},
		{map[string]any{"x": true}, map[string]any{"x": "true"}, false},
		{map[string]any{"x": 1.0}, map[string]any{"x": 1.0, "y": 2.0}, false},
		{map[string]any{"xy": "z"}, map[string]any{"x": "yz"}, false},
		{map[string]any{"x": "a;\"y\"sb"}, map[string]any{"x": "a", "y": "b"}, false},
	} {
		ka, oka := attrsKey(nil, tc.a)
		kb, okb := attrsKey(nil, tc.b)
		if !oka || !okb || (string(ka) == string(kb)) != tc.equal {
			t.Errorf("%v vs %v: keys %q %q, want equal %v", tc.a, tc.b, ka, kb, tc.equal)
		}
	}
	if _, ok := attrsKey(nil, map[string]any{"x": []int{1}}); ok {
		t.Error("a slice attribute has a key")
	}
}

// BenchmarkInventoryRetained loads a city of waste bins written as
// firmware-sim writes them and reports the heap the inventory keeps
// (after a GC) per asset: what a gateway pays for knowing its assets.
func BenchmarkInventoryRetained(b *testing.B) {
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		b.Fatal(err)
	}
	const n = 20000
	var src strings.Builder
	src.WriteString("assets:\n")
	for i := range n {
		fmt.Fprintf(&src, "  - id: BIN-%06d\n    kind: waste_bin\n    profile: binsense-ws3\n    mqtt:\n      topic: city/bins/BIN-%06d/telemetry\n"+
			"    lat: %.6f\n    lon: %.6f\n    crs: wgs84\n    district: \"310101\"\n    grid: \"3101010010%d\"\n    code: \"3101010305%06d\"\n"+
			"    attrs:\n      capacity_l: %d.0\n      route: R%d\n",
			i, i, 31.2+float64(i%997)*1e-4, 121.4+float64(i%991)*1e-4, i%4+1, i, []int{120, 240, 660, 1100}[i%4], i%7+1)
	}
	data := []byte(src.String())
	b.ResetTimer()
	var perAsset float64
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		inv, err := ParseInventoryYAML("city.yaml", data, cat)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perAsset = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(inv)
	}
	b.ReportMetric(perAsset, "B/asset")
}

// cityYAML is an inventory of n bins in plain block style (split into
// chunks), all in one district and grid with the same attributes.
func cityYAML(n int) []byte {
	var b strings.Builder
	b.WriteString(invHead)
	for i := range n {
		fmt.Fprintf(&b, "  - id: BIN-%06d\n    profile: binsense-ws3\n    mqtt: {topic: city/bins/BIN-%06d/telemetry}\n"+
			"    lat: 31.2\n    lon: 121.4\n    district: \"310101\"\n    grid: \"31010100103\"\n    attrs: {capacity_l: 240, route: R2}\n", i, i)
	}
	return []byte(b.String())
}

// The YAML parser compacts chunk by chunk, in parallel, with one compactor:
// assets of different chunks share too.
func TestCompactAcrossChunks(t *testing.T) {
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	n := 3*inventoryChunk + 17
	inv, err := ParseInventoryYAML("city.yaml", cityYAML(n), cat)
	if err != nil {
		t.Fatal(err)
	}
	first := inv.Assets[0]
	for _, i := range []int{inventoryChunk, 2*inventoryChunk + 1, n - 1} {
		a := inv.Assets[i]
		if reflect.ValueOf(a.Attrs).UnsafePointer() != reflect.ValueOf(first.Attrs).UnsafePointer() ||
			unsafe.StringData(a.District) != unsafe.StringData(first.District) || unsafe.StringData(a.Grid) != unsafe.StringData(first.Grid) {
			t.Errorf("%s (chunk %d) shares nothing with %s (chunk 0)", a.ID, i/inventoryChunk, first.ID)
		}
		if a.ID != fmt.Sprintf("BIN-%06d", i) || a.AttrFloat("capacity_l") != 240 {
			t.Errorf("asset %d: %s, capacity %v", i, a.ID, a.AttrFloat("capacity_l"))
		}
	}
}

// BenchmarkParseInventoryYAML loads a 20,000-bin inventory and reports the
// largest live heap the collector saw during the load (peak-live-MB) next
// to what the inventory keeps (live-MB). Compacting only at the end kept
// every chunk's decoder allocations alive until then: at 126,000 bins the
// gateway's start-up peaked at 280-313 MB RSS, 188-194 MB with each chunk
// compacted as it is decoded.
func BenchmarkParseInventoryYAML(b *testing.B) {
	cat, err := LoadBuiltinCatalog()
	if err != nil {
		b.Fatal(err)
	}
	data := cityYAML(20000)
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	live := func() float64 {
		metrics.Read(sample)
		return float64(sample[0].Value.Uint64())
	}
	var peak, kept float64
	for b.Loop() {
		runtime.GC()
		base := live()
		stop, done := make(chan struct{}), make(chan float64)
		go func() { // the live heap changes at the end of each collection
			m := 0.0
			for {
				m = max(m, live())
				select {
				case <-stop:
					done <- m
					return
				case <-time.After(100 * time.Microsecond):
				}
			}
		}()
		inv, err := ParseInventoryYAML("city.yaml", data, cat)
		close(stop)
		m := <-done
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		peak = max(peak, m-base)
		kept = live() - base
		runtime.KeepAlive(inv)
	}
	b.ReportMetric(peak/1e6, "peak-live-MB")
	b.ReportMetric(kept/1e6, "live-MB")
}
