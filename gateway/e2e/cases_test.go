package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/gateway/testenv"
)

// The test desk's credentials; neither may appear in any log.
const (
	deskAPIKey = "e2e-desk-key-8b41"
	deskSecret = "whsec_ZTJlLXdlYmhvb2stc2VjcmV0LTA0MjYtNzc3Nw==" // base64 of 24 bytes
)

// nightCity writes a copy of configs/city-small.yaml centred where it is
// night now, so that is_dark() holds for the lamps both in the simulator
// (which switches them on) and in the gateway's rules, whatever the hour CI
// runs at: local solar midnight is at longitude -15° × UTC hours.
func nightCity(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "configs", "city-small.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	hours := float64(now.Hour()) + float64(now.Minute())/60
	lon := math.Mod(-15*hours+540, 360) - 180
	center := regexp.MustCompile(`(?m)^center: .*$`)
	if !center.Match(b) {
		t.Fatal("city-small.yaml has no center line")
	}
	b = center.ReplaceAll(b, []byte(fmt.Sprintf("center: {lat: 10.0, lon: %.4f}", lon)))
	file := filepath.Join(dir, "city-night.yaml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// fastRules shortens the shipped rules' durations so that a case opens in
// seconds; conditions, groups and inhibitions are unchanged. Absence waits
// stay longer than the other rules' `for`, as in the shipped set, so that a
// dead circuit's cabinet rule mutes its lamps before they count as silent.
func fastRules(b []byte) []byte {
	b = regexp.MustCompile(`(?m)^(\s+for:) \S+`).ReplaceAll(b, []byte("$1 2s"))
	b = regexp.MustCompile(`(?m)^(\s+keep_firing_for:) \S+`).ReplaceAll(b, []byte("$1 3s"))
	return regexp.MustCompile(`(?m)^(\s+absent:) \S+`).ReplaceAll(b, []byte("$1 20s"))
}

// desk is the reference case desk process.
type desk struct {
	proc *testenv.Process
	url  string
}

func startDesk(t *testing.T, bin, dir string) *desk {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	d := &desk{url: "http://" + addr}
	d.proc = testenv.StartProcess(t, bin, "-listen", addr, "-dir", filepath.Join(dir, "desk"),
		"-api-key", deskAPIKey, "-webhook-secret", deskSecret,
		"-citycodes", filepath.Join(repoRoot(t), "configs", "citycodes.yaml"))
	if err := d.proc.WaitOutput("casedesk ready", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	return d
}

// start restarts the stopped desk on its address and waits for it.
func (d *desk) start(t testing.TB) {
	t.Helper()
	if err := d.proc.Start(); err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitTCP(strings.TrimPrefix(d.url, "http://"), 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// deskRequest is what the desk recorded of one Open311 service request.
type deskRequest struct {
	ID          string              `json:"service_request_id"`
	ServiceCode string              `json:"service_code"`
	Status      string              `json:"status"`
	Description string              `json:"description"`
	Lat         *float64            `json:"lat"`
	Long        *float64            `json:"long"`
	DeviceID    string              `json:"device_id"`
	Attributes  map[string][]string `json:"attributes"`
	Updates     []struct {
		ID          string `json:"update_id"`
		Status      string `json:"status"`
		Description string `json:"description"`
	} `json:"updates"`
}

func (r deskRequest) attr(k string) string {
	if v := r.Attributes[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (d *desk) requests(t testing.TB) []deskRequest {
	var rs []deskRequest
	getJSON(t, d.url+"/_control/requests", &rs)
	return rs
}

func (d *desk) webhooks(t testing.TB) []struct {
	ID string `json:"webhook_id"`
} {
	var ws []struct {
		ID string `json:"webhook_id"`
	}
	getJSON(t, d.url+"/_control/webhooks", &ws)
	return ws
}

func (d *desk) fault(t testing.TB, spec string) {
	t.Helper()
	method, body := "POST", spec
	if spec == "" {
		method = "DELETE"
	}
	req, _ := http.NewRequest(method, d.url+"/_control/fault", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("desk fault %q: %v", spec, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("desk fault %q: %s", spec, resp.Status)
	}
}

// casesFor returns the desk's requests about asset with service code code.
func casesFor(rs []deskRequest, code, asset string) []deskRequest {
	var out []deskRequest
	for _, r := range rs {
		if r.ServiceCode == code && (r.DeviceID == asset || strings.Contains(r.attr("component_code")+" "+r.Description, asset)) {
			out = append(out, r)
		}
	}
	return out
}

// faultID injects a fault and returns its id for clearing.
func (c *city) faultID(t testing.TB, fault, asset string, params map[string]any) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"fault": fault, "asset": asset, "for": "30m", "params": params})
	resp, err := http.Post(c.control+"/faults", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("injecting %s on %s: %s %s", fault, asset, resp.Status, b)
	}
	var f struct {
		ID string `json:"id"`
	}
	json.Unmarshal(b, &f)
	return f.ID
}

func (c *city) clear(t testing.TB, id string) {
	t.Helper()
	req, _ := http.NewRequest("DELETE", c.control+"/faults/"+id, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestCases is issue 4's proof with real processes: faults injected in the
// simulated city open exactly one case each on the reference case desk, with
// the right codes and location, over Open311 and the signed webhook; clearing
// a fault adds the "cleared" update to the same case; the desk failing (500,
// 429 with Retry-After, down) and the gateway killed with SIGKILL while
// cases wait in its outbox still give every case exactly once; a dead
// circuit opens one case for its cabinet, none for its lamps.
//
// Run it alone: go test -race -count=1 -v -run TestCases ./gateway/e2e
func TestCases(t *testing.T) {
	st := startStack(t)
	dir, db, mosq := st.dir, st.db, st.mosq
	deskBin := testenv.BuildBinary(t, "github.com/citygw/citygw/caseclient/cmd/casedesk", st.binDir, false)
	dk := startDesk(t, deskBin, dir)
	c := startCityFrom(t, st.simBin, dir, nightCity(t, dir), mosq.URL(), "-mqtt-interval", "1s")
	keyFile := filepath.Join(dir, "desk.key")
	os.WriteFile(keyFile, []byte(deskAPIKey), 0o600)
	t.Setenv("CITYGW_E2E_WEBHOOK_SECRET", deskSecret) // inherited by the gateway process
	g := startGatewayWith(t, st.gwBin, dir, c, db, mosq.URL(), gatewayOptions{rules: fastRules, extra: fmt.Sprintf(`cases:
  codes: %q
  poll_interval: 2s
  reopen_wait: 5s
  retry_base: 200ms
  retry_max: 2s
  breaker_failures: 20
  breaker_cooldown: 1s
  timeout: 3s
  sinks:
    - {name: desk, type: open311, url: %q}
    - {name: hook, type: webhook, url: %q}
  secrets:
    desk: {api_key: {file: %q}}
    hook: {secret: {env: CITYGW_E2E_WEBHOOK_SECRET}}
`, filepath.Join(repoRoot(t), "configs", "citycodes.yaml"), dk.url, dk.url+"/webhook", keyFile)})

	lamp, gas, bin := "SL-001-02", "GAS-001", "BIN-0003"
	for _, id := range []string{lamp, gas, bin} {
		if c.inv.Lookup(id) == nil {
			t.Fatalf("the small city has no asset %s", id)
		}
	}
	// Let the gateway see the healthy city first.
	time.Sleep(4 * time.Second)

	waitCase := func(code, asset string) deskRequest {
		t.Helper()
		var got []deskRequest
		waitFor(t, 90*time.Second, "a "+code+" case for "+asset, func() bool {
			got = casesFor(dk.requests(t), code, asset)
			return len(got) > 0
		})
		return got[0]
	}

	faults := map[string]string{}
	t.Run("a lamp out, a gas leak and a bin fire each open one case with the right codes and place", func(t *testing.T) {
		faults[lamp] = c.faultID(t, "lamp_out", lamp, nil)
		faults[gas] = c.faultID(t, "gas_leak", gas, map[string]any{"rate_per_min": 600})
		faults[bin] = c.faultID(t, "bin_fire", bin, map[string]any{"rate_per_min": 1200})
		for _, want := range []struct{ code, asset, sub string }{
			{"SL-FAULT", lamp, "18"}, {"GAS-LEAK", gas, ""}, {"BIN-FIRE", bin, ""}, // leak and fire are event (事件) classes
		} {
			r := waitCase(want.code, want.asset)
			a := c.inv.Lookup(want.asset)
			if r.Lat == nil || r.Long == nil || math.Abs(*r.Lat-a.Lat) > 1e-6 || math.Abs(*r.Long-a.Lon) > 1e-6 {
				t.Errorf("%s case at %v,%v; the asset is at %v,%v", want.asset, r.Lat, r.Long, a.Lat, a.Lon)
			}
			if got := r.attr("component_code"); !strings.Contains(got, a.Code) {
				t.Errorf("%s case component_code %q, want %s", want.asset, got, a.Code)
			}
			if want.sub != "" && r.attr("sub_class") != want.sub {
				t.Errorf("%s case sub_class %q, want %s", want.asset, r.attr("sub_class"), want.sub)
			}
			if r.attr("case_key") == "" || r.attr("deadline") == "" || r.attr("department") == "" {
				t.Errorf("%s case lacks case_key/deadline/department: %v", want.asset, r.Attributes)
			}
		}
	})

	t.Run("clearing a fault adds the cleared update to the same case", func(t *testing.T) {
		for _, id := range []string{lamp, gas, bin} {
			c.clear(t, faults[id])
		}
		for _, w := range []struct{ code, asset string }{{"SL-FAULT", lamp}, {"GAS-LEAK", gas}, {"BIN-FIRE", bin}} {
			waitFor(t, 90*time.Second, "the cleared update of "+w.asset, func() bool {
				for _, r := range casesFor(dk.requests(t), w.code, w.asset) {
					for _, u := range r.Updates {
						if strings.HasSuffix(u.ID, ":cleared") {
							return true
						}
					}
				}
				return false
			})
			if rs := casesFor(dk.requests(t), w.code, w.asset); len(rs) != 1 {
				t.Errorf("%d %s cases for %s after clearing, want the one", len(rs), w.code, w.asset)
			}
		}
	})

	t.Run("desk answering 500 then 429 with Retry-After: still exactly one case", func(t *testing.T) {
		failed := func(reason string) func() bool {
			return func() bool {
				return g.metric(t, "citygw_cases_failed_total", `reason="`+reason+`"`) >= 1
			}
		}
		dk.fault(t, `{"mode":"500","methods":["POST"]}`) // until replaced by the 429s
		id := c.faultID(t, "bin_knocked_over", "BIN-0005", nil)
		defer c.clear(t, id)
		waitFor(t, 30*time.Second, "the case's delivery to meet the desk's 500s", failed("http_500"))
		dk.fault(t, `{"mode":"429","retry_after":"2s","count":2,"methods":["POST"]}`)
		waitFor(t, 30*time.Second, "the case's delivery to meet the desk's 429s", failed("http_429"))
		waitCase("BIN-DAMAGE", "BIN-0005")
	})

	t.Run("desk down for a minute: the case waits in the outbox and arrives once", func(t *testing.T) {
		dk.proc.Stop()
		down := time.Now()
		id := c.faultID(t, "bin_overflow", "BIN-0007", nil)
		defer c.clear(t, id)
		waitFor(t, 60*time.Second, "the case to wait in the outbox", func() bool {
			return g.metric(t, "citygw_case_outbox_depth") >= 1
		})
		time.Sleep(time.Until(down.Add(time.Minute)))
		dk.start(t)
		waitCase("BIN-FULL", "BIN-0007")
	})

	t.Run("gateway killed with SIGKILL while a case is in the outbox: delivered once after restart", func(t *testing.T) {
		dk.proc.Stop()
		id := c.faultID(t, "gas_pressure_low", "GAS-002", nil)
		defer c.clear(t, id)
		waitFor(t, 60*time.Second, "the gas case to wait in the outbox", func() bool {
			return g.metric(t, "citygw_case_outbox_depth") >= 1
		})
		g.proc.Kill()
		dk.start(t)
		if err := g.proc.Start(); err != nil {
			t.Fatal(err)
		}
		g.waitRunning(t, 2)
		waitCase("GAS-PRESSURE", "GAS-002")
	})

	t.Run("a dead circuit opens one case for its cabinet, none for its lamps", func(t *testing.T) {
		circuit := "CAB-002-C1"
		var lamps []string
		for _, a := range c.inv.Assets {
			if a.Attr("circuit") == circuit {
				lamps = append(lamps, a.ID)
			}
		}
		if len(lamps) == 0 {
			t.Fatalf("no lamps on %s", circuit)
		}
		id := c.faultID(t, "circuit_dead", circuit, nil)
		defer c.clear(t, id)
		waitCase("SL-CIRCUIT", "CAB-002")
		// Past the lamps' (shortened) absence time: they are silent, but the
		// cabinet's episode explains them.
		time.Sleep(25 * time.Second)
		rs := dk.requests(t)
		if n := len(casesFor(rs, "SL-CIRCUIT", "CAB-002")); n != 1 {
			t.Errorf("%d circuit cases for CAB-002, want 1", n)
		}
		for _, l := range lamps {
			for _, code := range []string{"SL-FAULT", "DEV-OFFLINE"} {
				if n := len(casesFor(rs, code, l)); n > 0 {
					t.Errorf("lamp %s of the dead circuit has %d %s cases", l, n, code)
				}
			}
		}
	})

	t.Run("no case twice, on either sink", func(t *testing.T) {
		rs := dk.requests(t)
		keys := map[string]int{}
		for _, r := range rs {
			keys[r.attr("case_key")]++
		}
		for k, n := range keys {
			if n > 1 {
				t.Errorf("case %s opened %d times on the Open311 desk", k, n)
			}
		}
		opens := map[string]int{}
		for _, w := range dk.webhooks(t) {
			if strings.HasSuffix(w.ID, ":open") {
				opens[strings.TrimSuffix(w.ID, ":open")]++
			}
		}
		for k := range keys {
			if opens[k] != 1 {
				t.Errorf("case %s reached the webhook %d times, want once", k, opens[k])
			}
		}
		t.Logf("%d cases on the desk, %d over the webhook", len(keys), len(opens))
	})

	for _, secret := range []string{deskAPIKey, deskSecret} {
		if strings.Contains(g.proc.Output(), secret) {
			t.Errorf("the gateway logged a secret")
		}
	}
}
