package citybench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/firmware-sim/loadgen"
	"github.com/citygw/citygw/gateway/config"
)

func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// The benchmark gives Telegraf citygw's batching; its defaults must be the
// shipped configuration's.
func TestDefaultsMatchShippedGatewayConfig(t *testing.T) {
	t.Setenv("CITYGW_DESK_API_KEY", "x")
	t.Setenv("CITYGW_DESK_WEBHOOK_SECRET", "x")
	c, err := config.Load(filepath.Join(repoRoot(t), "configs", "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.InfluxDB.BatchSize != DefaultBatchSize || c.InfluxDB.FlushInterval.D() != DefaultFlushInterval {
		t.Errorf("configs/gateway.yaml batches %d lines / %v; citybench defaults %d / %v",
			c.InfluxDB.BatchSize, c.InfluxDB.FlushInterval.D(), DefaultBatchSize, DefaultFlushInterval)
	}
}

// The benchmark's gateway configuration is a valid configuration with the
// shipped rules, the WAL on, no cases, no Modbus and no per-asset cap.
func TestGatewayTemplate(t *testing.T) {
	dir := t.TempDir()
	c, err := loadgen.BinsCity(filepath.Join(repoRoot(t), "configs", "city-demo.yaml"), 3, "")
	if err != nil {
		t.Fatal(err)
	}
	inv := filepath.Join(dir, "inventory.yaml")
	if err := c.WriteInventory(inv); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "gateway.yaml")
	err = renderTemplate(filepath.Join(repoRoot(t), "configs", "bench", "gateway.yaml"), file, map[string]any{
		"GatewayID": gatewayID, "DataDir": filepath.Join(dir, "data with space"), "Inventory": inv, "Admin": "127.0.0.1:1",
		"InfluxURL": "http://127.0.0.1:2", "Bucket": "citygw/autogen", "BatchSize": 1234, "FlushInterval": "2s",
		"Broker": "tcp://127.0.0.1:3", "ClientID": citygwClientID, "Rules": filepath.Join(repoRoot(t), "configs", "rules", "*.yaml"),
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cases != nil || cfg.Modbus != nil || !cfg.WAL.On() {
		t.Errorf("cases %v, modbus %v, wal on %v: want no cases, no modbus, the WAL on", cfg.Cases, cfg.Modbus, cfg.WAL.On())
	}
	if cfg.MQTT == nil || cfg.MQTT.MaxMessagesPerAsset >= 0 || cfg.MQTT.ClientID != citygwClientID {
		t.Errorf("mqtt %+v: want the per-asset cap off and client id %s", cfg.MQTT, citygwClientID)
	}
	if cfg.InfluxDB.BatchSize != 1234 || cfg.InfluxDB.FlushInterval.D() != 2*time.Second || cfg.Gateway.DataDir != filepath.Join(dir, "data with space") {
		t.Errorf("influxdb %d/%v, data dir %q", cfg.InfluxDB.BatchSize, cfg.InfluxDB.FlushInterval.D(), cfg.Gateway.DataDir)
	}
	if len(cfg.Rules.Files) != 1 || !strings.HasSuffix(cfg.Rules.Files[0], filepath.Join("configs", "rules", "*.yaml")) {
		t.Errorf("rules %v", cfg.Rules.Files)
	}
}

func TestMosquittoTemplate(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "m.conf")
	if err := renderTemplate(filepath.Join(repoRoot(t), "configs", "bench", "mosquitto.conf"), dst, map[string]any{"Port": 1234, "Root": false}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	for _, want := range []string{"listener 1234 127.0.0.1\n", "max_queued_messages 0\n", "log_type subscribe\n", "log_dest stderr\n"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("mosquitto.conf lacks %q:\n%s", want, b)
		}
	}
	if bytes.Contains(b, []byte("user root")) {
		t.Error("user root without Root")
	}
}

func TestSampleProc(t *testing.T) {
	s0, err := SampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s0.PeakRSS <= 0 || s0.CPU < 0 {
		t.Fatalf("sample %+v", s0)
	}
	// Burn CPU until the kernel's accounting (10 ms ticks) shows it.
	deadline := time.Now().Add(60 * time.Second)
	x := 0
	for {
		for i := 0; i < 1e7; i++ {
			x += i
		}
		s, err := SampleProc(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if s.CPU > s0.CPU {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time did not grow: %v then %v (%d)", s0.CPU, s.CPU, x)
		}
	}
	if _, err := SampleProc(1 << 30); err == nil {
		t.Error("sampling a process that does not exist succeeded")
	}
}

func TestReport(t *testing.T) {
	r := &Report{Scenario: "burst", Date: time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC), Params: map[string]any{"messages": 100},
		Systems: []*SystemResult{
			{System: SysCeiling, Points: 100, Seconds: 1, PointsPerS: 100, Procs: []ProcResult{{Role: "system", CPUSeconds: 1, CPUPerMillion: 10000, PeakRSSMB: 10}}},
			{System: SysCitygw, Points: 100, Seconds: 2, PointsPerS: 50, Procs: []ProcResult{{Role: "system", CPUSeconds: 1, CPUPerMillion: 10000, PeakRSSMB: 50}, {Role: "broker", CPUPerMillion: 5000}}},
			{System: SysTelegraf, Points: 100, Seconds: 4, PointsPerS: 25, Procs: []ProcResult{{Role: "system", CPUSeconds: 4, CPUPerMillion: 40000, PeakRSSMB: 200}}},
		}}
	r.ComputeRatios()
	want := map[string]float64{"citygw/telegraf points_per_s": 2, "citygw/ceiling points_per_s": 0.5,
		"citygw/telegraf cpu_per_million": 0.25, "citygw/telegraf peak_rss": 0.25}
	for k, v := range want {
		if r.Ratios[k] != v {
			t.Errorf("ratio %s = %v, want %v", k, r.Ratios[k], v)
		}
	}
	var b bytes.Buffer
	r.Markdown(&b)
	for _, line := range []string{
		"| citygw | 100 | 2.0 | 50 | 1.0 | 10000.0 | 50 | 5000.0 | – | – |",
		"| citygw/telegraf points_per_s | 2.00 |",
	} {
		if !strings.Contains(b.String(), line+"\n") {
			t.Errorf("table lacks %q:\n%s", line, b.String())
		}
	}
	// A failed Telegraf run gives no Telegraf ratios.
	r.Systems[2].Error = "points missing"
	r.ComputeRatios()
	if _, ok := r.Ratios["citygw/telegraf points_per_s"]; ok || len(r.Ratios) != 1 {
		t.Errorf("ratios with a failed telegraf: %v", r.Ratios)
	}
}

func TestNewRejectsUnknownSystem(t *testing.T) {
	_, err := New(context.Background(), Options{Repo: repoRoot(t), Work: t.TempDir(), Systems: []string{"citygw", "vector"}})
	if err == nil || !strings.Contains(err.Error(), `unknown system "vector"`) {
		t.Fatalf("err %v", err)
	}
}
