package grafana_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/gateway/testenv"
)

// The simulated city starts at 05:54 local time on a January morning, 20×
// faster than real time: it stays dark (sun below -6°, ambient < 3.4 lx) for
// about 100 s of wall time, so the lamps burn and a lamp_out lamp is "dark at
// night", and route R1's bins are collected at 06:00 (18 s in, after the
// gateway has subscribed), so the collection panels see drops in fill.
const (
	simStart = "2026-01-15T05:54:00+08:00"
	simSpeed = "20"
)

// faults makes every anomaly the dashboards show happen in the small city
// (configs/city-small.yaml). Route R1's bins (BIN-0006, -0009, -0010 with
// seed 7) are left alone so that their collections show.
var faults = []struct {
	fault, asset string
	params       map[string]any
}{
	{"lamp_out", "SL-001-02", nil},
	{"leakage", "CAB-002", map[string]any{"ma": 60}},
	{"gas_pressure_low", "GAS-001", nil},
	{"gas_leak", "GAS-002", map[string]any{"rate_per_min": 1200}},
	{"bin_overflow", "BIN-0003", nil},
	{"bin_fire", "BIN-0004", map[string]any{"rate_per_min": 1200}},
	{"bin_knocked_over", "BIN-0007", nil},
	{"malformed_payload", "BIN-0005", map[string]any{"mode": "types"}},
}

// TestQueriesAgainstSimulatedCity runs every InfluxQL query of every
// dashboard (panel targets and template variables, with Grafana's macros and
// variables substituted) against InfluxDB 1.8.10 filled by firmware-sim
// through the gateway (with its case client delivering to the reference case
// desk), and fails if one errors or returns no rows. Then it checks that
// every PromQL expression of the dashboards and of citygw-alerts.yml names
// only metrics the running gateway exposes, or labelled vectors that the
// gateway's packages declare and that have no child yet in this run.
func TestQueriesAgainstSimulatedCity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts InfluxDB, Mosquitto, firmware-sim and the gateway")
	}
	dashboards := loadDashboards(t)
	dir := t.TempDir()
	mosq := testenv.StartMosquitto(t)
	db := testenv.StartInfluxDB(t)
	binDir := t.TempDir()
	simBin := testenv.BuildBinary(t, "github.com/citygw/citygw/firmware-sim/cmd/firmware-sim", binDir, false)
	gwBin := testenv.BuildBinary(t, "github.com/citygw/citygw/gateway/cmd/gateway", binDir, false)
	deskBin := testenv.BuildBinary(t, "github.com/citygw/citygw/caseclient/cmd/casedesk", binDir, false)

	control, invFile := startCity(t, simBin, dir, mosq.URL())
	for _, f := range faults {
		inject(t, control, f.fault, f.asset, f.params)
	}
	desk := startDesk(t, deskBin, dir)
	admin := startGateway(t, gwBin, dir, invFile, db, mosq.URL(), desk)

	t.Run("InfluxQL queries return rows", func(t *testing.T) {
		// Every query must eventually return rows: poll until they all do
		// (the anomalies need a few seconds to develop) or the deadline
		// passes.
		var fails []string
		start := time.Now()
		deadline := start.Add(45 * time.Second)
		for {
			fails = fails[:0]
			for _, d := range dashboards {
				fails = append(fails, runInflux(db, d, nil, true)...)
			}
			if len(fails) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Second)
		}
		for _, f := range fails {
			t.Error(f)
		}
		t.Logf("every query of %d dashboards returned rows after %v", len(dashboards), time.Since(start).Round(time.Second))

		// With one value picked for each variable, as an operator would,
		// every query must still be valid InfluxQL (rows are not required:
		// the first lamp need not be dark).
		for _, d := range dashboards {
			for _, f := range runInflux(db, d, pickFirst, false) {
				t.Error(f)
			}
		}
	})

	t.Run("PromQL names only exposed metrics", func(t *testing.T) {
		families := scrape(t, admin)
		var queries []query
		for _, d := range dashboards {
			for _, q := range d.panelQueries() {
				if q.DS == promUID {
					queries = append(queries, q)
				}
			}
			for _, v := range d.Templating.List {
				if v.Datasource != nil && v.Datasource.UID == promUID {
					text, err := v.queryText()
					if err != nil {
						t.Fatal(err)
					}
					queries = append(queries, query{Where: d.File + ": variable " + v.Name, DS: promUID, Text: text})
				}
			}
		}
		queries = append(queries, alertQueries(t)...)
		// A labelled vector is exposed only once it has a child (a first
		// failure, a first throttled case): those are accepted when a
		// package linked into the gateway declares them.
		lazy := lazyVectors(t)
		if len(queries) < 20 {
			t.Fatalf("found %d PromQL expressions; the gateway health dashboard alone has more", len(queries))
		}
		lazySeen := map[string]bool{}
		for _, q := range queries {
			if !balanced(q.Text) {
				t.Errorf("%s: unbalanced brackets in %s", q.Where, q.Text)
			}
			names := promNames(q.Text, families)
			if len(names) == 0 {
				t.Errorf("%s: no citygw, go or process metric in %s", q.Where, q.Text)
			}
			for _, n := range names {
				switch {
				case families[n]:
				case lazy[n]:
					if !lazySeen[n] {
						lazySeen[n] = true
						t.Logf("%s: not exposed in this run, but a labelled vector the gateway declares", n)
					}
				default:
					t.Errorf("%s: metric %s is not exposed by the gateway (%s)", q.Where, n, q.Text)
				}
			}
		}
	})
}

// pickFirst chooses the first value of a query variable.
func pickFirst(vals []string) []string { return vals[:1] }

// runInflux resolves d's variables in order (InfluxQL query variables by
// running them; the others from their current value) and runs every InfluxDB
// panel query. pick chooses the values of a query variable (nil: all of
// them, Grafana's "All"). It returns a message per query that fails: an
// error, or no rows when needRows.
func runInflux(db *testenv.InfluxDB, d *dashboard, pick func([]string) []string, needRows bool) []string {
	var fails []string
	vars := map[string]varValue{}
	for _, v := range d.Templating.List {
		switch {
		case v.Type == "query" && v.Datasource != nil && v.Datasource.UID == influxUID:
			text, err := v.queryText()
			if err == nil {
				text, err = influxSubst(text, vars)
			}
			if err != nil {
				fails = append(fails, fmt.Sprintf("%s: variable %s: %v", d.File, v.Name, err))
				continue
			}
			series, err := db.Query(db.DB, text)
			if err != nil {
				fails = append(fails, fmt.Sprintf("%s: variable %s: %v", d.File, v.Name, err))
				continue
			}
			// Grafana lists each value once, whatever the number of
			// measurements that carry it.
			var vals []string
			seen := map[string]bool{}
			for _, s := range series {
				for _, row := range testenv.Rows(s) {
					if val, ok := row["value"].(string); ok && !seen[val] {
						seen[val] = true
						vals = append(vals, val)
					}
				}
			}
			if len(vals) == 0 {
				fails = append(fails, fmt.Sprintf("%s: variable %s: %s returned no values", d.File, v.Name, text))
				continue
			}
			if pick != nil {
				vals = pick(vals)
			}
			vars[v.Name] = varValue{vals: vals, regex: true}
		case v.Type == "textbox" || v.Type == "constant" || v.Type == "custom":
			s, ok := v.Current.Value.(string)
			if !ok || s == "" {
				fails = append(fails, fmt.Sprintf("%s: variable %s: no current value", d.File, v.Name))
				continue
			}
			vars[v.Name] = varValue{vals: []string{s}}
		}
	}
	for _, q := range d.panelQueries() {
		if q.DS != influxUID {
			continue
		}
		text, err := influxSubst(q.Text, vars)
		if err != nil {
			fails = append(fails, fmt.Sprintf("%s: %v", q.Where, err))
			continue
		}
		series, err := db.Query(db.DB, text)
		if err != nil {
			fails = append(fails, fmt.Sprintf("%s: %v", q.Where, err))
			continue
		}
		rows := 0
		for _, s := range series {
			rows += len(s.Values)
		}
		if needRows && rows == 0 {
			fails = append(fails, fmt.Sprintf("%s: no rows from %s", q.Where, text))
		}
	}
	return fails
}

func alertQueries(t *testing.T) []query {
	t.Helper()
	var r alertRules
	decodeYAML(t, "citygw-alerts.yml", &r)
	var out []query
	seen := map[string]bool{}
	for _, g := range r.Groups {
		for _, a := range g.Rules {
			if a.Alert == "" || a.Expr == "" || a.Labels["severity"] == "" || a.Annotations["runbook"] == "" {
				t.Errorf("citygw-alerts.yml: alert %q needs expr, labels.severity and annotations.runbook", a.Alert)
			}
			if seen[a.Alert] {
				t.Errorf("citygw-alerts.yml: alert %s defined twice", a.Alert)
			}
			seen[a.Alert] = true
			out = append(out, query{Where: "citygw-alerts.yml: " + a.Alert, DS: promUID, Text: a.Expr})
		}
	}
	return out
}

// vectorDecl matches the declaration of a labelled Prometheus vector.
var vectorDecl = regexp.MustCompile(`New(?:Counter|Gauge|Histogram|Summary)Vec\(\s*prometheus\.\w+Opts\{[^}]*?Name:\s*"(citygw_\w+)"`)

// lazyVectors returns the names of the labelled metric vectors declared in
// this module's packages that the gateway binary links.
func lazyVectors(t *testing.T) map[string]bool {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "github.com/citygw/citygw/gateway/cmd/gateway").Output()
	if err != nil {
		t.Fatalf("go list -deps of the gateway: %v", err)
	}
	names := map[string]bool{}
	for _, dir := range strings.Fields(string(out)) {
		if !strings.HasPrefix(dir, root+string(filepath.Separator)) {
			continue
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range vectorDecl.FindAllSubmatch(b, -1) {
				names[string(m[1])] = true
			}
		}
	}
	if !names["citygw_readings_total"] {
		t.Fatalf("found no vector declarations in the gateway's packages (%d found)", len(names))
	}
	return names
}

// scrape returns the metric families the gateway exposes on /metrics (from
// the text format's TYPE lines and sample names).
func scrape(t *testing.T, admin string) map[string]bool {
	t.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatalf("scraping the gateway: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping the gateway: %s: %s", resp.Status, body)
	}
	families := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			families[strings.Fields(rest)[0]] = true
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		families[name] = true
	}
	if !families["citygw_readings_total"] {
		t.Fatalf("the gateway's /metrics has no citygw_readings_total: %v", sortedKeys(families))
	}
	return families
}

// startCity runs firmware-sim on configs/city-small.yaml with free ports, as
// gateway/e2e does, and returns its control URL and inventory file.
func startCity(t *testing.T, bin, dir, mqttURL string) (control, invFile string) {
	t.Helper()
	control = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	invFile = filepath.Join(dir, "inventory.yaml")
	p := testenv.StartProcess(t, bin, "run", "-city", filepath.Join("..", "city-small.yaml"),
		"-modbus-base-port", "0", "-mqtt", mqttURL, "-control", control, "-inventory-out", invFile,
		"-start", simStart, "-speed", simSpeed, "-mqtt-interval", "1s")
	if err := p.WaitOutput("ready", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	return "http://" + control, invFile
}

func inject(t *testing.T, control, fault, asset string, params map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"fault": fault, "asset": asset, "params": params})
	resp, err := http.Post(control+"/faults", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("injecting %s on %s: %v", fault, asset, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("injecting %s on %s: %s: %s", fault, asset, resp.Status, b)
	}
}

// deskAPIKey is the Open311 api_key the case desk accepts.
const deskAPIKey = "grafana-test-key"

// startDesk runs the reference case desk (the case system of the tests), so
// that the gateway's case client runs and exposes its metrics; it returns
// its URL.
func startDesk(t *testing.T, bin, dir string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	p := testenv.StartProcess(t, bin, "-listen", addr, "-dir", filepath.Join(dir, "desk"), "-api-key", deskAPIKey,
		"-citycodes", filepath.Join("..", "citycodes.yaml"))
	if err := p.WaitOutput("casedesk ready", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr
}

// startGateway writes a gateway configuration for the simulated city (cases
// go to the desk) and runs the gateway; it returns the admin base URL.
func startGateway(t *testing.T, bin, dir, invFile string, db *testenv.InfluxDB, mqttURL, desk string) string {
	t.Helper()
	keyFile := filepath.Join(dir, "desk-api-key")
	if err := os.WriteFile(keyFile, []byte(deskAPIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	codes, err := filepath.Abs(filepath.Join("..", "citycodes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	admin := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	rules, err := filepath.Abs(filepath.Join("..", "rules", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`gateway: {id: gw-grafana, data_dir: %q}
inventory: %q
admin: {listen: %q}
log: {level: warn}
influxdb:
  url: %s
  bucket: %s
  batch_size: 1000
  flush_interval: 200ms
mqtt:
  broker: %s
  client_id: citygw-grafana-test
  subscriptions: [{topic: "city/bins/{asset}/telemetry", qos: 1}]
modbus:
  interval: 1s
  timeout: 400ms
  offline_after: 2
  backoff_min: 2s
  backoff_max: 5s
rules:
  files: [%q]
cases:
  codes: %q
  sinks:
    - {name: desk, type: open311, url: %q}
  secrets:
    desk: {api_key: {file: %q}}
`, filepath.Join(dir, "state"), invFile, admin, db.URL(), db.Bucket(), mqttURL, rules, codes, desk, keyFile)
	file := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.StartProcess(t, bin, "run", "-config", file)
	if err := testenv.WaitTCP(admin, 60*time.Second); err != nil {
		t.Fatalf("gateway admin listener: %v\n%s", err, p.Output())
	}
	return "http://" + admin
}
