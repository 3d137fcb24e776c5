package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	inv := filepath.Join(dir, "inv.yaml")
	os.WriteFile(inv, []byte("assets:\n  - {id: BIN-1, profile: binsense-ws3, lat: 31.2, lon: 121.5, mqtt: {topic: city/bins/BIN-1/telemetry}}\n"), 0o644)
	rules, err := filepath.Abs(filepath.Join("..", "..", "..", "configs", "rules", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(`gateway: {id: gw1}
inventory: inv.yaml
influxdb: {url: "http://127.0.0.1:8086", bucket: citygw/autogen}
mqtt: {broker: "tcp://127.0.0.1:1883", client_id: gw1, subscriptions: [{topic: "city/bins/{asset}/telemetry"}]}
rules: {files: [`+rules+`]}
`), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("gateway: {id: gw1}\ninventory: inv.yaml\ninfluxdb: {url: u, bucket: b}\nmqtt: {brokr: x}\n"), 0o644)
	noMQTT := filepath.Join(dir, "nomqtt.yaml")
	os.WriteFile(noMQTT, []byte("gateway: {id: gw1}\ninventory: inv.yaml\ninfluxdb: {url: u, bucket: b}\n"), 0o644)

	tests := []struct {
		args     []string
		code     int
		out, err string
	}{
		{nil, exitUsage, "", "Usage:"},
		{[]string{"help"}, exitOK, "gateway check", ""},
		{[]string{"version"}, exitOK, "gateway dev", ""},
		{[]string{"frobnicate"}, exitUsage, "", `unknown command "frobnicate"`},
		{[]string{"check", "-config", good}, exitOK, "1 assets (1 waste_bin)", ""},
		{[]string{"check", "-config", good}, exitOK, "rules      4 files", ""},
		{[]string{"check", "-config", bad}, exitInvalid, "", `bad.yaml:4:8: unknown field "brokr"`},
		{[]string{"check", "-config", noMQTT}, exitInvalid, "", "1 MQTT assets but the config has no mqtt section"},
		{[]string{"check", "-config", filepath.Join(dir, "missing.yaml")}, exitInvalid, "", "no such file"},
		{[]string{"check", "-nope"}, exitUsage, "", "flag provided but not defined"},
		{[]string{"check", "-help"}, exitOK, "", "-config file"},
		{[]string{"check", "extra"}, exitUsage, "", "unexpected arguments"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := run(tt.args, &out, &errb)
		if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errb.String(), tt.err) {
			t.Errorf("gateway %v: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tt.args, code, out.String(), errb.String(), tt.code, tt.out, tt.err)
		}
	}
}
