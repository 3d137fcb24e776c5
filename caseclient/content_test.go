package caseclient

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/citygw/citygw/rules"
)

func TestBuildCase(t *testing.T) {
	inv, codes := testInventory(t), testCodes(t)
	b := &builder{codes: codes, inv: inv, telemetry: "http://g/d?var-asset={asset}&kind={kind}&from={from_ms}&to={to_ms}",
		exprs: func(r string) string {
			return map[string]string{"streetlight.dark_at_night": "is_dark() && current_a < 0.03"}[r]
		}}
	wlat, wlon := GCJ02ToWGS84(31.17530398364597, 121.531541859215)
	cases := []struct {
		name  string
		tr    rules.Transition
		check func(t *testing.T, c *Case)
	}{
		{"single lamp, component from the service's class",
			fire("streetlight.dark_at_night", "streetlight_fault", "streetlight", "SL-1", []string{"SL-1"}, t0, "major"),
			func(t *testing.T, c *Case) {
				want := Case{Type: TypeComponent, Major: "01", Sub: "18", ComponentCode: "3101010118000001", Grid: "31010100103",
					District: "310101", Lat: 31.242, Lon: 121.4801, Department: "区市政照明管理所", Deadline: "2 working days",
					DeadlineZH: "2个工作日", Severity: "major", Expression: "is_dark() && current_a < 0.03"}
				if c.Type != want.Type || c.Major != want.Major || c.Sub != want.Sub || c.ComponentCode != want.ComponentCode ||
					c.Grid != want.Grid || c.District != want.District || c.Lat != want.Lat || c.Lon != want.Lon ||
					c.Department != want.Department || c.Deadline != want.Deadline || c.DeadlineZH != want.DeadlineZH ||
					c.Severity != want.Severity || c.Expression != want.Expression {
					t.Errorf("got %+v", c)
				}
				if c.Key != "cgw-"+c.EpisodeID || !c.FirstSeen.Equal(t0) || c.Values["current_a"] != 0.01 || c.Thresholds["current_a"] != 0.03 {
					t.Errorf("key/first seen/evidence: %s %v %v %v", c.Key, c.FirstSeen, c.Values, c.Thresholds)
				}
				if want := "http://g/d?var-asset=SL-1&kind=streetlight&from=1795719600000&to=1795727400000"; c.Telemetry != want {
					t.Errorf("telemetry %s, want %s", c.Telemetry, want)
				}
			}},
		{"GCJ-02 asset is sent in WGS84",
			fire("streetlight.dark_at_night", "streetlight_fault", "streetlight", "SL-GCJ", []string{"SL-GCJ"}, t0, "major"),
			func(t *testing.T, c *Case) {
				if c.Lat != round7(wlat) || c.Lon != round7(wlon) || c.SourceCRS != "gcj02" {
					t.Errorf("location %v,%v (%s), want %v,%v", c.Lat, c.Lon, c.SourceCRS, wlat, wlon)
				}
				if metres(c.Lat, c.Lon, 31.1774276, 121.5272106) > 0.05 {
					t.Errorf("location %v,%v is not the WGS84 point of the eviltransform vector", c.Lat, c.Lon)
				}
			}},
		{"circuit group: centroid, all component codes, circuit class",
			fire("streetlight.circuit_dead", "streetlight_circuit_fault", "streetlight", "CAB-1-C1", []string{"SL-1", "SL-2", "SL-3"}, t0, "critical"),
			func(t *testing.T, c *Case) {
				if c.Lat != 31.243 || c.Lon != 121.4811 {
					t.Errorf("centroid %v,%v", c.Lat, c.Lon)
				}
				if c.Major+c.Sub != "0117" || c.ComponentCode != "3101010118000001" || len(c.ComponentCodes) != 3 {
					t.Errorf("codes %s%s %s %v", c.Major, c.Sub, c.ComponentCode, c.ComponentCodes)
				}
				if c.Expression != "" {
					t.Errorf("unknown rule got expression %q", c.Expression)
				}
			}},
		{"event: bin overflow",
			fire("waste_bin.fill_high", "bin_overflow", "waste_bin", "BIN-1", []string{"BIN-1"}, t0, "minor"),
			func(t *testing.T, c *Case) {
				if c.Type != TypeEvent || c.Major+c.Sub != "0102" || c.ClassName.ZH != "市容环境" || c.ServiceName.ZH != "垃圾满溢" {
					t.Errorf("event case %+v", c)
				}
			}},
		{"multi-kind service takes the kind's component class",
			fire("gas_station.silent", "device_offline", "gas_station", "GAS-1", nil, t0, "major"),
			func(t *testing.T, c *Case) {
				if c.Major+c.Sub != "0135" || len(c.Assets) != 1 || c.Assets[0] != "GAS-1" || c.ComponentCode != "3101010135000001" {
					t.Errorf("absence case (no members, group key = asset): %+v", c)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := b.build(&tc.tr)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
			text := c.Text()
			if !strings.HasPrefix(text, keyTag(c.Key)) {
				t.Errorf("text must start with the key tag: %q", text[:40])
			}
			for _, want := range []string{c.Title, c.Department, c.DeadlineZH, c.Rule, c.Major + c.Sub} {
				if !strings.Contains(text, want) {
					t.Errorf("text lacks %q:\n%s", want, text)
				}
			}
		})
	}
	tr := fire("x.y", "no_such_service", "streetlight", "SL-1", []string{"SL-1"}, t0, "major")
	if _, err := b.build(&tr); err == nil || !strings.Contains(err.Error(), "no_such_service") {
		t.Errorf("unknown service: %v", err)
	}
}

func TestCaseTextIsCappedAt4000Characters(t *testing.T) {
	b := &builder{codes: testCodes(t), inv: testInventory(t)}
	tr := fire("streetlight.dark_at_night", "streetlight_fault", "streetlight", "SL-1", []string{"SL-1"}, t0, "major")
	tr.Description = strings.Repeat("路灯不亮。", 2000)
	c, err := b.build(&tr)
	if err != nil {
		t.Fatal(err)
	}
	text := c.Text()
	if n := utf8.RuneCountInString(text); n != maxDescription {
		t.Fatalf("text is %d characters, want %d", n, maxDescription)
	}
	if !strings.HasPrefix(text, keyTag(c.Key)) || !utf8.ValidString(text) {
		t.Fatal("the cut must keep the key tag and valid UTF-8")
	}
}

// Evidence JSON cannot encode (NaN, ±Inf, odd types) must not stop a case
// from being persisted: the engine would retry the batch forever.
func TestNonFiniteEvidenceIsPersisted(t *testing.T) {
	d := startDesk(t, nil)
	c := startClient(t, fastConfig(t, deskSink(d)))
	f := fire("r.test", "streetlight_fault", "streetlight", "SL-1", []string{"SL-1"}, t0, "major")
	f.Values = map[string]any{"x": math.NaN(), "y": math.Inf(1), "d": time.Minute, "m": map[string]any{"z": math.Inf(-1)}, "c": complex(1, 2)}
	f.Thresholds = map[string]any{"asset.pressure_min_kpa": math.NaN()}
	if err := c.Transitions(context.Background(), []rules.Transition{f, cleared(f, t0.Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "delivery", func() bool { return c.counter("citygw_case_outbox_depth") == 0 && len(d.Requests()) == 1 })
	if desc := d.Requests()[0].Description; !strings.Contains(desc, "x=NaN") || !strings.Contains(desc, "y=+Inf") {
		t.Errorf("description %s", desc)
	}
}
