package grafana_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"

	"github.com/citygw/citygw/devices/yamlconf"
)

// Data source uids of provisioning/datasources/citygw.yaml.
const (
	influxUID = "citygw-influxdb"
	promUID   = "citygw-prometheus"
)

// dsRef is a panel's, target's or variable's data source.
type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID      string `json:"refId"`
	Datasource *dsRef `json:"datasource"`
	Query      string `json:"query"`    // InfluxQL (rawQuery)
	RawQuery   bool   `json:"rawQuery"` // InfluxQL typed, not built in the editor
	Expr       string `json:"expr"`     // PromQL
}

type panel struct {
	ID         int      `json:"id"`
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	Datasource *dsRef   `json:"datasource"`
	Targets    []target `json:"targets"`
	Panels     []panel  `json:"panels"` // of a collapsed row
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Datasource *dsRef          `json:"datasource"`
	Query      json.RawMessage `json:"query"` // a string, or an object for Prometheus variables
	IncludeAll bool            `json:"includeAll"`
	Multi      bool            `json:"multi"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

// queryText returns the variable's query: the string, or the "query" member
// of the Prometheus variable editor's object.
func (v variable) queryText() (string, error) {
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var o struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &o); err != nil {
		return "", fmt.Errorf("variable %s: query is neither a string nor an object with query: %s", v.Name, v.Query)
	}
	return o.Query, nil
}

type dashboard struct {
	File          string `json:"-"`
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Panels        []panel
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

// allPanels returns the dashboard's panels, those inside rows included.
func (d *dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// query is one query of a dashboard with the data source it runs on.
type query struct {
	Where string // "file: panel title (refId)" or "file: variable name"
	DS    string // data source uid
	Text  string
}

// targetDS is the data source a target runs on: its own, else its panel's.
func targetDS(p panel, t target) string {
	if t.Datasource != nil && t.Datasource.UID != "" {
		return t.Datasource.UID
	}
	if p.Datasource != nil {
		return p.Datasource.UID
	}
	return ""
}

func (d *dashboard) panelQueries() []query {
	var out []query
	for _, p := range d.allPanels() {
		for _, t := range p.Targets {
			q := query{Where: fmt.Sprintf("%s: panel %q (%s)", d.File, p.Title, t.RefID), DS: targetDS(p, t), Text: t.Query}
			if q.DS == promUID {
				q.Text = t.Expr
			}
			out = append(out, q)
		}
	}
	return out
}

func loadDashboards(t *testing.T) []*dashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("dashboards", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("found %d dashboards in dashboards/, want the 5 of issue 7 at least", len(files))
	}
	var out []*dashboard
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := &dashboard{File: f}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		if err := dec.Decode(d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, d)
	}
	return out
}

// Provisioning files, decoded strictly (an unknown key is a typo Grafana
// would silently ignore).
type datasourcesFile struct {
	APIVersion  int `yaml:"apiVersion"`
	Datasources []struct {
		Name      string         `yaml:"name"`
		UID       string         `yaml:"uid"`
		Type      string         `yaml:"type"`
		Access    string         `yaml:"access"`
		URL       string         `yaml:"url"`
		IsDefault bool           `yaml:"isDefault"`
		Database  string         `yaml:"database"`
		Editable  bool           `yaml:"editable"`
		JSONData  map[string]any `yaml:"jsonData"`
	} `yaml:"datasources"`
}

type providersFile struct {
	APIVersion int `yaml:"apiVersion"`
	Providers  []struct {
		Name                  string `yaml:"name"`
		OrgID                 int    `yaml:"orgId"`
		Folder                string `yaml:"folder"`
		Type                  string `yaml:"type"`
		DisableDeletion       bool   `yaml:"disableDeletion"`
		AllowUIUpdates        bool   `yaml:"allowUiUpdates"`
		UpdateIntervalSeconds int    `yaml:"updateIntervalSeconds"`
		Options               struct {
			Path                      string `yaml:"path"`
			FoldersFromFilesStructure bool   `yaml:"foldersFromFilesStructure"`
		} `yaml:"options"`
	} `yaml:"providers"`
}

// alertRules is a Prometheus rule file, decoded strictly.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func decodeYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := yamlconf.Decode(file, b, v); err != nil {
		t.Fatal(err)
	}
}

func TestProvisioning(t *testing.T) {
	var ds datasourcesFile
	decodeYAML(t, filepath.Join("provisioning", "datasources", "citygw.yaml"), &ds)
	want := map[string]struct{ typ, url string }{
		influxUID: {"influxdb", "http://127.0.0.1:8086"},
		promUID:   {"prometheus", "http://127.0.0.1:9090"},
	}
	if ds.APIVersion != 1 || len(ds.Datasources) != len(want) {
		t.Fatalf("datasources: apiVersion %d with %d data sources, want 1 with %d", ds.APIVersion, len(ds.Datasources), len(want))
	}
	for _, d := range ds.Datasources {
		w, ok := want[d.UID]
		if !ok || d.Type != w.typ || d.URL != w.url || d.Access != "proxy" {
			t.Errorf("data source %q: uid %q type %q url %q access %q; want one of %v with access proxy", d.Name, d.UID, d.Type, d.URL, d.Access, want)
		}
		if d.Type == "influxdb" && (d.JSONData["dbName"] != "citygw" || d.Database != "citygw") {
			t.Errorf("InfluxDB data source: jsonData.dbName %v, database %q; want citygw for both", d.JSONData["dbName"], d.Database)
		}
	}

	var prov providersFile
	decodeYAML(t, filepath.Join("provisioning", "dashboards", "citygw.yaml"), &prov)
	if prov.APIVersion != 1 || len(prov.Providers) != 1 || prov.Providers[0].Type != "file" || !filepath.IsAbs(prov.Providers[0].Options.Path) {
		t.Errorf("dashboard providers: %+v; want apiVersion 1 and one file provider with an absolute path", prov)
	}
}

// builtins are Grafana's own variables and alias patterns used in queries.
var builtins = map[string]bool{"timeFilter": true, "__interval": true, "__interval_ms": true, "__rate_interval": true,
	"__range": true, "__range_s": true, "col": true, "tag_asset": true, "tag_circuit": true, "tag_district": true}

// varRef matches Grafana's variable syntaxes $name, ${name}, ${name:fmt} and [[name]].
var varRef = regexp.MustCompile(`\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]`)

func refs(s string) []string {
	var out []string
	for _, m := range varRef.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1]+m[2]+m[3])
	}
	return out
}

// TestDashboardsWellFormed checks what Grafana would only show at run time:
// unknown data sources, undefined variables, duplicate ids and uids, panels
// without queries.
func TestDashboardsWellFormed(t *testing.T) {
	uids := map[string]string{}
	for _, d := range loadDashboards(t) {
		if d.UID == "" || d.Title == "" || d.SchemaVersion < 39 {
			t.Errorf("%s: uid %q title %q schemaVersion %d; want both set and schemaVersion >= 39 (Grafana 10/11)", d.File, d.UID, d.Title, d.SchemaVersion)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s: uid %q already used by %s", d.File, d.UID, other)
		}
		uids[d.UID] = d.File
		defined := map[string]bool{}
		for i, v := range d.Templating.List {
			if defined[v.Name] {
				t.Errorf("%s: variable %s defined twice", d.File, v.Name)
			}
			q, err := v.queryText()
			if err != nil {
				t.Error(err)
				continue
			}
			for _, r := range refs(q) {
				if !defined[r] && !builtins[r] {
					t.Errorf("%s: variable %s (#%d) uses $%s, which is not defined before it", d.File, v.Name, i, r)
				}
			}
			if v.Type == "query" && (v.Datasource == nil || (v.Datasource.UID != influxUID && v.Datasource.UID != promUID)) {
				t.Errorf("%s: variable %s: data source %+v is not a provisioned one", d.File, v.Name, v.Datasource)
			}
			defined[v.Name] = true
		}
		ids := map[int]bool{}
		for _, p := range d.allPanels() {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d used twice", d.File, p.ID)
			}
			ids[p.ID] = true
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", d.File, p.Title)
			}
			for _, tg := range p.Targets {
				ds := targetDS(p, tg)
				switch {
				case ds == influxUID && (!tg.RawQuery || tg.Query == ""):
					t.Errorf("%s: panel %q (%s): InfluxDB targets must be raw InfluxQL queries", d.File, p.Title, tg.RefID)
				case ds == promUID && tg.Expr == "":
					t.Errorf("%s: panel %q (%s): Prometheus target without expr", d.File, p.Title, tg.RefID)
				case ds != influxUID && ds != promUID:
					t.Errorf("%s: panel %q (%s): data source %q is not a provisioned one", d.File, p.Title, tg.RefID, ds)
				}
				for _, r := range refs(tg.Query + " " + tg.Expr) {
					if !defined[r] && !builtins[r] {
						t.Errorf("%s: panel %q (%s) uses $%s, which is not defined", d.File, p.Title, tg.RefID, r)
					}
				}
			}
		}
	}
}

// varValue is what a variable stands for in a query.
type varValue struct {
	vals  []string
	regex bool // a query variable: values are regex-escaped (they are used in =~ /^$v$/)
}

// influxSubst replaces Grafana's macros and variables in an InfluxQL query
// the way Grafana's InfluxDB data source does: $timeFilter and $__interval
// by a time range and interval, a multi-value or "All" variable by a regex
// group of its escaped values, others by their value.
func influxSubst(q string, vars map[string]varValue) (string, error) {
	var missing []string
	out := varRef.ReplaceAllStringFunc(q, func(m string) string {
		sm := varRef.FindStringSubmatch(m)
		name := sm[1] + sm[2] + sm[3]
		switch name {
		case "timeFilter":
			return "time > now() - 15m"
		case "__interval":
			return "10s"
		case "__interval_ms":
			return "10000"
		}
		v, ok := vars[name]
		if !ok || len(v.vals) == 0 {
			missing = append(missing, name)
			return m
		}
		if !v.regex {
			return v.vals[0]
		}
		quoted := make([]string, len(v.vals))
		for i, s := range v.vals {
			quoted[i] = regexp.QuoteMeta(s)
		}
		if len(quoted) == 1 {
			return quoted[0]
		}
		return "(" + strings.Join(quoted, "|") + ")"
	})
	if len(missing) > 0 {
		return out, fmt.Errorf("no value for $%s", strings.Join(missing, ", $"))
	}
	return out, nil
}

// promMetricName matches the metric names a citygw PromQL expression may
// use: the gateway's own and the Go and process collectors'.
var promMetricName = regexp.MustCompile(`\b(?:citygw|go|process)_[a-zA-Z0-9_]+\b`)

// promNames returns the metric names in expr, with the _bucket, _sum and
// _count series of histograms reduced to the family name when the family is
// known.
func promNames(expr string, families map[string]bool) []string {
	var out []string
	for _, n := range promMetricName.FindAllString(expr, -1) {
		if !families[n] {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(n, suf); ok && families[base] {
					n = base
					break
				}
			}
		}
		out = append(out, n)
	}
	return out
}

// balanced reports whether expr's brackets pair up.
func balanced(expr string) bool {
	var stack []rune
	pair := map[rune]rune{')': '(', ']': '[', '}': '{'}
	inStr := false
	for _, c := range expr {
		switch {
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '(' || c == '[' || c == '{':
			stack = append(stack, c)
		case c == ')' || c == ']' || c == '}':
			if len(stack) == 0 || stack[len(stack)-1] != pair[c] {
				return false
			}
			stack = stack[:len(stack)-1]
		}
	}
	return len(stack) == 0 && !inStr
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// anchor is GitHub's anchor of a Markdown heading.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestAlertRunbookLinks checks that every alert of citygw-alerts.yml links
// to a section of gateway/RUNBOOK.md that exists, and that the runbook's
// triage table names every alert.
func TestAlertRunbookLinks(t *testing.T) {
	var r alertRules
	decodeYAML(t, "citygw-alerts.yml", &r)
	book, err := os.ReadFile(filepath.Join("..", "..", "gateway", "RUNBOOK.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(book), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			anchors[anchor(strings.TrimLeft(h, "#"))] = true
		}
	}
	n := 0
	for _, g := range r.Groups {
		for _, a := range g.Rules {
			n++
			link := a.Annotations["runbook"]
			frag, ok := strings.CutPrefix(link, "gateway/RUNBOOK.md#")
			if !ok || !anchors[frag] {
				t.Errorf("alert %s: runbook %q is not a section of gateway/RUNBOOK.md", a.Alert, link)
			}
			if !strings.Contains(string(book), a.Alert) {
				t.Errorf("alert %s is not named in gateway/RUNBOOK.md", a.Alert)
			}
		}
	}
	if n < 20 {
		t.Errorf("citygw-alerts.yml has %d alerts; want the runbook's 20 or more", n)
	}
}
