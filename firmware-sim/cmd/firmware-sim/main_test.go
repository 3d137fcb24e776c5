package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/testenv"
)

const pkg = "github.com/citygw/citygw/firmware-sim/cmd/firmware-sim"

func TestInventoryCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "inv.yaml")
	var stdout strings.Builder
	err := inventoryCmd([]string{"-city", "../../../configs/city-small.yaml", "-o", out, "-bins", "3", "-lamps", "6", "-modbus-base-port", "16000"}, &stdout)
	if err != nil {
		t.Fatal(err)
	}
	cat, _ := devices.LoadBuiltinCatalog()
	inv, err := devices.LoadInventory(out, cat)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Len() != 2+2*6+2+3 || inv.Lookup("SL-002-06") == nil || inv.Lookup("BIN-0003") == nil || inv.Lookup("BIN-0004") != nil {
		t.Errorf("inventory has %d assets", inv.Len())
	}
	if h := inv.Lookup("CAB-001").Modbus.Host; h != "127.0.0.1:16000" {
		t.Errorf("CAB-001 at %s", h)
	}
	if err := inventoryCmd([]string{"-city", "nope.yaml"}, &stdout); err == nil {
		t.Error("missing config accepted")
	}
	if err := inventoryCmd([]string{"-city", "../../../configs/city-small.yaml", "-lamps", "300"}, &stdout); err == nil || !strings.Contains(err.Error(), "lamps_per_cabinet") {
		t.Errorf("300 lamps per cabinet: %v", err)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// TestRun starts the binary as the end-to-end tests do: free ports, a real
// mosquitto, the inventory written for the gateway, a scenario timeline.
func TestRun(t *testing.T) {
	broker := testenv.StartMosquitto(t)
	dir := t.TempDir()
	bin := testenv.BuildBinary(t, pkg, dir, false)
	inv := filepath.Join(dir, "inventory.yaml")
	scenario := filepath.Join(dir, "scenario.yaml")
	os.WriteFile(scenario, []byte("- {at: 0s, fault: gas_leak, asset: GAS-002, for: 1h, params: {rate_per_min: 6000}}\n"), 0o644)
	ctl := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	p := testenv.StartProcess(t, bin, "run", "-city", "../../../configs/city-small.yaml", "-modbus-base-port", "0",
		"-mqtt", broker.URL(), "-control", ctl, "-inventory-out", inv, "-mqtt-interval", "1s", "-scenario", scenario)
	if err := p.WaitOutput("ready", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`firmware-sim ready: 12 modbus devices on 3 ports .*, 10 mqtt assets \(mqtt connected to `).FindString(p.Output()); m == "" {
		t.Errorf("ready line: %s", p.Output())
	}
	cat, _ := devices.LoadBuiltinCatalog()
	iv, err := devices.LoadInventory(inv, cat)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range iv.Assets {
		if a.Modbus != nil {
			if err := testenv.WaitTCP(a.Modbus.Host, time.Second); err != nil {
				t.Errorf("%s: %v", a.ID, err)
			}
		}
	}
	base := "http://" + ctl
	var truth struct {
		Assets []struct {
			Asset  string         `json:"asset"`
			Values map[string]any `json:"values"`
		} `json:"assets"`
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		getJSON(t, base+"/truth?asset=GAS-002", &truth)
		v := truth.Assets[0].Values
		if v["alarm"] == "gas_detected" && v["methane_lel_pct"].(float64) >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("scenario gas leak not in effect: %v", v)
		}
	}
	var stats struct {
		MQTT struct {
			Attempted, Acked int64
		} `json:"mqtt"`
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		getJSON(t, base+"/stats", &stats)
		if stats.MQTT.Acked >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mqtt stats: %+v, want every bin's first message acknowledged", stats.MQTT)
		}
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		t.Errorf("no exit on SIGTERM: %v", err)
	}
}
