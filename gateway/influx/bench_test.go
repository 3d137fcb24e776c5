package influx

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
)

// BenchmarkEncode measures Append for one reading of each shipped kind.
func BenchmarkEncode(b *testing.B) {
	inv, readings := testCity(b)
	e := NewEncoder("gw-1")
	e.Prepare(inv)
	buf := make([]byte, 0, 8192)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		buf = buf[:0]
		for _, r := range readings {
			buf = e.Append(buf, r)
		}
	}
	points := float64(b.N * len(readings))
	b.ReportMetric(points/b.Elapsed().Seconds(), "points/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/points, "ns/point")
	b.SetBytes(int64(len(buf)))
}

// BenchmarkDecodeToLine measures the whole path from what a device sent to
// a line of line protocol: one MQTT waste-bin payload (DecodeJSON into a
// reused Reading, then Append), and one Modbus streetlight poll (DecodeModbus
// of every field from the poll's raw responses, then Append). One operation
// is one point, so allocs/op is allocations per point.
func BenchmarkDecodeToLine(b *testing.B) {
	inv := testInventory(b)
	e := NewEncoder("gw-1")
	e.Prepare(inv)

	b.Run("mqtt_waste_bin", func(b *testing.B) {
		bin := inv.Lookup("bin-0042")
		payload := []byte(`{"ts":1764130000123,"fill":{"pct":73.5,"dist_cm":31},"temp_c":21.5,` +
			`"tilt_deg":2.0,"lid_open":false,"battery":{"pct":88,"v":3.61},` +
			`"radio":{"rssi":-87,"snr":7.5},"fw":"3.1.4"}`)
		r := &devices.Reading{}
		buf := make([]byte, 0, 1024)
		now := time.Now()
		decode := func() {
			r.Reset(bin)
			r.Received = now
			ts, err := bin.Profile.DecodeJSON(payload, r)
			if err != nil {
				b.Fatal(err)
			}
			r.Time = ts
			buf = e.Append(buf[:0], r)
		}
		decode()
		if r.NumValid() != len(bin.Profile.Fields) || len(buf) == 0 {
			b.Fatalf("decoded %d of %d fields: %s", r.NumValid(), len(bin.Profile.Fields), buf)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			decode()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "points/s")
	})

	b.Run("modbus_streetlight", func(b *testing.B) {
		lamp := inv.Lookup("lamp-0001")
		raw := streetlightPoll(b, lamp.Profile)
		r := &devices.Reading{}
		buf := make([]byte, 0, 1024)
		now := time.Now()
		ts := lamp.Profile.TimestampIndex
		decode := func() {
			r.Reset(lamp)
			r.Received = now
			for i := range lamp.Profile.Fields {
				f := &lamp.Profile.Fields[i]
				v, err := f.DecodeModbus(raw[f.Table], 0)
				if err != nil {
					b.Fatal(err)
				}
				r.Values[f.Index] = v
			}
			r.Time = time.Unix(r.Values[lamp.Profile.Fields[ts].Index].I, 0)
			buf = e.Append(buf[:0], r)
		}
		decode()
		if r.NumValid() != len(lamp.Profile.Fields) || len(buf) == 0 {
			b.Fatalf("decoded %d of %d fields: %s", r.NumValid(), len(lamp.Profile.Fields), buf)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			decode()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "points/s")
	})
}

// streetlightPoll returns the raw payloads of one poll of a citylight-slc200,
// one read per table from address 0 (what the request planner coalesces
// this profile into), as the bytes of the Modbus responses.
func streetlightPoll(b *testing.B, p *devices.Profile) map[devices.Table][]byte {
	b.Helper()
	values := map[string]devices.Value{
		"relay_on": devices.BoolValue(true), "tilt_alarm": devices.BoolValue(false),
		"dim_level": devices.IntValue(80), "firmware": devices.StringValue("2.1.07"),
		"voltage_v": devices.FloatValue(230.1), "current_a": devices.FloatValue(0.652),
		"power_w": devices.FloatValue(148.3), "energy_kwh": devices.FloatValue(1234.56),
		"lamp_hours": devices.IntValue(17532), "ambient_lux": devices.IntValue(3),
		"tilt_deg": devices.FloatValue(-1.2), "fault": devices.StringValue("ok"),
		"temperature_c": devices.FloatValue(31.5), "power_factor": devices.FloatValue(0.96),
		"device_time": devices.IntValue(1764130000),
	}
	raw := map[devices.Table][]byte{}
	for i := range p.Fields {
		f := &p.Fields[i]
		v, ok := values[f.Name]
		if !ok {
			b.Fatalf("no test value for %s", f.Name)
		}
		if f.Table.IsBit() {
			need := int(f.Address)/8 + 1
			for len(raw[f.Table]) < need {
				raw[f.Table] = append(raw[f.Table], 0)
			}
			if v.Bool() {
				raw[f.Table][f.Address/8] |= 1 << (f.Address % 8)
			}
			continue
		}
		var regs []uint16
		if f.Enum != nil {
			for k, label := range f.Enum {
				if label == v.S {
					regs = []uint16{uint16(k)}
				}
			}
		} else {
			var err error
			if regs, err = f.EncodeModbus(v); err != nil {
				b.Fatalf("encoding %s: %v", f.Name, err)
			}
		}
		end := (int(f.Address) + len(regs)) * 2
		for len(raw[f.Table]) < end {
			raw[f.Table] = append(raw[f.Table], 0)
		}
		for j, reg := range regs {
			binary.BigEndian.PutUint16(raw[f.Table][(int(f.Address)+j)*2:], reg)
		}
	}
	return raw
}

// BenchmarkGzip compresses a batch of 5,000 bin lines as the writer does, at
// the default gzip_level (1) and at the library default (6): CPU per line
// against the compression ratio.
func BenchmarkGzip(b *testing.B) {
	var lines []byte
	inv := testInventory(b)
	e := NewEncoder("gw-demo-01")
	e.Prepare(inv)
	bin := inv.Lookup("bin-0042")
	r := &devices.Reading{}
	for i := range 5000 {
		r.Reset(bin)
		payload := fmt.Appendf(nil, `{"fill":{"pct":%d.5,"dist_cm":%d},"temp_c":21.%d,"tilt_deg":2.0,"lid_open":false,`+
			`"battery":{"pct":88,"v":3.61},"radio":{"rssi":-%d,"snr":7.5},"fw":"3.1.4"}`, i%90, i%200, i%10, 80+i%20)
		if _, err := bin.Profile.DecodeJSON(payload, r); err != nil {
			b.Fatal(err)
		}
		r.Time = time.Unix(1_764_130_000+int64(i), 0)
		lines = e.Append(lines, r)
	}
	for _, c := range []struct {
		name  string
		level int
	}{{"level=1", gzip.BestSpeed}, {"level=6", gzip.DefaultCompression}} {
		level := c.level
		b.Run(c.name, func(b *testing.B) {
			var out bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&out, level)
			b.SetBytes(int64(len(lines)))
			for b.Loop() {
				out.Reset()
				zw.Reset(&out)
				zw.Write(lines)
				zw.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*5000), "ns/line")
			b.ReportMetric(float64(len(lines))/float64(out.Len()), "ratio")
		})
	}
}
