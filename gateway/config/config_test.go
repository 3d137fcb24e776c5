package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	t.Setenv("TEST_INFLUX_TOKEN", "s3cret")
	dir := t.TempDir()
	file := filepath.Join(dir, "gw.yaml")
	src := `gateway: {id: gw1, data_dir: state}
inventory: inv.yaml
influxdb:
  url: http://127.0.0.1:8086
  bucket: citygw/autogen
  token: {env: TEST_INFLUX_TOKEN}
  batch_size: 100
  flush_interval: 250ms
mqtt:
  broker: tcp://127.0.0.1:1883
  client_id: gw1
  subscriptions: [{topic: "city/bins/{asset}/telemetry"}]
modbus:
  interval: 2s
  profiles:
    citylight-slc200: {one_request_per_field: true}
rules:
  files: [rules/*.yaml]
`
	c, err := Parse(file, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if c.Inventory != filepath.Join(dir, "inv.yaml") || c.Gateway.DataDir != filepath.Join(dir, "state") {
		t.Errorf("paths not resolved against the config dir: %q %q", c.Inventory, c.Gateway.DataDir)
	}
	if c.Gateway.Location == nil || c.Gateway.Location.String() != "Asia/Shanghai" || c.Admin.Listen != "127.0.0.1:9273" {
		t.Errorf("defaults: %+v %+v", c.Gateway, c.Admin)
	}
	wc, err := c.InfluxWriter()
	if err != nil || wc.Token != "s3cret" || wc.BatchSize != 100 || wc.FlushInterval.D().Milliseconds() != 250 {
		t.Errorf("influx writer config %+v, %v", wc, err)
	}
	if strings.Contains(c.InfluxDB.Token.String(), "s3cret") {
		t.Error("Secret.String reveals the secret")
	}
	mp := c.ModbusPoller()
	if mp.DefaultInterval.Seconds() != 2 || !*mp.Plans["citylight-slc200"].OnePerField {
		t.Errorf("modbus poller config %+v", mp)
	}
	mc, err := c.MQTTSubscriber()
	if err != nil || mc.Subscriptions[0].Topic != "city/bins/{asset}/telemetry" || mc.ClientID != "gw1" {
		t.Errorf("mqtt config %+v %v", mc, err)
	}
}

func TestParseErrors(t *testing.T) {
	ok := "gateway: {id: gw1}\ninventory: i.yaml\ninfluxdb: {url: 'http://x', bucket: b}\n"
	tests := []struct{ name, src, want string }{
		{"unknown key", ok + "admn: {}\n", `gw.yaml:4:1: unknown field "admn"`},
		{"nested unknown key", "gateway: {id: gw1, zone: x}\n", `unknown field "zone"`},
		{"missing id", "inventory: i.yaml\ninfluxdb: {url: 'http://x', bucket: b}\n", "gateway.id: required"},
		{"bad tz", "gateway: {id: g, timezone: Mars/Olympus}\ninventory: i\ninfluxdb: {url: u, bucket: b}\n", `gw.yaml:1:28: gateway.timezone: unknown time zone "Mars/Olympus"`},
		{"duplicate section", ok + "influxdb: {url: u, bucket: b, flush_interval: soon}\n", "already defined"},
		{"bad duration2", "gateway: {id: g}\ninventory: i\ninfluxdb: {url: u, bucket: b, flush_interval: soon}\n", `gw.yaml:3:47: invalid duration "soon"`},
		{"unset env", "gateway: {id: g}\ninventory: i\ninfluxdb: {url: u, bucket: b, token: {env: CITYGW_SURELY_UNSET_VAR}}\n", "influxdb.token: environment variable CITYGW_SURELY_UNSET_VAR is not set"},
		{"two secret sources", "gateway: {id: g}\ninventory: i\ninfluxdb: {url: u, bucket: b, token: {env: A, value: b}}\n", "give one of env, file or value"},
		{"mqtt without subs", ok + "mqtt: {broker: 'tcp://x:1', client_id: c}\n", "mqtt.subscriptions: at least one"},
		{"bad log level", ok + "log: {level: loud}\n", `log.level: want debug, info, warn or error, got "loud"`},
		{"bad memory limit", ok + "runtime: {memory_limit: 300MB}\n", `gw.yaml:4:25: runtime.memory_limit: want a size such as 600MiB (units B, KiB, MiB, GiB, TiB), got "300MB"`},
		{"bad gc headroom", ok + "runtime: {gc_headroom: 100KiB}\n", `gw.yaml:4:24: runtime.gc_headroom: 100KiB is under 1MiB: the collector would run all the time ("off" turns the headroom off)`},
		{"bad absence", ok + "rules: {absence: everywhere}\n", `gw.yaml:4:18: rules.absence: want local or shared, got "everywhere"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("gw.yaml", []byte(tt.src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error:\n%v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("hunter2\n"), 0o600)
	c, err := Parse(filepath.Join(dir, "gw.yaml"), []byte("gateway: {id: g}\ninventory: i\ninfluxdb: {url: u, bucket: b}\nmqtt: {broker: 'tcp://h:1', client_id: c, password: {file: pw}, subscriptions: [{topic: t}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	mc, err := c.MQTTSubscriber()
	if err != nil || mc.Password != "hunter2" {
		t.Fatalf("password %q, %v", mc.Password, err)
	}
}

func TestShippedConfigParses(t *testing.T) {
	t.Setenv("CITYGW_DESK_API_KEY", "k")
	t.Setenv("CITYGW_DESK_WEBHOOK_SECRET", "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	if _, err := Load("../../configs/gateway.yaml"); err != nil {
		t.Fatal(err)
	}
}

func TestSilences(t *testing.T) {
	ok := "gateway: {id: g}\ninventory: i\ninfluxdb: {url: u, bucket: b}\n"
	c, err := Parse("gw.yaml", []byte(ok+"rules:\n  silences:\n    - {id: relamp, assets: [SL-001-01], start: 2026-12-01T09:00:00+08:00, end: 2026-12-01T12:00:00+08:00, comment: planned}\n"))
	if err != nil || len(c.Rules.Silences) != 1 || c.Rules.EvalBudget.D().Milliseconds() != 50 {
		t.Fatalf("silences %+v, %v", c.Rules, err)
	}
	_, err = Parse("gw.yaml", []byte(ok+"rules:\n  silences:\n    - {id: bad, start: 2026-12-01T12:00:00+08:00, end: 2026-12-01T09:00:00+08:00}\n"))
	if err == nil || !strings.Contains(err.Error(), "gw.yaml:6:") {
		t.Fatalf("a silence ending before it starts: %v", err)
	}
}
