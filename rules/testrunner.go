package rules

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // city time zones must resolve on minimal hosts too

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/goccy/go-yaml/ast"
	"github.com/prometheus/client_golang/prometheus"
)

// TestFile is a rule unit-test file, in the spirit of `promtool test rules`.
type TestFile struct {
	RuleFiles          []string          `yaml:"rule_files"` // relative to the test file
	EvaluationInterval yamlconf.Duration `yaml:"evaluation_interval,omitempty"`
	Location           string            `yaml:"location,omitempty"` // IANA time zone, default UTC
	Tests              []*TestCase       `yaml:"tests"`
}

// TestCase is one scenario: assets with input series, and the episodes
// expected at given times.
type TestCase struct {
	Name     string            `yaml:"name"`
	Start    time.Time         `yaml:"start"`
	Interval yamlconf.Duration `yaml:"interval,omitempty"`
	Assets   []*TestAsset      `yaml:"assets"`
	Silences []Silence         `yaml:"silences,omitempty"`
	Expect   []*TestExpect     `yaml:"expect"`
}

// TestAsset is an asset and its input series, one compact string per field.
type TestAsset struct {
	ID       string            `yaml:"id"`
	Profile  string            `yaml:"profile,omitempty"` // default: the kind's first profile
	Kind     string            `yaml:"kind,omitempty"`
	Lat      float64           `yaml:"lat"`
	Lon      float64           `yaml:"lon"`
	District string            `yaml:"district,omitempty"`
	Grid     string            `yaml:"grid,omitempty"`
	Attrs    map[string]any    `yaml:"attrs,omitempty"`
	Series   map[string]Series `yaml:"series"`
}

// Series is a compact series as written in the file. YAML would read
// "0x20" as the hex number 32, so the raw text of the scalar is kept.
type Series string

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (s *Series) UnmarshalYAML(n ast.Node) error {
	if sn, ok := n.(*ast.StringNode); ok {
		*s = Series(sn.Value)
		return nil
	}
	if tk := n.GetToken(); tk != nil {
		*s = Series(tk.Value)
		return nil
	}
	*s = Series(n.String())
	return nil
}

// TestExpect lists the episodes (pending or firing) expected at a time
// after the start; an empty list asserts there are none.
type TestExpect struct {
	At       yamlconf.Duration `yaml:"at"`
	Episodes []*ExpEpisode     `yaml:"episodes"`
}

// ExpEpisode is an expected episode; empty fields are not compared.
type ExpEpisode struct {
	Rule        string             `yaml:"rule"`
	Group       string             `yaml:"group,omitempty"`
	State       string             `yaml:"state,omitempty"` // default firing
	Assets      []string           `yaml:"assets,omitempty"`
	Labels      map[string]string  `yaml:"labels,omitempty"`
	Title       string             `yaml:"title,omitempty"`
	Description string             `yaml:"description,omitempty"`
	Muted       string             `yaml:"muted,omitempty"` // prefix of the mute reason; "no" asserts unmuted
	Shadow      *bool              `yaml:"shadow,omitempty"`
	Since       *yamlconf.Duration `yaml:"since,omitempty"` // episode start, after the test start
}

// sample is one parsed element of a series: missing, or a value.
type sample struct {
	missing bool
	num     float64
	str     string
	isStr   bool
	isBool  bool
	b       bool
}

// ParseSeries expands compact series notation: space-separated elements,
// each a value optionally followed by xN (N samples of it): numbers
// ("0.9x10"), ramps "a+bxN" / "a-bxN" (a, a+b, ... N samples), booleans
// ("truex5", "false"), "_" for a missing sample ("_x3") and bare words for
// string fields ("lamp_failure"). Unlike promtool, xN means N samples.
func ParseSeries(s string) ([]sample, error) {
	var out []sample
	for _, tok := range strings.Fields(s) {
		val, n := tok, 1
		if i := strings.LastIndexByte(tok, 'x'); i > 0 && i < len(tok)-1 {
			if c, err := strconv.Atoi(tok[i+1:]); err == nil {
				if c < 1 || c > 100000 {
					return nil, fmt.Errorf("%q: repeat count must be 1..100000", tok)
				}
				val, n = tok[:i], c
			}
		}
		var step float64
		smp := sample{}
		switch {
		case val == "_":
			smp.missing = true
		case val == "true" || val == "false":
			smp.isBool, smp.b = true, val == "true"
		default:
			if f, err := strconv.ParseFloat(val, 64); err == nil {
				smp.num = f
				break
			}
			if a, b, ok := splitRamp(val); ok {
				smp.num, step = a, b
				break
			}
			smp.isStr, smp.str = true, val
		}
		for k := 0; k < n; k++ {
			x := smp
			if step != 0 {
				x.num = smp.num + step*float64(k)
			}
			out = append(out, x)
		}
	}
	return out, nil
}

func splitRamp(v string) (a, b float64, ok bool) {
	for i := 1; i < len(v); i++ {
		if (v[i] == '+' || v[i] == '-') && v[i-1] != 'e' && v[i-1] != 'E' {
			x, err1 := strconv.ParseFloat(v[:i], 64)
			y, err2 := strconv.ParseFloat(v[i:], 64)
			if err1 == nil && err2 == nil {
				return x, y, true
			}
		}
	}
	return 0, 0, false
}

func (s sample) value(t devices.Type) (devices.Value, error) {
	if s.missing {
		return devices.Value{}, nil
	}
	switch t {
	case devices.Bool:
		if s.isBool {
			return devices.BoolValue(s.b), nil
		}
		if !s.isStr && (s.num == 0 || s.num == 1) {
			return devices.BoolValue(s.num == 1), nil
		}
	case devices.Int:
		if !s.isStr && !s.isBool && s.num == math.Trunc(s.num) {
			return devices.IntValue(int64(s.num)), nil
		}
	case devices.Float:
		if !s.isStr && !s.isBool {
			return devices.FloatValue(s.num), nil
		}
	case devices.String:
		if s.isStr {
			return devices.StringValue(s.str), nil
		}
		if s.isBool {
			return devices.StringValue(strconv.FormatBool(s.b)), nil
		}
		return devices.StringValue(strconv.FormatFloat(s.num, 'f', -1, 64)), nil
	}
	return devices.Value{}, fmt.Errorf("sample does not fit a %s field", t)
}

// recordingSink keeps what the engine emitted.
type recordingSink struct{ ts []Transition }

func (r *recordingSink) Transitions(_ context.Context, ts []Transition) error {
	r.ts = append(r.ts, ts...)
	return nil
}

// RunTests runs rule unit-test files and writes a report to w. It returns
// an error when a file cannot be run or any test fails.
func RunTests(w io.Writer, files ...string) error {
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		return fmt.Errorf("loading the device catalog: %w", err)
	}
	return RunTestsWith(w, cat, files...)
}

// RunTestsWith runs rule unit tests against the given device catalog.
func RunTestsWith(w io.Writer, cat *devices.Catalog, files ...string) error {
	failed, total := 0, 0
	var errs []error
	for _, f := range files {
		n, bad, err := runTestFile(w, cat, f)
		total += n
		failed += bad
		if err != nil {
			fmt.Fprintf(w, "ERROR %s\n%s\n", f, indent(err.Error()))
			errs = append(errs, err)
		}
	}
	fmt.Fprintf(w, "%d tests, %d failed, %d files with errors\n", total, failed, len(errs))
	if failed > 0 || len(errs) > 0 {
		return fmt.Errorf("rule tests: %d of %d failed, %d files with errors", failed, total, len(errs))
	}
	return nil
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }

func runTestFile(w io.Writer, cat *devices.Catalog, name string) (total, failed int, err error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return 0, 0, err
	}
	var tf TestFile
	doc, err := yamlconf.Decode(name, data, &tf)
	if err != nil {
		return 0, 0, err
	}
	if len(tf.RuleFiles) == 0 {
		return 0, 0, doc.Errorf("$", "rule_files", "list the rule files under test")
	}
	loc := time.UTC
	if tf.Location != "" {
		if loc, err = time.LoadLocation(tf.Location); err != nil {
			return 0, 0, doc.Errorf("$.location", "location", "%v", err)
		}
	}
	var ruleFiles []string
	for _, rf := range tf.RuleFiles {
		if !filepath.IsAbs(rf) {
			rf = filepath.Join(filepath.Dir(name), rf)
		}
		ruleFiles = append(ruleFiles, rf)
	}
	if err := CheckWith(cat, nil, ruleFiles...); err != nil {
		return 0, 0, err
	}
	for i, tc := range tf.Tests {
		at := fmt.Sprintf("$.tests[%d]", i)
		total++
		report, err := runTestCase(cat, loc, &tf, tc, ruleFiles, doc, at)
		label := tc.Name
		if label == "" {
			label = fmt.Sprintf("tests[%d]", i)
		}
		switch {
		case err != nil:
			failed++
			fmt.Fprintf(w, "FAIL %s: %s\n%s\n", name, label, indent(err.Error()))
		case report != "":
			failed++
			fmt.Fprintf(w, "FAIL %s: %s\n%s", name, label, report)
		default:
			fmt.Fprintf(w, "ok   %s: %s\n", name, label)
		}
	}
	return total, failed, nil
}

func runTestCase(cat *devices.Catalog, loc *time.Location, tf *TestFile, tc *TestCase, ruleFiles []string, doc *yamlconf.Doc, at string) (string, error) {
	interval := tc.Interval.D()
	if interval <= 0 {
		interval = tf.EvaluationInterval.D()
	}
	if interval <= 0 {
		interval = time.Minute
	}
	if tc.Start.IsZero() {
		return "", doc.Errorf(at+".start", "start", "required: the time of the first sample (RFC 3339 with zone)")
	}
	inv, inputs, steps, err := buildTestInputs(cat, tc, doc, at)
	if err != nil {
		return "", err
	}
	var last time.Duration
	for k, ex := range tc.Expect {
		if ex.At.D()%interval != 0 {
			return "", doc.Errorf(fmt.Sprintf("%s.expect[%d].at", at, k), "at", "%s is not a multiple of the interval %s", ex.At, interval)
		}
		last = max(last, ex.At.D())
	}
	steps = max(steps, int(last/interval)+1)
	sink := &recordingSink{}
	eng, err := NewEngine(Options{Location: loc, Sink: sink, Silences: tc.Silences, Now: func() time.Time { return tc.Start }},
		cat, inv, prometheus.NewRegistry(), nil)
	if err != nil {
		return "", err
	}
	if err := eng.Load(ruleFiles...); err != nil {
		return "", err
	}
	var report strings.Builder
	r := &devices.Reading{}
	for i := 0; i < steps; i++ {
		now := tc.Start.Add(time.Duration(i) * interval)
		for _, in := range inputs {
			r.Reset(in.a)
			r.Time, r.Received = now, now
			any := false
			for k, idx := range in.fields {
				if i < len(in.series[k]) && !in.series[k][i].missing {
					r.Values[idx], _ = in.series[k][i].value(in.a.Schema.Fields[idx].Type)
					any = true
				}
			}
			if any {
				eng.Eval(context.Background(), r)
			}
		}
		eng.Tick(context.Background(), now)
		for _, ex := range tc.Expect {
			if ex.At.D() != time.Duration(i)*interval {
				continue
			}
			compareEpisodes(&report, ex, eng.Episodes(), tc.Start)
		}
	}
	return report.String(), nil
}

func compareEpisodes(w *strings.Builder, ex *TestExpect, got []Episode, start time.Time) {
	used := make([]bool, len(got))
	var missing []*ExpEpisode
	for _, e := range ex.Episodes {
		found := false
		for i, g := range got {
			if !used[i] && e.matches(g, start) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			missing = append(missing, e)
		}
	}
	var extra []Episode
	for i, g := range got {
		if !used[i] {
			extra = append(extra, g)
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return
	}
	fmt.Fprintf(w, "  at %s:\n    expected:\n", ex.At)
	if len(ex.Episodes) == 0 {
		fmt.Fprintf(w, "      (none)\n")
	}
	for _, e := range ex.Episodes {
		fmt.Fprintf(w, "      %s\n", e)
	}
	fmt.Fprintf(w, "    got:\n")
	if len(got) == 0 {
		fmt.Fprintf(w, "      (none)\n")
	}
	for _, g := range got {
		fmt.Fprintf(w, "      %s\n", episodeString(g, start))
	}
	for _, e := range missing {
		fmt.Fprintf(w, "    missing: %s\n", e)
	}
	for _, g := range extra {
		fmt.Fprintf(w, "    unexpected: %s\n", episodeString(g, start))
	}
}

func (e *ExpEpisode) matches(g Episode, start time.Time) bool {
	state := e.State
	if state == "" {
		state = "firing"
	}
	if g.Rule != e.Rule || g.State.String() != state {
		return false
	}
	if e.Group != "" && g.GroupKey != e.Group {
		return false
	}
	if e.Assets != nil && strings.Join(e.Assets, ",") != strings.Join(g.Assets, ",") {
		return false
	}
	for k, v := range e.Labels {
		if g.GroupLabels[k] != v {
			return false
		}
	}
	switch {
	case e.Muted == "no" && g.Muted != "":
		return false
	case e.Muted != "" && e.Muted != "no" && !strings.HasPrefix(g.Muted, e.Muted):
		return false
	}
	if e.Title != "" && e.Title != g.Title || e.Description != "" && e.Description != g.Description {
		return false
	}
	if e.Shadow != nil && *e.Shadow != g.Shadow {
		return false
	}
	if e.Since != nil && !g.Start.Equal(start.Add(e.Since.D())) {
		return false
	}
	return true
}

func (e *ExpEpisode) String() string {
	s := fmt.Sprintf("rule=%s state=%s", e.Rule, cmp(e.State, "firing"))
	if e.Group != "" {
		s += " group=" + e.Group
	}
	if e.Assets != nil {
		s += " assets=[" + strings.Join(e.Assets, ",") + "]"
	}
	if len(e.Labels) > 0 {
		s += fmt.Sprintf(" labels=%v", e.Labels)
	}
	if e.Muted != "" {
		s += " muted=" + e.Muted
	}
	if e.Title != "" {
		s += fmt.Sprintf(" title=%q", e.Title)
	}
	if e.Since != nil {
		s += " since=" + e.Since.String()
	}
	return s
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func episodeString(g Episode, start time.Time) string {
	s := fmt.Sprintf("rule=%s state=%s group=%s assets=[%s] since=%s", g.Rule, g.State, g.GroupKey,
		strings.Join(g.Assets, ","), g.Start.Sub(start))
	if g.Muted != "" {
		s += " muted=" + g.Muted
	}
	if g.Shadow {
		s += " shadow"
	}
	if g.Title != "" {
		s += fmt.Sprintf(" title=%q", g.Title)
	}
	if len(g.Values) > 0 {
		keys := sortedKeys(g.Values)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%v", k, g.Values[k])
		}
		s += " values{" + strings.Join(parts, " ") + "}"
	}
	return s
}

// Check compiles rule files against the shipped device catalog and reports
// every problem with file:line:col.
func Check(files ...string) error {
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		return fmt.Errorf("loading the device catalog: %w", err)
	}
	return CheckWith(cat, nil, files...)
}

// CheckWith compiles rule files against a catalog and, when given, an
// inventory (for group sizes); nil inventory checks the rules alone. Each
// rule is then evaluated once against a made-up reading of its kind: a rule
// stopped by the memory budget, or slower than CheckBudget, is an error.
func CheckWith(cat *devices.Catalog, inv *devices.Inventory, files ...string) error {
	if len(files) == 0 {
		return errors.New("no rule files given")
	}
	set, err := compileFiles(cat, inv, files)
	if err != nil {
		return err
	}
	return trialRun(set, CheckBudget)
}

// testInput is one asset of a test case with its parsed series.
type testInput struct {
	a      *devices.Asset
	fields []int
	series [][]sample
}

// buildTestInputs makes the inventory of a test case's assets and parses
// their series; steps is the length of the longest series.
func buildTestInputs(cat *devices.Catalog, tc *TestCase, doc *yamlconf.Doc, at string) (*devices.Inventory, []testInput, int, error) {
	var assets []*devices.Asset
	var inputs []testInput
	steps := 0
	for j, ta := range tc.Assets {
		aat := fmt.Sprintf("%s.assets[%d]", at, j)
		model := ta.Profile
		if model == "" {
			for _, m := range sortedKeys(cat.Profiles) {
				if cat.Profiles[m].Kind == ta.Kind {
					model = m
					break
				}
			}
		}
		p := cat.Profile(model)
		if p == nil {
			return nil, nil, 0, doc.Errorf(aat, "profile", "give a known profile or kind (profile %q, kind %q)", ta.Profile, ta.Kind)
		}
		a := &devices.Asset{ID: ta.ID, Model: model, Lat: ta.Lat, Lon: ta.Lon, District: ta.District, Grid: ta.Grid, Attrs: map[string]any{}}
		for k, v := range ta.Attrs {
			switch x := v.(type) {
			case int:
				a.Attrs[k] = float64(x)
			case uint64:
				a.Attrs[k] = float64(x)
			case int64:
				a.Attrs[k] = float64(x)
			default:
				a.Attrs[k] = v
			}
		}
		if p.Transport == devices.Modbus {
			a.Modbus = &devices.ModbusAddr{Host: fmt.Sprintf("127.0.0.%d:%d", 1+j/200, 502), Unit: uint8(1 + j%200)}
		}
		schema := cat.Kinds[p.Kind]
		in := testInput{a: a}
		for _, fname := range sortedKeys(ta.Series) {
			idx, ok := schema.Index(fname)
			if !ok {
				return nil, nil, 0, doc.Errorf(aat+".series."+fname, "series."+fname, "kind %s has no field %s", p.Kind, fname)
			}
			ss, err := ParseSeries(string(ta.Series[fname]))
			if err != nil {
				return nil, nil, 0, doc.Errorf(aat+".series."+fname, "series."+fname, "%v", err)
			}
			for k, smp := range ss {
				if _, err := smp.value(schema.Fields[idx].Type); err != nil {
					return nil, nil, 0, doc.Errorf(aat+".series."+fname, "series."+fname, "sample %d: %v", k+1, err)
				}
			}
			in.fields = append(in.fields, idx)
			in.series = append(in.series, ss)
			steps = max(steps, len(ss))
		}
		assets = append(assets, a)
		inputs = append(inputs, in)
	}
	inv, err := devices.NewInventory(cat, assets)
	if err != nil {
		return nil, nil, 0, err
	}
	return inv, inputs, steps, nil
}
