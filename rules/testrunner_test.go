package rules

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/citygw/citygw/devices"
)

func TestParseSeries(t *testing.T) {
	tests := []struct {
		in   string
		typ  devices.Type
		want string
	}{
		{"0.9x3 0.01x2", devices.Float, "0.9 0.9 0.9 0.01 0.01"},
		{"1 _ 3", devices.Float, "1 <invalid> 3"},
		{"_x2 5", devices.Int, "<invalid> <invalid> 5"},
		{"truex2 false", devices.Bool, "true true false"},
		{"1 0", devices.Bool, "true false"},
		{"300-10x4", devices.Float, "300 290 280 270"},
		{"1+0.5x3", devices.Float, "1 1.5 2"},
		{"-3x2 1e3", devices.Float, "-3 -3 1000"},
		{"ok lamp_failurex2", devices.String, `"ok" "lamp_failure" "lamp_failure"`},
		{"0x20", devices.Int, strings.TrimSpace(strings.Repeat("0 ", 20))},
	}
	for _, tc := range tests {
		ss, err := ParseSeries(tc.in)
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		var parts []string
		for _, s := range ss {
			v, err := s.value(tc.typ)
			if err != nil {
				t.Fatalf("%q: %v", tc.in, err)
			}
			parts = append(parts, v.String())
		}
		if got := strings.Join(parts, " "); got != tc.want {
			t.Errorf("%q = %s, want %s", tc.in, got, tc.want)
		}
	}
	if _, err := ParseSeries("1x0"); err == nil {
		t.Error("x0 accepted")
	}
	ss, _ := ParseSeries("abc")
	if _, err := ss[0].value(devices.Float); err == nil {
		t.Error("a word accepted for a float field")
	}
}

// The shipped rule set's own tests run as part of the package tests.
func TestShippedRuleTests(t *testing.T) {
	files, err := filepath.Glob("../configs/rules/tests/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("rule tests missing: %v %v", files, err)
	}
	var out bytes.Buffer
	if err := RunTests(&out, files...); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
}

func TestFailingRuleTestReportsExpectedAndGot(t *testing.T) {
	dir := t.TempDir()
	writeRules(t, dir, "r.yaml", leakRule)
	f := writeRules(t, dir, "t.yaml", `rule_files: [r.yaml]
evaluation_interval: 1m
tests:
  - name: wrong expectation
    start: 2026-03-10T06:00:00Z
    assets:
      - {id: CAB1, profile: citylight-ccu300, lat: 31.2, lon: 121.4, series: {leakage_ma: 40x5}}
    expect:
      - {at: 4m, episodes: []}
  - name: right expectation
    start: 2026-03-10T06:00:00Z
    assets:
      - {id: CAB1, profile: citylight-ccu300, lat: 31.2, lon: 121.4, series: {leakage_ma: 40x5}}
    expect:
      - {at: 1m, episodes: [{rule: cabinet.leak, group: CAB1, state: pending}]}
      - {at: 2m, episodes: [{rule: cabinet.leak, group: CAB1, title: "漏电 CAB1 40 mA"}]}
`)
	var out bytes.Buffer
	err := RunTests(&out, f)
	if err == nil {
		t.Fatalf("a failing test passed:\n%s", out.String())
	}
	s := out.String()
	for _, want := range []string{"FAIL", "wrong expectation", "expected:", "(none)", "got:", "rule=cabinet.leak state=firing group=CAB1",
		"ok   " + f + ": right expectation", "2 tests, 1 failed"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
}

func TestRuleTestFileErrors(t *testing.T) {
	dir := t.TempDir()
	writeRules(t, dir, "r.yaml", leakRule)
	for name, body := range map[string]string{
		"unknown field": "rule_files: [r.yaml]\ntests:\n  - name: x\n    start: 2026-03-10T06:00:00Z\n    assets: [{id: C, profile: citylight-ccu300, lat: 1, lon: 1, series: {nope: 1x2}}]\n    expect: []\n",
		"bad at":        "rule_files: [r.yaml]\ntests:\n  - name: x\n    start: 2026-03-10T06:00:00Z\n    assets: []\n    expect: [{at: 90s, episodes: []}]\n",
		"no rule files": "tests: []\n",
		"bad rule file": "rule_files: [missing.yaml]\ntests: []\n",
		"unknown key":   "rule_files: [r.yaml]\ntestz: []\n",
		"bad sample":    "rule_files: [r.yaml]\ntests:\n  - name: x\n    start: 2026-03-10T06:00:00Z\n    assets: [{id: C, profile: citylight-ccu300, lat: 1, lon: 1, series: {leakage_ma: high}}]\n    expect: []\n",
	} {
		t.Run(name, func(t *testing.T) {
			f := writeRules(t, dir, "t.yaml", body)
			var out bytes.Buffer
			if err := RunTests(&out, f); err == nil {
				t.Fatalf("accepted:\n%s", out.String())
			}
		})
	}
}
