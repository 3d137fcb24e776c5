package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/testenv"
)

// minRequestsPerPoll is the coalesced minimum number of Modbus read requests
// for one poll of each shipped Modbus profile, counted by hand from the
// register maps (see gateway/modbuspoll/plan_test.go for the derivation).
var minRequestsPerPoll = map[string]float64{
	"citylight-slc200": 4, // coil 0; discrete 0; holding 0..13; input 0..21
	"citylight-ccu300": 4, // discrete 0..1; holding 0; holding 100..101; input 0..14
	"gasreg-rtu500":    2, // discrete 0; holding 0..29
}

// TestEndToEnd runs the telemetry spine with real processes: Mosquitto,
// InfluxDB 1.8.10, firmware-sim (a small city) and the gateway. It checks
// that every asset's readings reach InfluxDB with the values the simulator
// served or published, that Modbus polls use the coalesced minimum of
// requests, that a silent device is reported offline while its neighbours on
// the same port keep flowing, and that MQTT flow resumes by itself after
// Mosquitto is restarted, with nothing a bin published since the gateway
// subscribed lost (waitStored).
func TestEndToEnd(t *testing.T) {
	st := startStack(t)
	db := st.db
	c := startCity(t, st.simBin, st.dir, st.mosq.URL(), "-mqtt-interval", "1s")
	g := startGateway(t, st.gwBin, st.dir, c, db, st.mosq.URL())
	modbusAssets, mqttAssets := byTransport(c.inv.Assets)
	if len(modbusAssets) < 10 || len(mqttAssets) < 10 {
		t.Fatalf("the small city has %d Modbus and %d MQTT assets; want at least 10 of each", len(modbusAssets), len(mqttAssets))
	}

	count := func(a *devices.Asset) int { return len(points(t, db, a.Kind, a.ID)) }
	waitFor(t, 60*time.Second, "at least 3 points of every asset in InfluxDB", func() bool {
		for _, a := range c.inv.Assets {
			if count(a) < 3 {
				return false
			}
		}
		return true
	})

	t.Run("modbus values equal what the devices served", func(t *testing.T) {
		for _, a := range modbusAssets {
			checkModbusAsset(t, c, db, a)
		}
	})

	t.Run("modbus requests per poll are the coalesced minimum", func(t *testing.T) {
		// Points first, then the server's counts: polls landing in between
		// only raise the served count (the upper bound allows for them).
		stored := map[string]map[int64]map[string]any{}
		for _, a := range modbusAssets {
			stored[a.ID] = points(t, db, a.Kind, a.ID)
		}
		st := c.stats(t)
		for _, a := range modbusAssets {
			want := minRequestsPerPoll[a.Model]
			if got := g.metric(t, "citygw_modbus_requests_per_poll", fmt.Sprintf("asset=%q", a.ID)); got != want {
				t.Errorf("%s (%s): %v requests per poll, want %v", a.ID, a.Model, got, want)
			}
			// The server side agrees. A stored point with every field of the
			// model is a full poll, which took exactly want requests (two
			// polls within one device second store one point, so served can
			// only be higher); partial polls (a request timed out under load)
			// stop early, and a poll never issues more than want requests.
			served := float64(st.Modbus.Assets[a.ID].Served)
			pts := stored[a.ID]
			full := 0
			for _, row := range pts {
				complete := true
				for _, f := range a.Profile.Fields {
					if row[f.Name] == nil {
						complete = false
						break
					}
				}
				if complete {
					full++
				}
			}
			if lo, hi := want*float64(full), want*float64(2*len(pts)+2); served < lo || served > hi {
				t.Errorf("%s: the device served %v requests for %d stored points (%d full polls); want between %v and %v",
					a.ID, served, len(pts), full, lo, hi)
			}
		}
	})

	t.Run("a silent device goes offline while its neighbours keep flowing", func(t *testing.T) {
		silent, neighbours := pickNeighbours(t, modbusAssets)
		c.inject(t, "silent", silent.ID, 5*time.Minute)
		label := fmt.Sprintf("asset=%q", silent.ID)
		waitFor(t, 30*time.Second, silent.ID+" reported offline", func() bool {
			return g.metric(t, "citygw_modbus_device_up", label) == 0
		})
		before := map[string]int{}
		for _, a := range neighbours {
			before[a.ID] = count(a)
		}
		silentBefore := count(silent)
		time.Sleep(6 * time.Second)
		for _, a := range neighbours {
			if got := count(a) - before[a.ID]; got < 3 {
				t.Errorf("neighbour %s on %s got %d new points in 6s while %s was silent; want at least 3", a.ID, a.Modbus.Endpoint(), got, silent.ID)
			}
		}
		if got := count(silent); got != silentBefore {
			t.Errorf("the silent device %s got %d new points", silent.ID, got-silentBefore)
		}
		var status struct {
			Modbus []struct {
				Asset string
				Up    bool
			} `json:"modbus"`
		}
		code, body := g.do(t, "GET", "/status")
		if code != http.StatusOK {
			t.Fatalf("/status: HTTP %d: %s", code, body)
		}
		if err := json.Unmarshal([]byte(body), &status); err != nil {
			t.Fatal(err)
		}
		for _, d := range status.Modbus {
			if d.Asset == silent.ID && d.Up {
				t.Errorf("/status says %s is up", silent.ID)
			}
		}
	})

	t.Run("mqtt flow resumes after mosquitto restarts", func(t *testing.T) {
		before := map[string]int{}
		for _, a := range mqttAssets {
			before[a.ID] = count(a)
		}
		st.mosq.Stop()
		time.Sleep(3 * time.Second)
		st.mosq.Start()
		restarted := time.Now()
		waitFor(t, 60*time.Second, "the gateway to reconnect", func() bool {
			return g.metric(t, "citygw_mqtt_connected") == 1
		})
		waitFor(t, 60*time.Second, "new points from every bin after the restart", func() bool {
			for _, a := range mqttAssets {
				if count(a) < before[a.ID]+3 {
					return false
				}
			}
			return true
		})
		t.Logf("flow resumed %v after mosquitto restarted", time.Since(restarted).Round(100*time.Millisecond))
		if n := g.metric(t, "citygw_mqtt_reconnects_total"); !(n >= 1) {
			t.Errorf("citygw_mqtt_reconnects_total = %v, want at least 1", n)
		}
	})

	t.Run("the status page draws the city", func(t *testing.T) {
		code, body := g.do(t, "GET", "/")
		if code != http.StatusOK || !strings.Contains(body, "<svg") || !strings.Contains(body, modbusAssets[0].ID) {
			t.Errorf("GET /: HTTP %d, %d bytes, svg %v, %s %v", code, len(body), strings.Contains(body, "<svg"), modbusAssets[0].ID, strings.Contains(body, modbusAssets[0].ID))
		}
		code, body = g.do(t, "GET", "/assets/"+mqttAssets[0].ID)
		if code != http.StatusOK || !strings.Contains(body, mqttAssets[0].ID) {
			t.Errorf("GET /assets/%s: HTTP %d", mqttAssets[0].ID, code)
		}
	})

	t.Run("rules reload over HTTP answers with the check result", func(t *testing.T) {
		loaded := g.metric(t, "citygw_rules_loaded")
		broken := filepath.Join(g.rulesDir, "zz-broken.yaml")
		os.WriteFile(broken, []byte("rules:\n  - id: bin.broken\n    kind: waste_bin\n    when: fill_pct > \"lots\"\n    severity: minor\n    case: {service: bin_overflow, title: t}\n"), 0o644)
		code, body := g.do(t, "POST", "/-/reload")
		if code != http.StatusUnprocessableEntity || !strings.Contains(body, "zz-broken.yaml:4:") {
			t.Errorf("reload with a broken file: HTTP %d %s; want 422 naming zz-broken.yaml:4", code, body)
		}
		if got := g.metric(t, "citygw_rules_loaded"); got != loaded {
			t.Errorf("after a failed reload %v rules are loaded, want the previous %v", got, loaded)
		}
		if v := g.metric(t, "citygw_rules_last_reload_success"); v != 0 {
			t.Errorf("citygw_rules_last_reload_success = %v after a failed reload", v)
		}
		os.WriteFile(broken, []byte("rules:\n  - id: bin.nearly_full_shadow\n    kind: waste_bin\n    when: fill_pct > 95\n    shadow: true\n    severity: minor\n    case: {service: bin_overflow, title: t}\n"), 0o644)
		code, body = g.do(t, "POST", "/-/reload")
		if code != http.StatusOK || !strings.Contains(body, `"ok":true`) {
			t.Errorf("reload with a fixed file: HTTP %d %s", code, body)
		}
		if got := g.metric(t, "citygw_rules_loaded"); got != loaded+1 {
			t.Errorf("after the reload %v rules are loaded, want %v", got, loaded+1)
		}
	})

	t.Run("every mqtt message published since the gateway subscribed is stored with the values sent", func(t *testing.T) {
		waitStored(t, c, db, mqttAssets, 30*time.Second)
		for _, a := range mqttAssets {
			checkMQTTAsset(t, c, db, a)
		}
		if v := g.metric(t, "citygw_mqtt_messages_total", `result="decode_error"`); v > 0 {
			t.Errorf("%v MQTT messages failed to decode", v)
		}
	})

	if strings.Contains(g.proc.Output(), adminToken) {
		t.Error("the gateway logged its admin token")
	}
}

// checkModbusAsset compares every stored point of a Modbus asset with what
// the device served at that device second. A poll reads a device with
// several requests; a device tick can fall between them, so a field may
// also equal the value of the second before or after (the cabinet's clock
// register is read before its measurements).
func checkModbusAsset(t *testing.T, c *city, db *testenv.InfluxDB, a *devices.Asset) {
	t.Helper()
	pts := points(t, db, a.Kind, a.ID)
	hist := map[int64]sample{}
	for _, s := range c.history(t, a.ID) {
		hist[s.UnixMs] = s
	}
	checked, partial := 0, 0
	for ts, row := range pts {
		ms := ts / int64(time.Millisecond)
		s, ok := hist[ms]
		if !ok && ms%1000 != 0 {
			// A partial poll (a request timed out) carries no device time and
			// is stamped with the receive time: compare it with the second
			// the device was in then.
			s, ok = hist[ms-ms%1000]
			partial++
		}
		if !ok {
			t.Errorf("%s: InfluxDB has a point at %v, a second the device did not serve", a.ID, time.Unix(0, ts).UTC())
			continue
		}
		prev, hasPrev := hist[ms-1000]
		next, hasNext := hist[ms+1000]
		for _, m := range mismatches(s, row) {
			field := strings.SplitN(m, ":", 2)[0]
			if hasPrev && sameValue(prev.Values[field], row[field]) || hasNext && sameValue(next.Values[field], row[field]) {
				continue
			}
			t.Errorf("%s at %v: %s", a.ID, time.Unix(0, ts).UTC(), m)
		}
		checked++
	}
	if checked < 3 {
		t.Errorf("%s: only %d points checked", a.ID, checked)
	}
	if partial > 0 {
		t.Logf("%s: %d of %d points were partial polls stamped with the receive time", a.ID, partial, checked)
	}
}

// checkMQTTAsset requires every message the bin published after the first
// stored one (and older than two
// seconds, so not in flight) to be stored at its own timestamp with exactly
// the values it carried, and nothing else to be stored.
func checkMQTTAsset(t *testing.T, c *city, db *testenv.InfluxDB, a *devices.Asset) {
	t.Helper()
	pts := points(t, db, a.Kind, a.ID)
	first := int64(math.MaxInt64)
	for ts := range pts {
		first = min(first, ts)
	}
	sent := map[int64]bool{}
	cut := time.Now().Add(-2 * time.Second).UnixNano()
	for _, s := range c.history(t, a.ID) {
		ts := s.UnixMs * int64(time.Millisecond)
		sent[ts] = true
		row, ok := pts[ts]
		if !ok {
			if ts > first && ts < cut {
				t.Errorf("%s: the message of %v is not stored", a.ID, s.DeviceTime)
			}
			continue
		}
		for _, m := range mismatches(s, row) {
			t.Errorf("%s at %v: %s", a.ID, s.DeviceTime, m)
		}
	}
	for ts := range pts {
		if !sent[ts] {
			t.Errorf("%s: InfluxDB has a point at %v the bin never published", a.ID, time.Unix(0, ts).UTC())
		}
	}
}

// pickNeighbours returns a streetlight and the other devices on its endpoint.
func pickNeighbours(t *testing.T, assets []*devices.Asset) (*devices.Asset, []*devices.Asset) {
	byEndpoint := map[string][]*devices.Asset{}
	for _, a := range assets {
		byEndpoint[a.Modbus.Endpoint()] = append(byEndpoint[a.Modbus.Endpoint()], a)
	}
	eps := make([]string, 0, len(byEndpoint))
	for ep := range byEndpoint {
		eps = append(eps, ep)
	}
	sort.Strings(eps)
	for _, ep := range eps {
		as := byEndpoint[ep]
		for i, a := range as {
			if a.Kind == "streetlight" && len(as) >= 3 {
				rest := append(append([]*devices.Asset{}, as[:i]...), as[i+1:]...)
				return a, rest
			}
		}
	}
	t.Fatal("no endpoint with a streetlight and at least two neighbours")
	return nil, nil
}
