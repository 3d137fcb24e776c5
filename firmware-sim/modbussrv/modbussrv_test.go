package modbussrv_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	gmodbus "github.com/goburrow/modbus"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/firmware-sim/city"
	"github.com/citygw/citygw/firmware-sim/faults"
	"github.com/citygw/citygw/firmware-sim/modbussrv"
	"github.com/citygw/citygw/firmware-sim/sim"
	"github.com/citygw/citygw/gateway/testenv"
)

// startCity runs configs/city-small.yaml in process on free ports, with
// simulated time from start.
func startCity(t *testing.T, start string) (*sim.Engine, *city.City) {
	t.Helper()
	conf, err := city.LoadConfig("../../configs/city-small.yaml")
	if err != nil {
		t.Fatal(err)
	}
	conf.Start = start
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	c, err := city.Generate(conf, cat)
	if err != nil {
		t.Fatal(err)
	}
	addrs := make([]string, len(c.Ports))
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	}
	if err := c.SetPortAddrs(addrs); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	simStart, _ := time.Parse(time.RFC3339, start)
	e := sim.New(c, sim.Options{Speed: 1, SimStart: simStart, History: 5 * time.Minute, Log: log})
	e.Start()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go e.Run(ctx)
	units := e.Units()
	for _, addr := range c.Ports {
		s, err := modbussrv.New(addr, units[addr], modbussrv.Options{ConverterTimeout: 50 * time.Millisecond, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Stop() })
	}
	return e, c
}

var mbpollLine = regexp.MustCompile(`^\[(\d+)\]:\s+(-?\d+)`)

// mbpoll reads count values of a table with the mbpoll tool, 0-based.
func mbpoll(t *testing.T, tool, host string, unit int, table devices.Table, addr, count int) []uint16 {
	t.Helper()
	h, port, _ := net.SplitHostPort(host)
	typ := map[devices.Table]string{devices.Coil: "0", devices.Discrete: "1", devices.Input: "3", devices.Holding: "4"}[table]
	args := []string{"-m", "tcp", "-a", strconv.Itoa(unit), "-0", "-r", strconv.Itoa(addr), "-c", strconv.Itoa(count), "-t", typ, "-p", port, "-1", h}
	out, err := exec.Command(tool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mbpoll %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var words []uint16
	for _, line := range strings.Split(string(out), "\n") {
		m := mbpollLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		v, _ := strconv.ParseUint(m[2], 10, 16)
		words = append(words, uint16(v))
	}
	if len(words) != count {
		t.Fatalf("mbpoll %s: got %d values, want %d\n%s", strings.Join(args, " "), len(words), count, out)
	}
	return words
}

// decodeWords decodes the profile's fields of table from words read at addr.
func decodeWords(t *testing.T, p *devices.Profile, table devices.Table, addr uint16, words []uint16) map[string]any {
	t.Helper()
	var data []byte
	if table.IsBit() {
		data = make([]byte, (len(words)+7)/8)
		for i, w := range words {
			if w != 0 {
				data[i/8] |= 1 << (i % 8)
			}
		}
	} else {
		data = make([]byte, 2*len(words))
		for i, w := range words {
			binary.BigEndian.PutUint16(data[2*i:], w)
		}
	}
	out := map[string]any{}
	for i := range p.Fields {
		f := &p.Fields[i]
		if f.Table != table || f.Address < addr || int(f.Address)+f.Registers > int(addr)+len(words) {
			continue
		}
		v, err := f.DecodeModbus(data, addr)
		if err != nil {
			t.Fatalf("decoding %s: %v", f.Name, err)
		}
		out[f.Name] = v.Any()
	}
	return out
}

// truthAt returns what the device served at device time unix.
func truthAt(t *testing.T, e *sim.Engine, asset string, unix int64) map[string]any {
	t.Helper()
	h, err := e.History(asset, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range h.Samples {
		if s.UnixMs == unix*1000 {
			return s.Values
		}
	}
	t.Fatalf("%s: no ground truth at device time %d", asset, unix)
	return nil
}

func compare(t *testing.T, asset string, got, truth map[string]any) {
	t.Helper()
	if len(got) == 0 {
		t.Fatalf("%s: nothing decoded", asset)
	}
	for name, v := range got {
		if truth[name] != v {
			t.Errorf("%s.%s: read %v (%T), ground truth %v (%T)", asset, name, v, v, truth[name], truth[name])
		}
	}
}

// TestMbpollReadsGroundTruth reads registers with the third-party mbpoll
// client and checks they decode to exactly the simulator's ground truth.
func TestMbpollReadsGroundTruth(t *testing.T) {
	tool := testenv.RequireTool(t, "mbpoll", "sudo apt-get install mbpoll")
	e, c := startCity(t, "2026-01-15T21:30:00+08:00")
	for _, id := range []string{"SL-001-02", "SL-002-04", "CAB-002", "GAS-002"} {
		a := c.Inventory.Lookup(id)
		p, unit, host := a.Profile, int(a.Modbus.Unit), a.Modbus.Host
		tsField := p.Fields[p.TimestampIndex]
		for attempt := 0; ; attempt++ {
			// The table with the device clock, read before and after the
			// others: if the clock did not move, all reads saw one image.
			read := func(table devices.Table) map[string]any {
				var n int
				for i := range p.Fields {
					if f := &p.Fields[i]; f.Table == table {
						n = max(n, int(f.Address)+f.Registers)
					}
				}
				if n == 0 {
					return map[string]any{}
				}
				if !table.IsBit() && n > 40 { // the cabinet's clock lives at 100: read it alone
					lo := map[string]any{}
					for k, v := range decodeWords(t, p, table, 0, mbpoll(t, tool, host, unit, table, 0, 15)) {
						lo[k] = v
					}
					for k, v := range decodeWords(t, p, table, 100, mbpoll(t, tool, host, unit, table, 100, 2)) {
						lo[k] = v
					}
					return lo
				}
				return decodeWords(t, p, table, 0, mbpoll(t, tool, host, unit, table, 0, n))
			}
			first := read(tsField.Table)
			got := map[string]any{}
			for _, table := range []devices.Table{devices.Coil, devices.Discrete, devices.Input, devices.Holding} {
				if table != tsField.Table {
					for k, v := range read(table) {
						got[k] = v
					}
				}
			}
			last := read(tsField.Table)
			if first[tsField.Name] != last[tsField.Name] && attempt < 5 {
				continue // a tick happened between the reads
			}
			for k, v := range last {
				got[k] = v
			}
			unix := last[tsField.Name].(int64)
			if d := time.Since(time.Unix(unix, 0)); d < 0 || d > 3*time.Second {
				t.Errorf("%s: device time %d is %v from the wall clock", id, unix, d)
			}
			if len(got) != len(p.Fields) {
				t.Errorf("%s: read %d of %d fields", id, len(got), len(p.Fields))
			}
			compare(t, id, got, truthAt(t, e, id, unix))
			break
		}
	}
}

func client(t *testing.T, host string, unit uint8, timeout time.Duration) gmodbus.Client {
	t.Helper()
	h := gmodbus.NewTCPClientHandler(host)
	h.SlaveId, h.Timeout = unit, timeout
	if err := h.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return gmodbus.NewClient(h)
}

func exceptionCode(err error) byte {
	var me *gmodbus.ModbusError
	if errors.As(err, &me) {
		return me.ExceptionCode
	}
	return 0
}

// TestFaultReplies checks what a gateway's Modbus client (goburrow) sees
// from faulty devices and from the converter.
func TestFaultReplies(t *testing.T) {
	e, c := startCity(t, "2026-01-15T21:30:00+08:00")
	lamp := c.Inventory.Lookup("SL-001-01")
	host := lamp.Modbus.Host
	cl := client(t, host, lamp.Modbus.Unit, 2*time.Second)
	if b, err := cl.ReadInputRegisters(0, 22); err != nil || len(b) != 44 {
		t.Fatalf("healthy read: %v", err)
	}
	if _, err := cl.ReadInputRegisters(0, 23); exceptionCode(err) != 2 {
		t.Errorf("read past the map: %v, want exception 2", err)
	}
	if _, err := cl.WriteSingleRegister(0, 50); exceptionCode(err) != 1 {
		t.Errorf("write: %v, want exception 1", err)
	}
	if _, err := client(t, host, 200, time.Second).ReadInputRegisters(0, 1); exceptionCode(err) != 0x0b {
		t.Errorf("unknown unit: %v, want exception 0x0B", err)
	}

	add := func(sp faults.Spec) string {
		f, err := e.AddFault(sp)
		if err != nil {
			t.Fatal(err)
		}
		return f.ID
	}
	id := add(faults.Spec{Kind: faults.Silent, Asset: "SL-001-01"})
	if _, err := cl.ReadInputRegisters(0, 22); exceptionCode(err) != 0x0b {
		t.Errorf("silent: %v, want exception 0x0B", err)
	}
	neighbour := client(t, host, c.Inventory.Lookup("SL-001-02").Modbus.Unit, time.Second)
	if _, err := neighbour.ReadInputRegisters(0, 22); err != nil {
		t.Errorf("neighbour of a silent lamp: %v", err)
	}
	e.RemoveFault(id)
	id = add(faults.Spec{Kind: faults.ModbusException, Asset: "SL-001-01", Params: map[string]any{"code": 6.0}})
	if _, err := cl.ReadCoils(0, 1); exceptionCode(err) != 6 {
		t.Errorf("modbus_exception: %v, want exception 6", err)
	}
	e.RemoveFault(id)
	id = add(faults.Spec{Kind: faults.SlowReply, Asset: "SL-001-01", Params: map[string]any{"delay": "800ms"}})
	slow := client(t, host, lamp.Modbus.Unit, 300*time.Millisecond)
	if _, err := slow.ReadInputRegisters(0, 22); err == nil || exceptionCode(err) != 0 {
		t.Errorf("slow_reply past the client timeout: %v, want a timeout", err)
	}
	patient := client(t, host, lamp.Modbus.Unit, 3*time.Second)
	start := time.Now()
	if _, err := patient.ReadInputRegisters(0, 22); err != nil || time.Since(start) < 800*time.Millisecond {
		t.Errorf("slow_reply within the client timeout: %v after %v", err, time.Since(start))
	}
	e.RemoveFault(id)

	// A dead circuit: its lamps stop answering, the cabinet reports no
	// current on it with the contactor still closed.
	add(faults.Spec{Kind: faults.CircuitDead, Asset: "CAB-001-C2"})
	var dead, live *devices.Asset
	for _, l := range c.Lamps {
		if l.CircuitID == "CAB-001-C2" && dead == nil {
			dead = l.Asset
		}
		if l.CircuitID == "CAB-001-C1" && live == nil {
			live = l.Asset
		}
	}
	if _, err := client(t, host, dead.Modbus.Unit, time.Second).ReadInputRegisters(0, 22); exceptionCode(err) != 0x0b {
		t.Errorf("lamp on a dead circuit: %v, want exception 0x0B", err)
	}
	if _, err := client(t, host, live.Modbus.Unit, time.Second).ReadInputRegisters(0, 22); err != nil {
		t.Errorf("lamp on a live circuit: %v", err)
	}
	time.Sleep(1100 * time.Millisecond) // the next tick computes the cabinet's currents
	cab := c.Inventory.Lookup("CAB-001")
	cc := client(t, host, cab.Modbus.Unit, time.Second)
	in, err := cc.ReadInputRegisters(0, 15)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := cc.ReadHoldingRegisters(0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if c2 := binary.BigEndian.Uint16(in[24:]); c2 != 0 {
		t.Errorf("dead circuit current register %d, want 0", c2)
	}
	if c1 := binary.BigEndian.Uint16(in[22:]); c1 == 0 {
		t.Error("live circuit carries no current at night")
	}
	if hr[1]&0b11 != 0b11 {
		t.Errorf("contactors %08b, want circuits 1 and 2 closed at night", hr[1])
	}
}
