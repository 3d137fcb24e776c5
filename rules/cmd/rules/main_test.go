package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/influx"
	"github.com/citygw/citygw/gateway/testenv"
	"github.com/citygw/citygw/rules"
)

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("rules:\n  - id: x.y\n    kind: cabinet\n    when: leakage > 1\n    severity: minor\n    case: {service: s, title: t}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good, _ := filepath.Glob("../../../configs/rules/*.yaml")
	tests, _ := filepath.Glob("../../../configs/rules/tests/*.yaml")
	if len(good) == 0 || len(tests) == 0 {
		t.Fatal("shipped rules not found")
	}
	slTest := "../../../configs/rules/tests/streetlight.yaml"
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"no command", nil, 2},
		{"usage", []string{"check"}, 2},
		{"unknown command", []string{"lint", "x"}, 2},
		{"check good", append([]string{"check"}, good...), 0},
		{"check bad", []string{"check", bad}, 1},
		{"check missing file", []string{"check", filepath.Join(dir, "nope.yaml")}, 1},
		{"test shipped", append([]string{"test"}, tests...), 0},
		{"test a rule file is an error", []string{"test", bad}, 1},
		{"version", []string{"version"}, 0},
		{"help", []string{"help"}, 0},
		{"explain help", []string{"explain", "-h"}, 0},
		{"backtest help", []string{"help", "backtest"}, 0},
		{"explain without rule", []string{"explain", "-asset", "L1", "-input", slTest}, 2},
		{"explain bad flag", []string{"explain", "-nope"}, 2},
		{"explain two sources", []string{"explain", "-rule", "r.x", "-asset", "L1", "-input", slTest, "-influx", "http://127.0.0.1:1"}, 2},
		{"explain no source", []string{"explain", "-rule", "r.x", "-asset", "L1", good[0]}, 2},
		{"explain line protocol without inventory", []string{"explain", "-rule", "r.x", "-asset", "L1", "-input", filepath.Join(dir, "x.lp"), good[0]}, 2},
		{"explain unknown rule", []string{"explain", "-rule", "streetlight.nope", "-asset", "L1", "-input", slTest}, 2},
		{"explain unknown asset", []string{"explain", "-rule", "streetlight.dark_at_night", "-asset", "L9", "-input", slTest}, 2},
		{"explain bad -at", []string{"explain", "-rule", "streetlight.dark_at_night", "-asset", "L1", "-at", "yesterday", "-input", slTest}, 2},
		{"explain invalid rules", []string{"explain", "-rule", "x.y", "-asset", "L1", "-input", slTest, bad}, 3},
		{"explain missing input", []string{"explain", "-rule", "x.y", "-asset", "L1", "-input", filepath.Join(dir, "none.yaml")}, 3},
		{"explain unit-test input", []string{"explain", "-rule", "streetlight.dark_at_night", "-asset", "L1", "-input", slTest}, 0},
		{"explain unit-test input json", []string{"explain", "-json", "-rule", "streetlight.dark_at_night", "-asset", "L1", "-input", slTest, "-case", "relay off at night is dark too"}, 0},
		{"explain unknown case", []string{"explain", "-rule", "streetlight.dark_at_night", "-asset", "L1", "-input", slTest, "-case", "nope"}, 3},
		{"explain unreachable influxdb", []string{"explain", "-rule", "streetlight.dark_at_night", "-asset", "SL-001-01",
			"-influx", fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), "-inventory", "../../../configs/inventory-demo.yaml", good[0]}, 3},
		{"backtest without from", []string{"backtest", "-input", slTest}, 2},
		{"backtest bad from", []string{"backtest", "-from", "then", "-input", slTest}, 2},
		{"backtest empty range", []string{"backtest", "-from", "2026-06-21T23:00:00+08:00", "-to", "2026-06-21T22:00:00+08:00", "-input", slTest}, 2},
		{"backtest unknown kind", []string{"backtest", "-quiet", "-from", "2026-06-21T22:00:00+08:00", "-to", "2026-06-21T23:00:00+08:00", "-kind", "tram", "-input", slTest}, 2},
		{"backtest unit-test input", []string{"backtest", "-quiet", "-from", "2026-06-21T22:00:00+08:00", "-to", "2026-06-21T23:00:00+08:00", "-input", slTest}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if got := run(context.Background(), tc.args, &out, &errb); got != tc.want {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", got, tc.want, out.String(), errb.String())
			}
		})
	}
}

func TestHelpExplainsEveryFlag(t *testing.T) {
	for _, cmd := range []string{"explain", "backtest"} {
		var out bytes.Buffer
		if code := run(context.Background(), []string{"help", cmd}, &out, io.Discard); code != 0 {
			t.Fatalf("help %s: exit %d", cmd, code)
		}
		flags := []string{"-influx", "-db", "-rp", "-input", "-case", "-inventory", "-tz", "-chunk", "-tick", "-json"}
		if cmd == "explain" {
			flags = append(flags, "-rule", "-asset", "-at", "-lookback")
		} else {
			flags = append(flags, "-from", "-to", "-asset", "-kind", "-rule", "-quiet")
		}
		for _, f := range append(flags, "Exit codes") {
			if !strings.Contains(out.String(), "  "+f) && !strings.Contains(out.String(), f) {
				t.Errorf("help %s does not explain %s:\n%s", cmd, f, out.String())
			}
		}
	}
}

// TestAgainstInfluxDB runs explain and backtest as an author would, against
// a real InfluxDB holding a night of three lamps: L1 goes dark 21:30-22:20
// (one episode: fired 21:40, cleared 22:25), L2 only 21:50-21:56 (no
// episode: shorter than for).
func TestAgainstInfluxDB(t *testing.T) {
	dir := t.TempDir()
	cst := time.FixedZone("CST", 8*3600)
	at := func(h, m int) time.Time { return time.Date(2026, 6, 21, h, m, 0, 0, cst) }
	invFile := filepath.Join(dir, "inventory.yaml")
	var inv strings.Builder
	inv.WriteString("assets:\n")
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&inv, "  - {id: L%d, kind: streetlight, profile: citylight-slc200, modbus: {host: \"127.0.0.1:15020\", unit: %d}, lat: 31.23, lon: 121.47, district: \"310101\", grid: \"31010100101\", code: \"310101011800000%d\", attrs: {circuit: C%d, rated_power_w: 100.0}}\n", i, i, i, i)
	}
	if err := os.WriteFile(invFile, []byte(inv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ruleFile := filepath.Join(dir, "streetlight.yaml")
	if err := os.WriteFile(ruleFile, []byte(`rules:
  - id: streetlight.dark_at_night
    kind: streetlight
    when: is_dark() && (!relay_on || current_a < 0.03)
    for: 10m
    keep_firing_for: 5m
    severity: major
    case: {service: streetlight_fault, title: "路灯不亮 {{ .Asset.ID }}"}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	assets, err := devices.LoadInventory(invFile, cat)
	if err != nil {
		t.Fatal(err)
	}
	enc := influx.NewEncoder("gw-test")
	var lines []byte
	r := &devices.Reading{}
	for ts := at(21, 0); ts.Before(at(23, 0)); ts = ts.Add(30 * time.Second) {
		for _, a := range assets.Assets {
			r.Reset(a)
			r.Time = ts
			ri, _ := a.Schema.Index("relay_on")
			ci, _ := a.Schema.Index("current_a")
			r.Values[ri] = devices.BoolValue(true)
			cur := 0.43
			if a.ID == "L1" && !ts.Before(at(21, 30)) && ts.Before(at(22, 20)) || a.ID == "L2" && !ts.Before(at(21, 50)) && ts.Before(at(21, 56)) {
				cur = 0.01
			}
			r.Values[ci] = devices.FloatValue(cur)
			lines = enc.Append(lines, r)
		}
	}
	db := testenv.StartInfluxDB(t)
	resp, err := http.Post(db.URL()+"/write?db="+db.DB, "text/plain", bytes.NewReader(lines))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := db.WaitCount(db.DB, "streetlight", "current_a", 720, 30*time.Second); n != 720 {
		t.Fatalf("influxdb holds %d points, want 720", n)
	}
	src := []string{"-influx", db.URL(), "-db", db.DB, "-inventory", invFile, "-tz", "Asia/Shanghai"}

	t.Run("backtest", func(t *testing.T) {
		var out, errb bytes.Buffer
		args := append(append([]string{"backtest", "-json", "-from", "2026-06-21T21:00:00+08:00", "-to", "2026-06-21T23:00:00+08:00", "-chunk", "25m"}, src...), ruleFile)
		if code := run(context.Background(), args, &out, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		var rep rules.BacktestReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Points != 720 || len(rep.Episodes) != 1 {
			t.Fatalf("%d points, episodes %+v; want 720 and L1's", rep.Points, rep.Episodes)
		}
		ep := rep.Episodes[0]
		if ep.Group != "L1" || !ep.Start.Equal(at(21, 30)) || !ep.FiredAt.Equal(at(21, 40)) || !ep.ClearedAt.Equal(at(22, 25)) {
			t.Errorf("episode %+v: want L1 21:30 / 21:40 / 22:25", ep)
		}
		if !strings.Contains(errb.String(), "100.0% of the range") {
			t.Errorf("no progress on stderr: %q", errb.String())
		}
	})
	t.Run("backtest text", func(t *testing.T) {
		var out bytes.Buffer
		args := append(append([]string{"backtest", "-quiet", "-from", "2026-06-21T21:00:00+08:00", "-to", "2026-06-21T23:00:00+08:00"}, src...), ruleFile)
		if code := run(context.Background(), args, &out, io.Discard); code != 0 {
			t.Fatalf("exit %d", code)
		}
		for _, want := range []string{"streetlight.dark_at_night  group L1  assets [L1]  major",
			"start 2026-06-21T21:30:00+08:00  fired 2026-06-21T21:40:00+08:00  cleared 2026-06-21T22:25:00+08:00  duration 55m0s"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("report lacks %q:\n%s", want, out.String())
			}
		}
	})
	t.Run("explain the negative case", func(t *testing.T) {
		var out, errb bytes.Buffer
		args := append(append([]string{"explain", "-rule", "streetlight.dark_at_night", "-asset", "L2", "-at", "2026-06-21T21:58:00+08:00"}, src...), ruleFile)
		if code := run(context.Background(), args, &out, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		for _, want := range []string{"NOT FIRING", "shorter than for 10m0s", "current_a < 0.03 = false", "2026-06-21T21:56:00+08:00  inactive"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("explanation lacks %q:\n%s", want, out.String())
			}
		}
	})
	t.Run("unknown database", func(t *testing.T) {
		args := []string{"backtest", "-quiet", "-from", "2026-06-21T21:00:00+08:00", "-to", "2026-06-21T23:00:00+08:00",
			"-influx", db.URL(), "-db", "nope", "-inventory", invFile, ruleFile}
		if code := run(context.Background(), args, io.Discard, io.Discard); code != 3 {
			t.Fatalf("exit %d, want 3", code)
		}
	})
}
