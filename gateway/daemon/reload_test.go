package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// deployDir is a small deployment on disk: gateway.yaml, an inventory of
// Modbus lamps, one rule file and the city code table. Nothing it names
// listens: the gateway's components build and run, and fail to connect.
type deployDir struct {
	t                 *testing.T
	dir               string
	influx, modbus    string // closed ports
	cfg, inv, rule    string
	codes, tokenFile  string
	adminListen       string
	configTail        string // appended to gateway.yaml
	rulesSection      string
	dataDir           string
	modbusInterval    string
	ruleThreshold     string
	logLevel          string
	lamps             int
	duplicateLampLine bool
}

func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func newDeployDir(t *testing.T) *deployDir {
	dir := t.TempDir()
	codes, err := os.ReadFile("../../configs/citycodes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := &deployDir{t: t, dir: dir, influx: closedPort(t), modbus: closedPort(t),
		cfg: filepath.Join(dir, "gateway.yaml"), inv: filepath.Join(dir, "inventory.yaml"),
		rule: filepath.Join(dir, "rules", "lamps.yaml"), codes: filepath.Join(dir, "codes.yaml"),
		tokenFile: filepath.Join(dir, "admin.token"), adminListen: "127.0.0.1:0",
		modbusInterval: "1s", ruleThreshold: "0.03", logLevel: "info", lamps: 2,
		rulesSection: "rules: {files: [rules/*.yaml]}\n", dataDir: "state"}
	os.MkdirAll(filepath.Join(dir, "rules"), 0o755)
	d.write(d.codes, string(codes))
	d.write(d.tokenFile, "tok-1\n")
	d.writeAll()
	return d
}

func (d *deployDir) write(file, data string) {
	d.t.Helper()
	if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

func (d *deployDir) writeAll() {
	d.write(d.cfg, fmt.Sprintf(`gateway: {id: gw-test, data_dir: %s}
inventory: inventory.yaml
admin: {listen: %q, token: {file: admin.token}}
log: {level: %s}
influxdb: {url: "http://%s", bucket: citygw/autogen, flush_interval: 100ms, shutdown_grace: 100ms}
modbus: {interval: %s, timeout: 100ms}
mqtt: {broker: "tcp://%s", client_id: gw-test, subscriptions: [{topic: "city/bins/{asset}/telemetry", qos: 1}]}
%scases:
  codes: codes.yaml
  sinks: [{name: hook, type: webhook, url: "http://%s/hook"}]
  secrets: {hook: {secret: {value: whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=}}}
`, d.dataDir, d.adminListen, d.logLevel, d.influx, d.modbusInterval, d.influx, d.rulesSection, d.influx)+d.configTail)
	var inv strings.Builder
	inv.WriteString("assets:\n")
	for i := 1; i <= d.lamps; i++ {
		fmt.Fprintf(&inv, "  - {id: SL-%d, profile: citylight-slc200, modbus: {host: %q, unit: %d}, lat: 31.2, lon: 121.5, attrs: {circuit: C1}}\n", i, d.modbus, i)
	}
	if d.duplicateLampLine {
		fmt.Fprintf(&inv, "  - {id: SL-1, profile: citylight-slc200, modbus: {host: %q, unit: 9}, lat: 31.2, lon: 121.5}\n", d.modbus)
	}
	d.write(d.inv, inv.String())
	d.write(d.rule, fmt.Sprintf(`rules:
  - id: streetlight.test_dark
    kind: streetlight
    when: current_a < %s
    for: 10m
    severity: minor
    case: {service: streetlight_fault, title: "dark {{ .Asset.ID }}"}
`, d.ruleThreshold))
}

func (d *deployDir) load() *Deployment {
	d.t.Helper()
	dep, err := Load(d.cfg)
	if err != nil {
		d.t.Fatalf("loading the deployment: %v", err)
	}
	return dep
}

func TestDiff(t *testing.T) {
	tests := []struct {
		name   string
		change func(d *deployDir)
		want   Changes
	}{
		{"nothing", func(d *deployDir) {}, Changes{}},
		{"file rewritten with the same content", func(d *deployDir) { d.writeAll() }, Changes{}},
		{"rule threshold", func(d *deployDir) { d.ruleThreshold = "0.05"; d.writeAll() }, Changes{Rules: true}},
		{"rule file added", func(d *deployDir) {
			b, _ := os.ReadFile(d.rule)
			d.write(filepath.Join(d.dir, "rules", "more.yaml"), strings.ReplaceAll(string(b), "test_dark", "test_dark2"))
		}, Changes{Rules: true}},
		{"silence added", func(d *deployDir) {
			d.rulesSection = "rules:\n  files: [rules/*.yaml]\n  silences: [{id: works, assets: [SL-1], start: 2026-12-01T09:00:00+08:00, end: 2026-12-01T12:00:00+08:00}]\n"
			d.writeAll()
		}, Changes{Rules: true}},
		{"modbus interval", func(d *deployDir) { d.modbusInterval = "2s"; d.writeAll() }, Changes{Restart: []string{"modbus"}}},
		{"asset added", func(d *deployDir) { d.lamps = 3; d.writeAll() }, Changes{Restart: []string{"inventory"}}},
		{"code table", func(d *deployDir) {
			b, _ := os.ReadFile(d.codes)
			d.write(d.codes, strings.Replace(string(b), "SL-FAULT", "SL-FAULT-2", 1))
		}, Changes{Restart: []string{"codes"}}},
		{"eval budget", func(d *deployDir) {
			d.rulesSection = "rules: {files: [rules/*.yaml], eval_budget: 1s}\n"
			d.writeAll()
		}, Changes{Restart: []string{"rules.eval_budget"}}},
		{"absence shared", func(d *deployDir) {
			d.rulesSection = "rules: {files: [rules/*.yaml], absence: shared}\n"
			d.writeAll()
		}, Changes{Restart: []string{"rules.absence"}}},
		{"no rules any more", func(d *deployDir) { d.rulesSection = ""; d.writeAll() }, Changes{Restart: []string{"rules.files"}, Rules: true}},
		{"admin token rotated in its file", func(d *deployDir) { d.write(d.tokenFile, "tok-2\n") }, Changes{AdminToken: true}},
		{"admin listener moved", func(d *deployDir) { d.adminListen = "127.0.0.1:1"; d.writeAll() }, Changes{AdminListen: true}},
		{"log level", func(d *deployDir) { d.logLevel = "debug"; d.writeAll() }, Changes{NextStart: []string{"log"}}},
		{"garbage collector", func(d *deployDir) { d.configTail = "runtime: {gc_percent: 30, memory_limit: 512MiB}\n"; d.writeAll() }, Changes{Runtime: true}},
		{"influxdb and gateway id", func(d *deployDir) {
			b, _ := os.ReadFile(d.cfg)
			s := strings.Replace(string(b), "flush_interval: 100ms", "flush_interval: 200ms", 1)
			d.write(d.cfg, strings.Replace(s, "id: gw-test", "id: gw-other", 1))
		}, Changes{Restart: []string{"gateway", "influxdb"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDeployDir(t)
			old := d.load()
			tt.change(d)
			got := Diff(old, d.load())
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Diff = %+v, want %+v", got, tt.want)
			}
			if got.None() != reflect.DeepEqual(tt.want, Changes{}) {
				t.Errorf("None() = %v for %+v", got.None(), got)
			}
		})
	}
}

// reloadAnswer is the JSON answer of POST /-/reload.
type reloadAnswer struct {
	OK      bool     `json:"ok"`
	Applied string   `json:"applied"`
	Changes []string `json:"changes"`
	Errors  []string `json:"errors"`
}

// running is a gateway run in-process by Run.
type running struct {
	t      *testing.T
	addr   string
	token  string
	reload chan struct{}
	done   chan error
	cancel context.CancelFunc
}

func startRun(t *testing.T, d *deployDir) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	r := &running{t: t, token: "tok-1", reload: make(chan struct{}), done: make(chan error, 1), cancel: cancel}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dep := d.load()
	go func() { r.done <- Run(ctx, dep, log, r.reload, ready) }()
	select {
	case r.addr = <-ready:
	case err := <-r.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the admin listener did not come up")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run returned %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return r
}

func (r *running) do(method, path string) (int, string) {
	r.t.Helper()
	req, _ := http.NewRequest(method, "http://"+r.addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (r *running) reloadHTTP() (int, reloadAnswer) {
	r.t.Helper()
	code, body := r.do("POST", "/-/reload")
	var a reloadAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		r.t.Fatalf("reload answer %d %q: %v", code, body, err)
	}
	return code, a
}

// metric returns the value of an unlabelled sample, or -1.
func (r *running) metric(name string) float64 {
	r.t.Helper()
	_, body := r.do("GET", "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}

func (r *running) status() Status {
	r.t.Helper()
	code, body := r.do("GET", "/status")
	var s Status
	if err := json.Unmarshal([]byte(body), &s); code != 200 || err != nil {
		r.t.Fatalf("status %d %q: %v", code, body, err)
	}
	return s
}

func TestReloadDecisions(t *testing.T) {
	d := newDeployDir(t)
	r := startRun(t, d)
	if s := r.status(); s.Assets != 2 || s.Restarting {
		t.Fatalf("status at start: %+v", s)
	}
	applied := r.status().Applied
	if v := r.metric("citygw_config_last_reload_successful"); v != 1 {
		t.Errorf("citygw_config_last_reload_successful at start = %v", v)
	}
	// A scraper, a status poller and a browser keep asking while the
	// components restart underneath (the race detector watches): every
	// answer is a normal one, or 503 for the moment of a restart.
	stopAsking, asked := make(chan struct{}), make(chan error, 1)
	go func() {
		client := &http.Client{Timeout: 20 * time.Second}
		for n := 0; ; n++ {
			select {
			case <-stopAsking:
				asked <- nil
				return
			default:
			}
			path := []string{"/metrics", "/status", "/readyz", "/", "/api/summary", "/assets/SL-1"}[n%6]
			req, _ := http.NewRequest("GET", "http://"+r.addr+path, nil)
			req.Header.Set("Authorization", "Bearer tok-1")
			resp, err := client.Do(req)
			if err != nil {
				asked <- fmt.Errorf("GET %s: %w", path, err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 && resp.StatusCode != 503 {
				asked <- fmt.Errorf("GET %s: %s", path, resp.Status)
				return
			}
		}
	}()

	steps := []struct {
		name        string
		change      func()
		code        int
		applied     string
		want        string // in the changes or errors
		restarts    float64
		successful  float64
		assets      int
		rulesLoaded float64
	}{
		{"nothing changed", func() {}, 200, "none", "nothing changed", 0, 1, 2, 1},
		{"rule threshold", func() { d.ruleThreshold = "0.05"; d.writeAll() }, 200, "rules", "rules: reloaded in place", 0, 1, 2, 1},
		{"rule file added", func() {
			d.write(filepath.Join(d.dir, "rules", "more.yaml"), "rules:\n  - {id: streetlight.bright, kind: streetlight, when: current_a > 5, severity: minor, case: {service: streetlight_fault, title: t}}\n")
		}, 200, "rules", "rules: reloaded in place", 0, 1, 2, 2},
		{"unknown key refused", func() { d.configTail = "admn: {}\n"; d.writeAll() }, 422, "none", `gateway.yaml:13:1: unknown field "admn"`, 0, 0, 2, 2},
		{"fixed again, with an asset more", func() { d.configTail = ""; d.lamps = 3; d.writeAll() }, 200, "components", "components restarted for: inventory", 1, 1, 3, 2},
		{"duplicate asset refused", func() { d.duplicateLampLine = true; d.writeAll() }, 422, "none", "inventory.yaml:5:", 1, 0, 3, 2},
		{"broken rule refused", func() {
			d.duplicateLampLine = false
			d.ruleThreshold = `"dim"`
			d.writeAll()
		}, 422, "none", "lamps.yaml:4:", 1, 0, 3, 2},
		{"modbus interval", func() { d.ruleThreshold = "0.05"; d.modbusInterval = "3s"; d.writeAll() }, 200, "components", "components restarted for: modbus", 2, 1, 3, 2},
		{"bad duration refused", func() { d.modbusInterval = "soon"; d.writeAll() }, 422, "none", `invalid duration "soon"`, 2, 0, 3, 2},
		// Valid, but the new components cannot start: the previous ones start again.
		{"unusable data dir", func() { d.modbusInterval = "3s"; d.dataDir = "admin.token/state"; d.writeAll() }, 500, "none", "the previous deployment was restored", 3, 0, 3, 2},
		{"log level", func() { d.dataDir = "state"; d.logLevel = "debug"; d.writeAll() }, 200, "none", "log: changed; applies at the next process start", 3, 1, 3, 2},
	}
	for _, st := range steps {
		st.change()
		code, a := r.reloadHTTP()
		all := strings.Join(append(a.Changes, a.Errors...), "\n")
		if code != st.code || a.Applied != st.applied || a.OK != (code == 200) || !strings.Contains(all, st.want) {
			t.Errorf("%s: HTTP %d %+v; want %d, applied %s, with %q", st.name, code, a, st.code, st.applied, st.want)
		}
		if v := r.metric("citygw_component_restarts_total"); v != st.restarts {
			t.Errorf("%s: %v component restarts, want %v", st.name, v, st.restarts)
		}
		if v := r.metric("citygw_config_last_reload_successful"); v != st.successful {
			t.Errorf("%s: citygw_config_last_reload_successful = %v, want %v", st.name, v, st.successful)
		}
		s := r.status()
		if s.Assets != st.assets || s.Restarting {
			t.Errorf("%s: status says %d assets (restarting %v), want %d", st.name, s.Assets, s.Restarting, st.assets)
		}
		if st.applied == "components" || st.code == 500 {
			if !s.Applied.After(applied) {
				t.Errorf("%s: components applied at %v, not after %v", st.name, s.Applied, applied)
			}
			applied = s.Applied
		} else if !s.Applied.Equal(applied) {
			t.Errorf("%s: the components were rebuilt (%v, before %v)", st.name, s.Applied, applied)
		}
		if v := r.metric("citygw_rules_loaded"); v != st.rulesLoaded {
			t.Errorf("%s: %v rules loaded, want %v", st.name, v, st.rulesLoaded)
		}
	}
	close(stopAsking)
	if err := <-asked; err != nil {
		t.Errorf("asking while reloading: %v", err)
	}
	if v := r.metric("citygw_reload_failures_total"); v != 5 {
		t.Errorf("citygw_reload_failures_total = %v, want 5", v)
	}
	if v := r.metric("citygw_reload_success_total"); v != 6 {
		t.Errorf("citygw_reload_success_total = %v, want 6", v)
	}

	t.Run("SIGHUP with a bad config keeps running", func(t *testing.T) {
		d.configTail = "gateway: {id: again}\n"
		d.writeAll()
		r.reload <- struct{}{}
		deadline := time.Now().Add(30 * time.Second)
		for r.metric("citygw_reload_failures_total") != 6 {
			if time.Now().After(deadline) {
				t.Fatal("the SIGHUP reload was not counted as failed")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if s := r.status(); s.Assets != 3 || s.Restarting {
			t.Errorf("after a failed SIGHUP reload: %+v", s)
		}
		d.configTail = ""
		d.writeAll()
	})

	t.Run("token rotated in place, listener moved after the answer", func(t *testing.T) {
		d.write(d.tokenFile, "tok-2\n")
		moved := closedPort(t)
		d.adminListen = moved
		d.writeAll()
		code, a := r.reloadHTTP()
		if code != 200 || a.Applied != "none" || !strings.Contains(strings.Join(a.Changes, "\n"), "admin.token: replaced") {
			t.Fatalf("HTTP %d %+v", code, a)
		}
		old := r.addr
		r.addr, r.token = moved, "tok-2"
		if s := r.status(); s.Assets != 3 {
			t.Errorf("status on the moved listener: %+v", s)
		}
		if _, err := net.DialTimeout("tcp", old, time.Second); err == nil {
			t.Errorf("the old admin address %s still accepts connections", old)
		}
		r.token = "tok-1"
		if code, _ := r.do("GET", "/status"); code != http.StatusUnauthorized {
			t.Errorf("the old token: HTTP %d, want 401", code)
		}
		r.token = "tok-2"
	})
}
