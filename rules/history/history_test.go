package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// The scenario: three lamps in Shanghai on a June night, a reading every
// 30 s from 21:00 to 23:00 local time.
//   - L1 goes dark at 21:30 and is relit at 22:20: the lamp-out episode
//     starts 21:30, fires 21:40 (for 10m), clears 22:25 (keep_firing_for 5m).
//   - L2 is dark for 6 minutes only (21:50-21:56): pending, then cancelled;
//     no episode (the negative case).
//   - L3 burns all night.
var (
	cst       = time.FixedZone("CST", 8*3600)
	scnStart  = time.Date(2026, 6, 21, 21, 0, 0, 0, cst)
	scnEnd    = time.Date(2026, 6, 21, 23, 0, 0, 0, cst)
	scnStep   = 30 * time.Second
	at        = func(h, m int) time.Time { return time.Date(2026, 6, 21, h, m, 0, 0, cst) }
	darkRules = `rules:
  - id: streetlight.dark_at_night
    kind: streetlight
    when: is_dark() && (!relay_on || current_a < 0.03)
    for: 10m
    keep_firing_for: 5m
    severity: major
    case: {service: streetlight_fault, title: "路灯不亮 {{ .Asset.ID }}"}
`
	inventoryYAML = `assets:
  - {id: L1, kind: streetlight, profile: citylight-slc200, modbus: {host: "127.0.0.1:15020", unit: 1}, lat: 31.23, lon: 121.47, district: "310101", grid: "31010100101", code: "3101010118000001", attrs: {circuit: C1, rated_power_w: 100.0}}
  - {id: L2, kind: streetlight, profile: citylight-slc200, modbus: {host: "127.0.0.1:15020", unit: 2}, lat: 31.23, lon: 121.47, district: "310101", grid: "31010100101", code: "3101010118000002", attrs: {circuit: C2, rated_power_w: 100.0}}
  - {id: L3, kind: streetlight, profile: citylight-slc200, modbus: {host: "127.0.0.1:15020", unit: 3}, lat: 31.23, lon: 121.47, district: "310101", grid: "31010100101", code: "3101010118000003", attrs: {circuit: C3, rated_power_w: 100.0}}
`
)

func dark(id string, t time.Time) bool {
	switch id {
	case "L1":
		return !t.Before(at(21, 30)) && t.Before(at(22, 20))
	case "L2":
		return !t.Before(at(21, 50)) && t.Before(at(21, 56))
	}
	return false
}

type scenario struct {
	cat   *devices.Catalog
	inv   *devices.Inventory
	rules []string
	lines []byte // line protocol, as the gateway's encoder writes it
}

func newScenario(t *testing.T) *scenario {
	t.Helper()
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	invFile := filepath.Join(dir, "inventory.yaml")
	ruleFile := filepath.Join(dir, "streetlight.yaml")
	if err := os.WriteFile(invFile, []byte(inventoryYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ruleFile, []byte(darkRules), 0o644); err != nil {
		t.Fatal(err)
	}
	inv, err := devices.LoadInventory(invFile, cat)
	if err != nil {
		t.Fatal(err)
	}
	s := &scenario{cat: cat, inv: inv, rules: []string{ruleFile}}
	enc := influx.NewEncoder("gw-test")
	r := &devices.Reading{}
	for ts := scnStart; ts.Before(scnEnd); ts = ts.Add(scnStep) {
		for _, id := range []string{"L1", "L2", "L3"} {
			a := inv.Lookup(id)
			r.Reset(a)
			r.Time, r.Received = ts, ts
			set := func(name string, v devices.Value) {
				i, _ := a.Schema.Index(name)
				r.Values[i] = v
			}
			set("relay_on", devices.BoolValue(true))
			set("voltage_v", devices.FloatValue(229.5))
			set("dim_level", devices.IntValue(100))
			cur := 0.43
			if dark(id, ts) {
				cur = 0.01
			}
			set("current_a", devices.FloatValue(cur))
			s.lines = enc.Append(s.lines, r)
		}
	}
	return s
}

// fill writes the scenario into a real InfluxDB through its /write API.
func (s *scenario) fill(t *testing.T, db *testenv.InfluxDB) {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("%s/write?db=%s&precision=ns", db.URL(), db.DB), "text/plain", bytes.NewReader(s.lines))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write: %s", resp.Status)
	}
	if n := db.WaitCount(db.DB, "streetlight", "current_a", 3*240, 30*time.Second); n != 3*240 {
		t.Fatalf("influxdb holds %d points, want %d", n, 3*240)
	}
}

func checkBacktest(t *testing.T, rep *rules.BacktestReport) {
	t.Helper()
	if rep.Points != 3*240 {
		t.Errorf("replayed %d points, want %d", rep.Points, 3*240)
	}
	if len(rep.Episodes) != 1 {
		t.Fatalf("episodes %+v, want exactly L1's", rep.Episodes)
	}
	ep := rep.Episodes[0]
	if ep.Rule != "streetlight.dark_at_night" || ep.Group != "L1" || strings.Join(ep.Assets, ",") != "L1" {
		t.Errorf("episode %+v, want dark_at_night for L1", ep)
	}
	if !ep.Start.Equal(at(21, 30)) || !ep.FiredAt.Equal(at(21, 40)) || !ep.ClearedAt.Equal(at(22, 25)) {
		t.Errorf("episode start %s fired %s cleared %s, want 21:30, 21:40, 22:25", ep.Start, ep.FiredAt, ep.ClearedAt)
	}
	if ep.Duration != 55*time.Minute || ep.Title != "路灯不亮 L1" {
		t.Errorf("episode duration %s title %q", ep.Duration, ep.Title)
	}
	want := []rules.RuleSummary{{Rule: "streetlight.dark_at_night", Episodes: 1, Cancelled: 1}}
	if fmt.Sprint(rep.Rules) != fmt.Sprint(want) {
		t.Errorf("per rule %+v, want %+v", rep.Rules, want)
	}
}

func TestBacktestFromInfluxDB(t *testing.T) {
	s := newScenario(t)
	db := testenv.StartInfluxDB(t)
	s.fill(t, db)
	ctx := context.Background()
	src := &InfluxDB{URL: db.URL(), DB: db.DB, Chunk: 17 * time.Minute, ChunkSize: 100} // spans and answer chunks both cut the range
	if err := src.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	var progress []rules.BacktestProgress
	rep, err := rules.Backtest(ctx, s.cat, s.inv, s.rules, src, rules.BacktestOptions{From: scnStart, To: scnEnd,
		Location: cst, ProgressEvery: 100, Progress: func(p rules.BacktestProgress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatal(err)
	}
	checkBacktest(t, rep)
	if len(progress) != 8 || progress[len(progress)-1].Fraction != 1 || progress[0].Points != 100 {
		t.Errorf("progress %+v: want every 100 points and a final 100%%", progress)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i].Fraction < progress[i-1].Fraction {
			t.Errorf("progress went back: %+v", progress)
		}
	}

	t.Run("asset filter", func(t *testing.T) {
		rep, err := rules.Backtest(ctx, s.cat, s.inv, s.rules, src, rules.BacktestOptions{From: scnStart, To: scnEnd, Assets: []string{"L2", "L3"}})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Points != 2*240 || len(rep.Episodes) != 0 || rep.Rules[0].Cancelled != 1 {
			t.Errorf("L2+L3: %d points, episodes %+v, rules %+v; want 480 points, none, one cancelled", rep.Points, rep.Episodes, rep.Rules)
		}
	})

	t.Run("explain the negative case", func(t *testing.T) {
		ex, err := rules.Explain(ctx, s.cat, s.inv, s.rules, src, rules.ExplainOptions{Rule: "streetlight.dark_at_night", Asset: "L2",
			At: at(21, 58), Location: cst})
		if err != nil {
			t.Fatal(err)
		}
		if ex.Verdict.State != "inactive" || ex.Result == nil || *ex.Result {
			t.Fatalf("verdict %+v result %v, want inactive and false", ex.Verdict, ex.Result)
		}
		for _, want := range []string{"NOT FIRING", "it last held from 2026-06-21T21:50:00+08:00 until 2026-06-21T21:56:00+08:00 (6m0s), shorter than for 10m0s"} {
			if !strings.Contains(ex.Verdict.Summary, want) {
				t.Errorf("summary %q lacks %q", ex.Verdict.Summary, want)
			}
		}
		var b strings.Builder
		rules.WriteExplanation(&b, ex)
		for _, want := range []string{"is_dark() = true", "current_a < 0.03 = false", "current_a = 0.43", "!relay_on = false"} {
			if !strings.Contains(b.String(), want) {
				t.Errorf("explanation lacks %q:\n%s", want, b.String())
			}
		}
		if !ex.AssetLast.Equal(at(21, 58)) || ex.Readings != 31 {
			t.Errorf("evaluated at %s over %d readings, want 21:58 and the 31 readings of 15 minutes", ex.AssetLast, ex.Readings)
		}
	})

	t.Run("explain the firing lamp", func(t *testing.T) {
		ex, err := rules.Explain(ctx, s.cat, s.inv, s.rules, src, rules.ExplainOptions{Rule: "streetlight.dark_at_night", Asset: "L1",
			At: at(21, 45), Location: cst})
		if err != nil {
			t.Fatal(err)
		}
		v := ex.Verdict
		if v.State != "firing" || !v.Since.Equal(at(21, 30)) || !v.FiredAt.Equal(at(21, 40)) {
			t.Errorf("verdict %+v, want firing since 21:30, fired 21:40", v)
		}
	})
}

func TestUnreachableInfluxDB(t *testing.T) {
	s := newScenario(t)
	src := &InfluxDB{URL: fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), DB: "citygw", Client: &http.Client{Timeout: 5 * time.Second}}
	if err := src.Ping(context.Background()); err == nil {
		t.Fatal("ping of a closed port succeeded")
	}
	_, err := rules.Backtest(context.Background(), s.cat, s.inv, s.rules, src, rules.BacktestOptions{From: scnStart, To: scnEnd})
	if !errors.Is(err, rules.ErrSource) {
		t.Fatalf("err %v, want ErrSource", err)
	}
}

func TestInfluxDBQueryError(t *testing.T) {
	s := newScenario(t)
	db := testenv.StartInfluxDB(t)
	src := &InfluxDB{URL: db.URL(), DB: "no_such_db"}
	_, err := rules.Backtest(context.Background(), s.cat, s.inv, s.rules, src, rules.BacktestOptions{From: scnStart, To: scnEnd})
	if !errors.Is(err, rules.ErrSource) || !strings.Contains(err.Error(), "database not found") {
		t.Fatalf("err %v, want ErrSource naming the missing database", err)
	}
}

func TestBacktestFromLineProtocol(t *testing.T) {
	s := newScenario(t)
	lp, err := ParseLineProtocol(bytes.NewReader(s.lines))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := rules.Backtest(context.Background(), s.cat, s.inv, s.rules, lp, rules.BacktestOptions{From: scnStart, To: scnEnd, Location: cst})
	if err != nil {
		t.Fatal(err)
	}
	checkBacktest(t, rep)
}

func TestParseLineProtocol(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // fmt of the point, or the error
	}{
		{`streetlight,asset=L1,circuit=C1 relay_on=true,current_a=0.43,dim_level=100i 1782046800000000000`,
			`streetlight map[asset:L1 circuit:C1] map[current_a:0.43 dim_level:100 relay_on:true] 2026-06-21T13:00:00Z`},
		{`waste_bin,asset=B\ 1 state="lid, open=\"yes\"",fill_pct=3 1782046800000000000`,
			`waste_bin map[asset:B 1] map[fill_pct:3 state:lid, open="yes"] 2026-06-21T13:00:00Z`},
		{`my\,kind,asset=X f=F,g=5u 1`, `my,kind map[asset:X] map[f:false g:5] 1970-01-01T00:00:00Z`},
		{`streetlight,asset=L1 current_a=0.4`, `error: line 1: want "measurement,tags fields timestamp", got 2 section(s)`},
		{`streetlight,asset=L1 current_a=x 1`, `error: line 1: field current_a: strconv.ParseFloat: parsing "x": invalid syntax`},
		{`streetlight,asset current_a=1 1`, `error: line 1: tag "asset" has no value`},
		{`streetlight,asset=L1 current_a=1 soon`, `error: line 1: timestamp "soon": want integer nanoseconds`},
	} {
		lp, err := ParseLineProtocol(strings.NewReader("# comment\n\n" + tc.in + "\n"))
		got := ""
		if err != nil {
			got = "error: " + strings.Replace(err.Error(), "line 3", "line 1", 1)
		} else if len(lp) == 1 {
			p := lp[0]
			got = fmt.Sprintf("%s %v %v %s", p.Measurement, p.Tags, p.Fields, p.Time.Format(time.RFC3339))
		}
		if got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func FuzzParseLineProtocol(f *testing.F) {
	f.Add(`streetlight,asset=L1,circuit=C1 relay_on=true,current_a=0.43,dim_level=100i 1782046800000000000`)
	f.Add(`waste_bin,asset=B\ 1 state="lid, open=\"yes\"",fill_pct=3 1`)
	f.Add(`a b=1u 2`)
	f.Fuzz(func(t *testing.T, s string) {
		lp, err := ParseLineProtocol(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, p := range lp {
			if p.Tags == nil || p.Fields == nil {
				t.Fatalf("point without maps: %+v", p)
			}
		}
	})
}
