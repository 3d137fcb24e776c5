package sim

import (
	"encoding/binary"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/firmware-sim/city"
	"github.com/citygw/citygw/firmware-sim/faults"
)

func newEngine(t testing.TB, cabinets, lamps, gas, bins int) (*Engine, *city.City) {
	t.Helper()
	conf, err := city.LoadConfig("../../configs/city-small.yaml")
	if err != nil {
		t.Fatal(err)
	}
	conf.Streetlights.Cabinets, conf.Streetlights.LampsPerCabinet, conf.Gas.Stations, conf.Bins.Count = &cabinets, &lamps, &gas, &bins
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	c, err := city.Generate(conf, cat)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 1, 15, 21, 0, 0, 0, c.Loc)
	e := New(c, Options{Speed: 60, SimStart: start, WallStart: time.Now().Truncate(time.Second), History: time.Minute,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return e, c
}

// readAll reads every table of the device as a client would and decodes the
// profile's fields.
func readAll(t *testing.T, d *Device) (map[string]any, int64) {
	t.Helper()
	out := map[string]any{}
	for ti, table := range tables {
		n := d.off[ti+1] - d.off[ti]
		if n == 0 {
			continue
		}
		words, r := d.Read(table, 0, uint16(n))
		if r.Silent || r.Exception != 0 {
			t.Fatalf("%s: reply %+v", d.Asset.ID, r)
		}
		data := make([]byte, 2*n)
		if table.IsBit() {
			data = make([]byte, (n+7)/8)
		}
		for i, w := range words {
			if table.IsBit() {
				if w != 0 {
					data[i/8] |= 1 << (i % 8)
				}
			} else {
				binary.BigEndian.PutUint16(data[2*i:], w)
			}
		}
		for i := range d.Profile.Fields {
			if f := &d.Profile.Fields[i]; f.Table == table {
				v, err := f.DecodeModbus(data, 0)
				if err != nil {
					t.Fatalf("%s.%s: %v", d.Asset.ID, f.Name, err)
				}
				out[f.Name] = v.Any()
			}
		}
	}
	return out, out["device_time"].(int64)
}

func TestTruthIsWhatIsServed(t *testing.T) {
	e, c := newEngine(t, 2, 5, 3, 0)
	w := time.Now().Truncate(time.Second)
	for k := 0; k < 3; k++ {
		e.Tick(w.Add(time.Duration(k) * time.Second))
	}
	truth, err := e.Truth("", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(truth.Assets) != len(e.byID) {
		t.Fatalf("truth has %d assets, want %d", len(truth.Assets), len(e.byID))
	}
	for _, s := range truth.Assets {
		got, dt := readAll(t, e.byID[s.Asset])
		if dt != w.Add(2*time.Second).Unix() || s.UnixMs != dt*1000 || !s.Answering {
			t.Errorf("%s: device time %d, truth %d, answering %v", s.Asset, dt, s.UnixMs, s.Answering)
		}
		if len(got) != len(s.Values) {
			t.Errorf("%s: %d fields read, %d in truth", s.Asset, len(got), len(s.Values))
		}
		for k, v := range got {
			if s.Values[k] != v {
				t.Errorf("%s.%s: served %v, truth %v", s.Asset, k, v, s.Values[k])
			}
		}
	}
	// At 21:00 the lamps are on and the cabinets meter their current.
	lamp, _ := e.Truth("SL-001-01", "")
	if v := lamp.Assets[0].Values; v["relay_on"] != true || v["current_a"].(float64) < 0.2 {
		t.Errorf("lamp at night: %v", v)
	}
	h, err := e.History("SL-001-01", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Samples) != 3 || h.Samples[0].UnixMs != w.UnixMilli() || h.Samples[2].UnixMs != w.Add(2*time.Second).UnixMilli() {
		t.Fatalf("history: %+v", h.Samples)
	}
	e1, e3 := h.Samples[0].Values["energy_kwh"].(float64), h.Samples[2].Values["energy_kwh"].(float64)
	if e3 < e1 {
		t.Errorf("energy went down: %v then %v", e1, e3)
	}
	if _, err := e.Truth("SL-009-01", ""); err == nil {
		t.Error("truth of an unknown asset")
	}
	if k, _ := e.Truth("", "gas_station"); len(k.Assets) != len(c.Gas) {
		t.Errorf("kind filter: %d gas stations", len(k.Assets))
	}
}

// TestImageSwapIsAtomic reads a device while it ticks: every read must be
// exactly the image of one tick.
func TestImageSwapIsAtomic(t *testing.T) {
	e, _ := newEngine(t, 1, 2, 0, 0)
	d := e.byID["SL-001-01"]
	w := time.Now().Truncate(time.Second)
	e.Tick(w)
	var reads [][]uint16
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			words, _ := d.Read(devices.Input, 0, 22)
			reads = append(reads, words)
		}
	}()
	for k := 1; k < 50; k++ {
		e.Tick(w.Add(time.Duration(k) * time.Second))
	}
	close(stop)
	wg.Wait()
	images := map[int64][]uint16{}
	d.hist.each(func(ts int64, _ bool, words []uint16) {
		images[ts] = slices.Clone(words[d.off[2]:d.off[3]])
	})
	for _, r := range reads {
		ts := int64(r[20])<<16 | int64(r[21])
		if img, ok := images[ts]; !ok || !slices.Equal(img, r) {
			t.Fatalf("read %v is not the image of tick %d: %v", r, ts, img)
		}
	}
	if len(reads) == 0 {
		t.Fatal("no reads")
	}
}

func TestFaultsChangeReplies(t *testing.T) {
	e, _ := newEngine(t, 1, 4, 1, 2)
	w := time.Now().Truncate(time.Second)
	e.Tick(w)
	d := e.byID["SL-001-02"]
	f, err := e.AddFault(faults.Spec{Kind: faults.Silent, Asset: "SL-001-02"})
	if err != nil {
		t.Fatal(err)
	}
	if _, r := d.Read(devices.Input, 0, 1); !r.Silent {
		t.Errorf("silent lamp replied %+v", r)
	}
	e.Tick(w.Add(time.Second))
	h, _ := e.History("SL-001-02", 0)
	if last := h.Samples[len(h.Samples)-1]; last.Answering {
		t.Error("history says the silent lamp answered")
	}
	e.RemoveFault(f.ID)
	if _, r := d.Read(devices.Input, 0, 1); r.Silent {
		t.Error("still silent after the fault was removed")
	}
	if _, err := e.AddFault(faults.Spec{Kind: faults.ModbusException, Asset: "GAS-001"}); err != nil {
		t.Fatal(err)
	}
	if _, r := e.byID["GAS-001"].Read(devices.Holding, 0, 30); r.Exception != 4 {
		t.Errorf("exception reply %+v, want code 4", r)
	}
	if _, err := e.AddFault(faults.Spec{Kind: faults.LampOut, Asset: "GAS-001"}); err == nil {
		t.Error("lamp_out accepted on a gas station")
	}
	// Bins: a silent bin yields no message; a malformed one is kept in the
	// truth with its decode error.
	if _, ok := e.Message(0, time.Now(), nil); !ok {
		t.Fatal("bin 0 did not publish")
	}
	e.AddFault(faults.Spec{Kind: faults.Silent, Asset: e.bins[0].Bin.Asset.ID})
	if _, ok := e.Message(0, time.Now(), nil); ok {
		t.Error("silent bin published")
	}
	e.AddFault(faults.Spec{Kind: faults.MalformedPayload, Asset: e.bins[1].Bin.Asset.ID})
	if _, ok := e.Message(1, time.Now(), nil); !ok {
		t.Fatal("malformed bin did not publish")
	}
	tr, _ := e.Truth(e.bins[1].Bin.Asset.ID, "")
	if s := tr.Assets[0]; s.Errors["payload"] == "" || s.Payload == "" {
		t.Errorf("malformed message truth: %+v", s)
	}
	st := e.Stats()
	if st.Modbus.Exceptions != 1 || st.Modbus.NoReply != 1 || st.Faults != 3 {
		t.Errorf("stats: %+v", st.Modbus.DeviceStats)
	}
}

// BenchmarkTick steps a city of 2,000 Modbus devices (100 cabinets × 19
// lamps and 100 gas stations) by one second.
func BenchmarkTick(b *testing.B) {
	e, c := newEngine(b, 100, 19, 100, 0)
	w := time.Now().Truncate(time.Second)
	e.Tick(w)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w = w.Add(time.Second)
		e.Tick(w)
	}
	b.ReportMetric(float64(len(c.Lamps)+len(c.Cabinets)+len(c.Gas)), "devices")
}

// BenchmarkMessage builds one bin message.
func BenchmarkMessage(b *testing.B) {
	e, _ := newEngine(b, 0, 0, 0, 1000)
	buf := make([]byte, 0, 512)
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		buf, _ = e.Message(i%1000, now.Add(time.Duration(i)*time.Millisecond), buf[:0])
	}
}
