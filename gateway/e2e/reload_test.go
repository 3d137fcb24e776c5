package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReload reloads the whole deployment of a running gateway (issue 5):
// config, inventory, rules and code table with malformed YAML, unknown keys,
// duplicate ids, bad durations, invalid codes or a broken rule are refused
// with every error (file:line:col and field) while the old deployment keeps
// writing telemetry; a good change is applied by an in-process restart of
// the components and takes effect, losing nothing.
func TestReload(t *testing.T) {
	st := startStack(t)
	dir, db := st.dir, st.db
	c := startCity(t, st.simBin, dir, st.mosq.URL(), "-mqtt-interval", "1s")
	_, bins := byTransport(c.inv.Assets)
	if len(bins) < 2 {
		t.Fatalf("the small city has %d bins", len(bins))
	}
	// The gateway starts without one bin; adding it is the good change.
	added := bins[len(bins)-1]
	kept := bins[:len(bins)-1]
	full, err := os.ReadFile(c.invFile)
	if err != nil {
		t.Fatal(err)
	}
	reduced := withoutAsset(t, string(full), added.ID)
	writeFile(t, c.invFile, reduced)

	codes := filepath.Join(dir, "codes.yaml")
	shippedCodes, err := os.ReadFile(filepath.Join(repoRoot(t), "configs", "citycodes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, codes, string(shippedCodes))
	// Cases go to a webhook nobody serves: they wait in the outbox, which
	// must survive the component restart like the rest of the state.
	g := startGatewayWith(t, st.gwBin, dir, c, db, st.mosq.URL(), gatewayOptions{extra: fmt.Sprintf(`cases:
  codes: %q
  retry_base: 1s
  retry_max: 5s
  sinks: [{name: hook, type: webhook, url: "http://127.0.0.1:9/hook"}]
  secrets: {hook: {secret: {value: whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=}}}
`, codes)})
	cfgFile := filepath.Join(dir, "gateway.yaml")
	cfg, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	flowing := func(t *testing.T, what string) {
		t.Helper()
		before := g.metric(t, "citygw_pipeline_points_total")
		waitFor(t, 60*time.Second, "telemetry to keep flowing "+what, func() bool {
			return g.metric(t, "citygw_pipeline_points_total") > before
		})
		if code, body := g.get(t, "/readyz"); code != http.StatusOK {
			t.Errorf("/readyz %s: HTTP %d\n%s", what, code, body)
		}
	}
	flowing(t, "at the start")
	waitFor(t, 60*time.Second, "the left-out bin's messages to be counted as unknown", func() bool {
		return g.metric(t, "citygw_mqtt_messages_total", `result="unknown_asset"`) > 0
	})

	brokenRule := filepath.Join(g.rulesDir, "zz-broken.yaml")
	bad := []struct {
		name  string
		file  string
		bad   func(orig string) string
		wants func(orig string) []string // substrings of the answer
	}{
		{"malformed YAML in gateway.yaml", cfgFile,
			func(s string) string { return strings.Replace(s, "  timeout: 400ms", "  timeout: {400ms", 1) },
			func(s string) []string {
				return []string{fmt.Sprintf("gateway.yaml:%d:", lineOf(t, s, "  timeout: 400ms")), "flow map"}
			}},
		{"unknown key", cfgFile,
			func(s string) string {
				return strings.Replace(s, "  timeout: 400ms", "  timeout: 400ms\n  timout: 1s", 1)
			},
			func(s string) []string {
				return []string{fmt.Sprintf(`gateway.yaml:%d:3: unknown field "timout"`, lineOf(t, s, "  timeout: 400ms")+1)}
			}},
		{"duplicate asset id", c.invFile,
			func(s string) string { return s + assetBlock(t, s, kept[0].ID) },
			func(s string) []string {
				return []string{fmt.Sprintf("inventory.yaml:%d:", strings.Count(s, "\n")+1), "asset " + kept[0].ID + ".id", "duplicate asset id"}
			}},
		{"bad duration", cfgFile,
			func(s string) string { return strings.Replace(s, "  interval: 1s", "  interval: 1 sec", 1) },
			func(s string) []string {
				return []string{fmt.Sprintf("gateway.yaml:%d:", lineOf(t, s, "  interval: 1s")), `invalid duration "1 sec"`}
			}},
		{"invalid service code", codes,
			func(s string) string { return strings.Replace(s, "{default: SL-FAULT}", "{default: SL FAULT}", 1) },
			func(s string) []string {
				return []string{fmt.Sprintf("codes.yaml:%d:", lineOf(t, s, "{default: SL-FAULT}")),
					"services.streetlight_fault.service_codes.default", `invalid service_code "SL FAULT"`}
			}},
		{"broken rule file", brokenRule,
			func(string) string {
				return "rules:\n  - id: bin.broken\n    kind: waste_bin\n    when: fill_pct > \"lots\"\n    severity: minor\n    case: {service: bin_overflow, title: t}\n"
			},
			func(string) []string { return []string{"zz-broken.yaml:4:", "bin.broken"} }},
	}
	failures := 0.0
	for _, tt := range bad {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			orig, err := os.ReadFile(tt.file)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			writeFile(t, tt.file, tt.bad(string(orig)))
			defer func() {
				if orig == nil {
					os.Remove(tt.file)
				} else {
					writeFile(t, tt.file, string(orig))
				}
			}()
			code, body := g.do(t, "POST", "/-/reload")
			failures++
			var answer struct {
				OK     bool     `json:"ok"`
				Errors []string `json:"errors"`
			}
			if err := json.Unmarshal([]byte(body), &answer); err != nil || code != http.StatusUnprocessableEntity || answer.OK {
				t.Errorf("POST /-/reload: HTTP %d (%v), want 422\n%s", code, err, body)
			}
			errs := strings.Join(answer.Errors, "\n")
			for _, want := range tt.wants(string(orig)) {
				if !strings.Contains(errs, want) {
					t.Errorf("the errors do not name %q:\n%s", want, errs)
				}
			}
			if v := g.metric(t, "citygw_config_last_reload_successful"); v != 0 {
				t.Errorf("citygw_config_last_reload_successful = %v after a refused reload", v)
			}
			if v := g.metric(t, "citygw_reload_failures_total"); v != failures {
				t.Errorf("citygw_reload_failures_total = %v, want %v", v, failures)
			}
			if v := g.metric(t, "citygw_component_restarts_total"); v != 0 {
				t.Errorf("a refused reload restarted the components (%v restarts)", v)
			}
			flowing(t, "after a refused reload")
		})
	}

	t.Run("SIGHUP with a bad config keeps running", func(t *testing.T) {
		writeFile(t, cfgFile, string(cfg)+"influxdb: {url: 'http://127.0.0.1:9', bucket: x}\n")
		defer writeFile(t, cfgFile, string(cfg))
		if err := g.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		failures++
		waitFor(t, 60*time.Second, "the SIGHUP reload to be refused", func() bool {
			return g.metric(t, "citygw_reload_failures_total") == failures
		})
		if !strings.Contains(g.proc.Output(), "deployment reload failed; the previous deployment keeps running") {
			t.Error("the refused SIGHUP reload was not logged")
		}
		if !g.proc.Running() {
			t.Fatal("the gateway exited")
		}
		flowing(t, "after a refused SIGHUP reload")
	})

	t.Run("an added asset is polled after the components restart, and nothing is lost", func(t *testing.T) {
		if n := len(points(t, db, added.Kind, added.ID)); n != 0 {
			t.Fatalf("%d points of %s before it is in the inventory", n, added.ID)
		}
		writeFile(t, c.invFile, string(full))
		code, body := g.do(t, "POST", "/-/reload")
		var answer struct {
			OK      bool     `json:"ok"`
			Applied string   `json:"applied"`
			Changes []string `json:"changes"`
		}
		json.Unmarshal([]byte(body), &answer)
		if code != http.StatusOK || !answer.OK || answer.Applied != "components" ||
			strings.Join(answer.Changes, "\n") != "components restarted for: inventory" {
			t.Fatalf("POST /-/reload with the full inventory: HTTP %d\n%s\nwant 200, applied components, for the inventory only", code, body)
		}
		if v := g.metric(t, "citygw_config_last_reload_successful"); v != 1 {
			t.Errorf("citygw_config_last_reload_successful = %v after a good reload", v)
		}
		if v := g.metric(t, "citygw_component_restarts_total"); v != 1 {
			t.Errorf("citygw_component_restarts_total = %v, want 1", v)
		}
		waitFor(t, 60*time.Second, "the added bin's readings in InfluxDB", func() bool {
			return len(points(t, db, added.Kind, added.ID)) > 0
		})
		flowing(t, "after the component restart")
		if n := strings.Count(g.proc.Output(), "gateway running"); n != 2 {
			t.Errorf("the components started %d times, want twice (at the start and at the reload) in one process", n)
		}
		// Every message of a bin the gateway knew throughout is stored: the
		// persistent session held what arrived while the components
		// restarted, and the WAL carried over.
		waitStored(t, c, db, kept, 60*time.Second)
	})

	if strings.Contains(g.proc.Output(), adminToken) {
		t.Error("the gateway logged its admin token")
	}
}

// get sends an unauthenticated admin request (the probes need no token).
func (g *gateway) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(g.admin + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func writeFile(t testing.TB, file, data string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// lineOf is the 1-based line of the first line of s containing sub.
func lineOf(t testing.TB, s, sub string) int {
	t.Helper()
	for i, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return i + 1
		}
	}
	t.Fatalf("no line with %q in\n%s", sub, s)
	return 0
}

// inventoryBlocks splits a YAML inventory written by firmware-sim into its
// head and one block per asset ("  - id: …" up to the next one).
func inventoryBlocks(t testing.TB, s string) (head string, blocks []string) {
	t.Helper()
	parts := strings.Split(s, "\n  - id: ")
	if len(parts) < 2 {
		t.Fatalf("not an inventory of '  - id:' blocks:\n%s", s)
	}
	for _, p := range parts[1:] {
		blocks = append(blocks, "\n  - id: "+p)
	}
	return parts[0], blocks
}

func assetBlock(t testing.TB, s, id string) string {
	t.Helper()
	_, blocks := inventoryBlocks(t, s)
	for _, b := range blocks {
		if strings.HasPrefix(b, "\n  - id: "+id+"\n") {
			return strings.TrimPrefix(b, "\n") + "\n"
		}
	}
	t.Fatalf("no asset %s in the inventory", id)
	return ""
}

func withoutAsset(t testing.TB, s, id string) string {
	t.Helper()
	head, blocks := inventoryBlocks(t, s)
	out := head
	found := false
	for _, b := range blocks {
		if strings.HasPrefix(b, "\n  - id: "+id+"\n") {
			found = true
			continue
		}
		out += b
	}
	if !found {
		t.Fatalf("no asset %s in the inventory", id)
	}
	if !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return out
}
