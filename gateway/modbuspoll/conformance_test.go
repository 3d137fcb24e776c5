package modbuspoll

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/gateway/testenv"
)

// pymodbusServer is a third-party Modbus server: pymodbus (Debian's
// python3-pymodbus) serving the tables given as JSON, over TCP or, with
// "serial" set, Modbus RTU on a serial device.
const pymodbusServer = `
import json, sys
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusSlaveContext, ModbusServerContext
cfg = json.loads(sys.argv[1])
slaves = {}
for unit, t in cfg["units"].items():
    slaves[int(unit)] = ModbusSlaveContext(
        co=ModbusSequentialDataBlock(0, t["co"]), di=ModbusSequentialDataBlock(0, t["di"]),
        hr=ModbusSequentialDataBlock(0, t["hr"]), ir=ModbusSequentialDataBlock(0, t["ir"]), zero_mode=True)
ctx = ModbusServerContext(slaves=slaves, single=False)
print("serving", flush=True)
if cfg.get("serial"):
    from pymodbus.server import StartSerialServer
    from pymodbus.transaction import ModbusRtuFramer
    StartSerialServer(context=ctx, framer=ModbusRtuFramer, port=cfg["serial"], baudrate=cfg["baud"],
                      bytesize=8, parity="N", stopbits=1, timeout=0.05)
else:
    from pymodbus.server import StartTcpServer
    StartTcpServer(context=ctx, address=("127.0.0.1", cfg["port"]))
`

type pyTables struct {
	CO []int    `json:"co"`
	DI []int    `json:"di"`
	HR []uint16 `json:"hr"`
	IR []uint16 `json:"ir"`
}

func pyUnit(u *unitState) pyTables {
	var t pyTables
	for i := range u.coils {
		t.CO = append(t.CO, b2i(u.coils[i]))
		t.DI = append(t.DI, b2i(u.discrete[i]))
	}
	t.HR = append(t.HR, u.holding[:]...)
	t.IR = append(t.IR, u.input[:]...)
	return t
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// startPymodbus starts the pymodbus server with cfg; it needs Debian's
// python3 with python3-pymodbus.
func startPymodbus(t *testing.T, cfg map[string]any) *testenv.Process {
	t.Helper()
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import pymodbus").Run(); err != nil {
		t.Fatalf("pymodbus not importable by %s (%v); install it with: apt-get install -y python3-pymodbus", py, err)
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	proc := testenv.StartProcess(t, py, "-c", pymodbusServer, string(js))
	if err := proc.WaitOutput("serving", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return proc
}

// thirdPartyUnits encodes a gas station RTU (unit 1) and a lamp controller
// (unit 2) and returns the tables and what the gateway must read.
func thirdPartyUnits(t *testing.T, cat *devices.Catalog, clock time.Time) (map[string]pyTables, map[uint8][]devices.Value, map[uint8]*devices.Profile) {
	profiles := map[uint8]*devices.Profile{1: cat.Profile("gasreg-rtu500"), 2: cat.Profile("citylight-slc200")}
	tables := map[string]pyTables{}
	want := map[uint8][]devices.Value{}
	for unit, p := range profiles {
		var u unitState
		want[unit] = encodeUnit(t, &u, p, sampleValues(t, p, int(unit)+10, clock))
		tables[fmt.Sprint(unit)] = pyUnit(&u)
	}
	return tables, want, profiles
}

// TestConformancePymodbusTCP reads a third-party Modbus TCP server.
func TestConformancePymodbusTCP(t *testing.T) {
	cat := builtin(t)
	clock := time.Now().Add(-time.Minute).Truncate(time.Second)
	tables, want, profiles := thirdPartyUnits(t, cat, clock)
	port := testenv.FreePort(t)
	startPymodbus(t, map[string]any{"port": port, "units": tables})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := testenv.WaitTCP(addr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	var assets []*devices.Asset
	for unit, p := range profiles {
		assets = append(assets, tcpAsset(t, cat, fmt.Sprint("py", unit), p.Model, addr, unit, 200*time.Millisecond, 2*time.Second))
	}
	c := newCollector()
	r := startPoller(t, Config{}, assets, c)
	waitFor(t, 30*time.Second, "2 readings of each unit", func() bool { return c.count("py1") >= 2 && c.count("py2") >= 2 })
	r.stop()
	for _, a := range assets {
		got, _ := c.last(a.ID)
		checkReading(t, got, a.Profile, want[a.Modbus.Unit])
		if !got.Time.Equal(clock) {
			t.Errorf("%s: Time %v, want the device clock %v", a.ID, got.Time, clock)
		}
	}
	if n := r.requests(t, "tcp:"+addr, resultOK); n < 12 {
		t.Errorf("requests_total{ok} = %v", n)
	}
}

// TestConformancePymodbusRTU reads pymodbus' Modbus RTU server over a
// pseudo-terminal pair made by socat: the poller's serial code path
// (goburrow's RTUClientHandler, termios, CRC framing) end to end.
func TestConformancePymodbusRTU(t *testing.T) {
	socat := testenv.RequireTool(t, "socat", "apt-get install -y socat")
	cat := builtin(t)
	dir := t.TempDir()
	gw, dev := filepath.Join(dir, "gw"), filepath.Join(dir, "dev")
	testenv.StartProcess(t, socat, "-d", "-d",
		"pty,raw,echo=0,link="+gw, "pty,raw,echo=0,link="+dev)
	waitFor(t, 10*time.Second, "the pty pair", func() bool {
		_, e1 := os.Stat(gw)
		_, e2 := os.Stat(dev)
		return e1 == nil && e2 == nil
	})
	clock := time.Now().Add(-time.Minute).Truncate(time.Second)
	tables, want, profiles := thirdPartyUnits(t, cat, clock)
	startPymodbus(t, map[string]any{"serial": dev, "baud": 19200, "units": tables})
	var assets []*devices.Asset
	for unit, p := range profiles {
		assets = append(assets, &devices.Asset{
			ID: fmt.Sprint("rtu", unit), Model: p.Model, Kind: p.Kind, Profile: p, Schema: cat.Kinds[p.Kind],
			Modbus: &devices.ModbusAddr{Serial: gw, Baud: 19200, Unit: unit},
		})
	}
	// Unit 9 is not on the line: its requests time out (a shorter timeout
	// than its neighbours': timeouts apply per request on one open port).
	p9 := cat.Profile("citylight-ccu300")
	assets = append(assets, &devices.Asset{
		ID: "rtu9", Model: p9.Model, Kind: p9.Kind, Profile: p9, Schema: cat.Kinds[p9.Kind],
		Modbus: &devices.ModbusAddr{Serial: gw, Baud: 19200, Unit: 9, Timeout: yamlconf.Duration(300 * time.Millisecond)},
	})
	c := newCollector()
	cfg := Config{DefaultInterval: 300 * time.Millisecond, DefaultTimeout: 2 * time.Second, RTU: SerialDefaults{Baud: 9600},
		BackoffMin: 500 * time.Millisecond, BackoffMax: time.Second}
	r := startPoller(t, cfg, assets, c)
	waitFor(t, 60*time.Second, "4 readings of each live unit over RTU and the missing one offline", func() bool {
		return c.count("rtu1") >= 4 && c.count("rtu2") >= 4 && r.status("rtu9").Failures >= 2
	})
	timeouts := r.requests(t, "rtu:"+gw, resultTimeout)
	r.stop()
	if c.count("rtu9") != 0 || timeouts < 2 {
		t.Errorf("missing unit: %d readings, %v timeouts; want none and >= 2", c.count("rtu9"), timeouts)
	}
	for _, a := range assets[:2] {
		got, _ := c.last(a.ID)
		checkReading(t, got, a.Profile, want[a.Modbus.Unit])
		t.Logf("over RTU: %v", &got)
	}
	if st := r.p.Status(); len(st) != 3 || st[0].Endpoint != "rtu:"+gw || st[2].Up || !strings.Contains(st[2].LastError, "no reply") {
		t.Errorf("status %+v, want three devices on endpoint rtu:%s, unit 9 down", st, gw)
	}
}
