package mqttsub

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices/yamlconf"
)

func yamlDur(d time.Duration) yamlconf.Duration { return yamlconf.Duration(d) }

func TestConfigValidation(t *testing.T) {
	good := Config{Broker: "tcp://127.0.0.1:1883", ClientID: "gw", Subscriptions: []Subscription{{Topic: "city/bins/{asset}/telemetry"}}}
	tests := []struct {
		name    string
		edit    func(c *Config)
		wantErr string
	}{
		{"good", func(*Config) {}, ""},
		{"ssl", func(c *Config) { c.Broker = "ssl://broker.example:8883" }, ""},
		{"websocket", func(c *Config) { c.Broker = "wss://broker.example/mqtt" }, ""},
		{"clean session without id", func(c *Config) { c.ClientID, c.CleanSession = "", true }, ""},
		{"no broker", func(c *Config) { c.Broker = "" }, "broker: required"},
		{"bad scheme", func(c *Config) { c.Broker = "http://x:1883" }, "unsupported scheme"},
		{"no host", func(c *Config) { c.Broker = "tcp://" }, "no host"},
		{"credentials in URL", func(c *Config) { c.Broker = "tcp://u:p@x:1883" }, "not in the URL"},
		{"persistent session needs id", func(c *Config) { c.ClientID = "" }, "client_id: required"},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "c.pem" }, "go together"},
		{"missing CA file", func(c *Config) { c.TLS.CAFile = "/nonexistent/ca.pem" }, "tls.ca_file"},
		{"bad qos", func(c *Config) { c.Subscriptions[0].QoS = QoS(3) }, "want 0, 1 or 2"},
		{"no subscriptions", func(c *Config) { c.Subscriptions = nil }, "no subscriptions"},
		{"bad template", func(c *Config) { c.Subscriptions[0].Topic = "a/#/b" }, "subscriptions[0]"},
		{"duplicate", func(c *Config) { c.Subscriptions = append(c.Subscriptions, c.Subscriptions[0]) }, "subscribed twice"},
		{"negative workers", func(c *Config) { c.Workers = -1 }, "must not be negative"},
	}
	inv := testInventory(t, 1)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			c.Subscriptions = append([]Subscription(nil), good.Subscriptions...)
			tt.edit(&c)
			_, err := New(c, inv, &recorder{}, prometheus.NewRegistry(), nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{Broker: "tcp://x:1", ClientID: "gw"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxPayloadBytes != 64<<10 || c.Workers < 1 || c.QueueSize != DefaultQueueSize || c.KeepAlive.D() != DefaultKeepAlive ||
		c.MaxClockSkew.D() != 5*time.Minute || c.MaxClockAge.D() != 24*time.Hour || c.RedeliverAfter.D() != DefaultRedeliverAfter {
		t.Errorf("defaults = %+v", c)
	}
	if (Subscription{}).qos() != 1 || (Subscription{QoS: QoS(0)}).qos() != 0 {
		t.Error("QoS default is not 1 or an explicit 0 is lost")
	}
}

func TestConfigFromYAML(t *testing.T) {
	src := `broker: ssl://broker.city.example:8883
client_id: gw-district-01
username: gateway
tls:
  ca_file: /etc/citygw/ca.pem
keep_alive: 20s
subscriptions:
  - topic: city/bins/{asset}/telemetry
  - topic: $share/gateways/city/lamps/{asset}/state
    qos: 0
max_payload_bytes: 32768
workers: 4
max_clock_skew: 2m
redeliver_after: 10s
`
	var c Config
	if _, err := yamlconf.Decode("gateway.yaml", []byte(src), &c); err != nil {
		t.Fatal(err)
	}
	if c.Broker != "ssl://broker.city.example:8883" || c.TLS.CAFile != "/etc/citygw/ca.pem" || c.KeepAlive.D() != 20*time.Second ||
		len(c.Subscriptions) != 2 || c.Subscriptions[1].qos() != 0 || c.Subscriptions[0].qos() != 1 || c.Workers != 4 ||
		c.MaxClockSkew.D() != 2*time.Minute || c.RedeliverAfter.D() != 10*time.Second {
		t.Errorf("decoded %+v", c)
	}
	if _, err := yamlconf.Decode("gateway.yaml", []byte("broker: tcp://x:1\npassword: hunter2\n"), &c); err == nil {
		t.Error("a password in the YAML file was accepted; it must come from the environment or a file")
	}
}

// Two subscribers (a reload) and another source share one registry.
func TestMetricsShareARegistry(t *testing.T) {
	inv := testInventory(t, 1)
	cfg := Config{Broker: "tcp://127.0.0.1:1", ClientID: "gw", Subscriptions: []Subscription{{Topic: "city/bins/{asset}/telemetry"}}}
	reg := prometheus.NewRegistry()

	// Another source (the Modbus poller) registered the shared vectors first.
	readings, decodeErrs := NewReadingsTotal(), NewDecodeErrorsTotal()
	reg.MustRegister(readings, decodeErrs)
	readings.WithLabelValues("modbus", "streetlight").Add(3)

	s1, err := New(cfg, inv, &recorder{}, reg, nil)
	if err != nil {
		t.Fatalf("first subscriber: %v", err)
	}
	s2, err := New(cfg, inv, &recorder{}, reg, nil)
	if err != nil {
		t.Fatalf("second subscriber on the same registry: %v", err)
	}
	s1.m.readings[0].Inc()
	s2.m.readings[0].Inc()
	if n := metric(t, reg, "citygw_readings_total", "source", "mqtt", "kind", "waste_bin"); n != 2 {
		t.Errorf("mqtt readings = %v, want 2 (one vector)", n)
	}
	if n := metric(t, reg, "citygw_readings_total", "source", "modbus", "kind", "streetlight"); n != 3 {
		t.Errorf("modbus readings = %v, want 3", n)
	}

	// Injected vectors are used as given, without registering.
	own := NewReadingsTotal()
	cfg.ReadingsTotal = own
	s3, err := New(cfg, inv, &recorder{}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s3.m.readings[0].Inc()
	if v := counterValue(t, own.WithLabelValues("mqtt", "waste_bin")); v != 1 {
		t.Errorf("injected vector = %v, want 1", v)
	}

	// A clashing definition is an error, not a panic.
	bad := prometheus.NewRegistry()
	bad.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "citygw_readings_total", Help: "other"}, []string{"kind"}))
	if _, err := New(Config{Broker: "tcp://x:1", ClientID: "gw", Subscriptions: cfg.Subscriptions}, inv, &recorder{}, bad, nil); err == nil {
		t.Error("New accepted a registry with a clashing citygw_readings_total")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		t.Fatalf("gather: %v", err)
	}
	return mfs[0].GetMetric()[0].GetCounter().GetValue()
}

// Run stops promptly when cancelled even if the broker never answers.
func TestRunStopsWithoutBroker(t *testing.T) {
	inv := testInventory(t, 1)
	log, buf := testLogger(t)
	s, err := New(Config{Broker: "tcp://127.0.0.1:1", ClientID: "gw", Subscriptions: []Subscription{{Topic: "a/{asset}"}},
		ConnectTimeout: yamlDur(200 * time.Millisecond)}, inv, &recorder{}, prometheus.NewRegistry(), log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if !strings.Contains(buf.String(), "connect failed") {
		t.Errorf("connection failures not logged:\n%s", buf.String())
	}
	if err := s.Run(context.Background()); err == nil {
		t.Error("second Run accepted")
	}
}
