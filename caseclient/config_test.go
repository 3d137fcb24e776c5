package caseclient

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices/yamlconf"
)

func TestSampleConfigDecodesStrictly(t *testing.T) {
	data, err := os.ReadFile("testdata/cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Cases Config `yaml:"cases"`
	}
	if _, err := yamlconf.Decode("testdata/cases.yaml", data, &f); err != nil {
		t.Fatal(err)
	}
	c := f.Cases
	c.defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.RepeatInterval.D() != 4*time.Hour || c.Sinks[0].APIKey != "demo-key" || c.Sinks[1].Timeout.D() != 10*time.Second || !*c.Remind {
		t.Errorf("decoded %+v", c)
	}
	// Secrets never print.
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("config", "sink", c.Sinks[0].APIKey, "secret", c.Sinks[1].Secret)
	js, _ := json.Marshal(c.Sinks)
	for _, out := range []string{b.String(), string(js), fmt.Sprintf("%v %+v", c.Sinks, c.Sinks)} {
		if strings.Contains(out, "demo-key") || strings.Contains(out, "MDEyMzQ1") {
			t.Errorf("a secret leaked: %s", out)
		}
	}
	bad := strings.Replace(string(data), "retry_max: 5m", "retry_maximum: 5m", 1)
	if _, err := yamlconf.Decode("x.yaml", []byte(bad), &f); err == nil || !strings.Contains(err.Error(), "x.yaml:10:") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := SinkConfig{Name: "desk", Type: SinkOpen311, URL: "http://x", APIKey: "k"}
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"ok", func(*Config) {}, ""},
		{"no outbox", func(c *Config) { c.Outbox = "" }, "cases.outbox"},
		{"no sinks", func(c *Config) { c.Sinks = nil }, "cases.sinks"},
		{"duplicate name", func(c *Config) { c.Sinks = append(c.Sinks, ok) }, "unique name"},
		{"reserved name", func(c *Config) { c.Sinks[0].Name = "default" }, "unique name"},
		{"bad url", func(c *Config) { c.Sinks[0].URL = "ftp://x" }, "cases.sinks[0].url"},
		{"no api key", func(c *Config) { c.Sinks[0].APIKey = "" }, "api_key"},
		{"bad type", func(c *Config) { c.Sinks[0].Type = "email" }, "type"},
		{"bad secret", func(c *Config) {
			c.Sinks[0] = SinkConfig{Name: "h", Type: SinkWebhook, URL: "http://x", Secret: "s3cret"}
		}, "whsec_"},
	}
	for _, tc := range cases {
		c := Config{Outbox: "/tmp/x.db", Sinks: []SinkConfig{ok}}
		tc.mod(&c)
		err := c.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
