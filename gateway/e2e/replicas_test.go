package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/caseclient"
	"github.com/citygw/citygw/gateway/testenv"
)

// shareGroup is the MQTT shared-subscription group of the replicas.
const shareGroup = "citygw"

// binsCity writes a copy of configs/city-small.yaml with bins only (the
// replicas would both poll Modbus devices; scaling Modbus out is by
// splitting the inventory, see gateway/DEPLOYMENT.md). An odd number of
// bins makes Mosquitto's round robin alternate each bin between the
// replicas from one tick to the next instead of pinning it to one of them
// by the parity of its place in the publishing order.
func binsCity(t *testing.T, dir string, bins int) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "configs", "city-small.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for re, repl := range map[string]string{
		`(?m)^(\s+cabinets:) \d+`: "$1 0",
		`(?m)^(\s+stations:) \d+`: "$1 0",
		`(?m)^(\s+count:) \d+`:    fmt.Sprintf("$1 %d", bins),
	} {
		rx := regexp.MustCompile(re)
		if !rx.Match(b) {
			t.Fatalf("city-small.yaml has no line matching %s", re)
		}
		b = rx.ReplaceAll(b, []byte(repl))
	}
	file := filepath.Join(dir, "city-bins.yaml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// replicaCity is what the replicas tests share: the stack, the reference
// case desk and its API key file, and a city of bins publishing every
// second; replica starts gateway replicas on it.
type replicaCity struct {
	st      *stack
	dk      *desk
	c       *city
	keyFile string
}

func startReplicaCity(t *testing.T, bins int) *replicaCity {
	t.Helper()
	st := startStack(t)
	deskBin := testenv.BuildBinary(t, "github.com/citygw/citygw/caseclient/cmd/casedesk", st.binDir, false)
	rc := &replicaCity{st: st, dk: startDesk(t, deskBin, st.dir), keyFile: filepath.Join(st.dir, "desk.key")}
	rc.c = startCityFrom(t, st.simBin, st.dir, binsCity(t, st.dir, bins), st.mosq.URL(), "-mqtt-interval", "1s")
	if err := os.WriteFile(rc.keyFile, []byte(deskAPIKey), 0o600); err != nil {
		t.Fatal(err)
	}
	return rc
}

// waitStored waits until InfluxDB holds at least n points of every bin.
func (rc *replicaCity) waitStored(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 90*time.Second, fmt.Sprintf("at least %d points of every bin in InfluxDB", n), func() bool {
		for _, as := range rc.c.inv.Assets {
			if len(points(t, rc.st.db, as.Kind, as.ID)) < n {
				return false
			}
		}
		return true
	})
}

// replicaOpts vary a replica from the shared-subscription default.
type replicaOpts struct {
	topics  []string // its subscriptions instead of the shared $share/citygw/city/bins/{asset}/telemetry
	absence string   // rules.absence
}

// replica runs one gateway replica: its own id, MQTT client id
// (persistent session), data directory and admin port; the InfluxDB
// database and the case desk are common, and by default the MQTT
// subscription is shared. Replicas mode is on in its case client.
func (rc *replicaCity) replica(t *testing.T, name string, opt replicaOpts) *gateway {
	t.Helper()
	bin, dir, c, db, mqttURL, dk, deskKeyFile := rc.st.gwBin, rc.st.dir, rc.c, rc.st.db, rc.st.mosq.URL(), rc.dk, rc.keyFile
	subs := fmt.Sprintf(`[{topic: "$share/%s/city/bins/{asset}/telemetry", qos: 1}]`, shareGroup)
	if len(opt.topics) > 0 {
		var b strings.Builder
		for _, topic := range opt.topics {
			fmt.Fprintf(&b, "\n    - {topic: %q, qos: 1}", topic)
		}
		subs = b.String()
	}
	absence := ""
	if opt.absence != "" {
		absence = "\n  absence: " + opt.absence
	}
	dir = filepath.Join(dir, "replica-"+name)
	g := &gateway{admin: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), token: adminToken, rulesDir: filepath.Join(dir, "rules")}
	if err := os.MkdirAll(g.rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	shipped, _ := filepath.Glob(filepath.Join(repoRoot(t), "configs", "rules", "*.yaml"))
	for _, f := range shipped {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(g.rulesDir, filepath.Base(f)), fastRules(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tokenFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`gateway: {id: gw-%[1]s, data_dir: %[2]q}
inventory: %[3]q
admin: {listen: %[4]q, token: {file: %[5]q}}
log: {level: info}
influxdb:
  url: %[6]s
  bucket: %[7]s
  batch_size: 1000
  flush_interval: 200ms
mqtt:
  broker: %[8]s
  client_id: citygw-%[1]s
  clean_session: false
  subscriptions: %[9]s
rules:
  files: [%[10]q]%[15]s
cases:
  outbox: %[11]q
  codes: %[12]q
  replicas: true
  poll_interval: 2s
  retry_base: 200ms
  retry_max: 2s
  timeout: 3s
  sinks:
    - {name: desk, type: open311, url: %[13]q}
  secrets:
    desk: {api_key: {file: %[14]q}}
`, name, filepath.Join(dir, "state"), c.invFile, g.admin, tokenFile, db.URL(), db.Bucket(), mqttURL, subs,
		filepath.Join(g.rulesDir, "*.yaml"), filepath.Join(dir, "state", "cases.db"),
		filepath.Join(repoRoot(t), "configs", "citycodes.yaml"), dk.url, deskKeyFile, absence)
	file := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	check := testenv.StartProcess(t, bin, "check", "-config", file)
	if err := check.Wait(60 * time.Second); err != nil || !strings.Contains(check.Output(), "\nok\n") {
		t.Fatalf("gateway check failed (%v):\n%s", err, check.Output())
	}
	g.proc = testenv.StartProcess(t, bin, "run", "-config", file)
	g.admin = "http://" + g.admin
	g.waitRunning(t, 1)
	return g
}

// replicaStatus is the part of a gateway's /status the test reads.
type replicaStatus struct {
	Cases struct {
		Cases []caseclient.CaseStatus `json:"cases"`
	} `json:"cases"`
}

func (g *gateway) status(t testing.TB) replicaStatus {
	t.Helper()
	code, body := g.do(t, "GET", "/status")
	if code != 200 {
		t.Fatalf("GET /status: %d %s", code, body)
	}
	var s replicaStatus
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("decoding /status: %v", err)
	}
	return s
}

// fireCase returns the replica's case of rule for asset at the desk sink
// (its episode's, whether opened or attached), if it has one with an id.
func (g *gateway) fireCase(t testing.TB, rule, asset string) (caseclient.CaseSinkStatus, bool) {
	for _, cs := range g.status(t).Cases.Cases {
		if cs.Rule != rule || !slices.Contains(cs.Assets, asset) {
			continue
		}
		for _, s := range cs.Sinks {
			if s.Sink == "desk" && s.ID != "" {
				return s, true
			}
		}
	}
	return caseclient.CaseSinkStatus{}, false
}

// missing counts the ground-truth samples of the bins published between
// from and to (unix ns) that are not in InfluxDB, with a few examples.
func missing(t testing.TB, c *city, db *testenv.InfluxDB, from, to int64) (lost, total int, examples []string) {
	for _, a := range c.inv.Assets {
		pts := points(t, db, a.Kind, a.ID)
		first := int64(1<<63 - 1)
		for ts := range pts {
			first = min(first, ts)
		}
		for _, s := range c.history(t, a.ID) {
			ts := s.UnixMs * int64(time.Millisecond)
			if ts < first || ts < from || ts > to {
				continue
			}
			total++
			if _, ok := pts[ts]; !ok {
				lost++
				if len(examples) < 5 {
					examples = append(examples, fmt.Sprintf("%s@%v", a.ID, s.DeviceTime.Format("15:04:05.000")))
				}
			}
		}
	}
	return lost, total, examples
}

// TestReplicas is issue 6's scale-out proof with real processes: two
// gateway replicas (their own ids, MQTT client ids and data directories)
// share one MQTT subscription ($share/citygw/city/bins/{asset}/telemetry on
// Mosquitto), write to one InfluxDB database and deliver to one case desk.
// Both replicas take part; every reading the simulated bins published is
// in InfluxDB; a fire in a few bins, seen by both replicas (each from its
// own subsequence of the readings, so with episodes of its own), opens
// exactly one case per bin; a replica killed with SIGKILL loses nothing:
// the survivor keeps ingesting its share, and Mosquitto holds the dead
// replica's share in its persistent session until it is back (Mosquitto
// keeps an offline member of a shared subscription in the rotation; see
// gateway/DEPLOYMENT.md), after which every reading is stored.
//
// Run it alone: go test -race -count=1 -v -run TestReplicas ./gateway/e2e
func TestReplicas(t *testing.T) {
	rc := startReplicaCity(t, 15)
	db, c, dk := rc.st.db, rc.c, rc.dk
	a := rc.replica(t, "a", replicaOpts{})
	b := rc.replica(t, "b", replicaOpts{})
	replicas := map[string]*gateway{"a": a, "b": b}
	ok := func(g *gateway) float64 { return g.metric(t, "citygw_mqtt_messages_total", `result="ok"`) }

	rc.waitStored(t, 3)

	t.Run("both replicas take part", func(t *testing.T) {
		for name, g := range replicas {
			if v := ok(g); !(v > 0) {
				t.Errorf("replica %s decoded %v messages", name, v)
			}
		}
		// Each point is tagged with the replica that wrote it.
		byGateway := map[string]int{}
		for _, as := range c.inv.Assets {
			for _, row := range points(t, db, as.Kind, as.ID) {
				if gw, _ := row["gateway"].(string); gw != "" {
					byGateway[gw]++
				}
			}
		}
		if byGateway["gw-a"] == 0 || byGateway["gw-b"] == 0 {
			t.Errorf("points by writing replica: %v; want both", byGateway)
		}
		t.Logf("messages decoded: a %v, b %v; points by replica %v", ok(a), ok(b), byGateway)
	})

	fires := []string{"BIN-0002", "BIN-0007", "BIN-0011"}
	t.Run("a fire seen by both replicas opens exactly one case per bin", func(t *testing.T) {
		for _, bin := range fires {
			if c.inv.Lookup(bin) == nil {
				t.Fatalf("the city has no %s", bin)
			}
			c.faultID(t, "bin_fire", bin, map[string]any{"rate_per_min": 1200})
		}
		for _, bin := range fires {
			waitFor(t, 90*time.Second, "a BIN-FIRE case for "+bin+" known to both replicas", func() bool {
				_, okA := a.fireCase(t, "waste_bin.fire", bin)
				_, okB := b.fireCase(t, "waste_bin.fire", bin)
				return okA && okB && len(casesFor(dk.requests(t), "BIN-FIRE", bin)) > 0
			})
		}
		time.Sleep(3 * time.Second) // a late duplicate would show now
		rs := dk.requests(t)
		attached := 0
		for _, bin := range fires {
			got := casesFor(rs, "BIN-FIRE", bin)
			if len(got) != 1 {
				t.Errorf("%s: %d BIN-FIRE cases on the desk, want 1", bin, len(got))
				continue
			}
			ca, _ := a.fireCase(t, "waste_bin.fire", bin)
			cb, _ := b.fireCase(t, "waste_bin.fire", bin)
			// Both replicas fired, each with its own episode (own case key),
			// and both address the one case: the dedup was exercised.
			if ca.Key == cb.Key {
				t.Errorf("%s: both replicas have case key %s; want an episode each", bin, ca.Key)
			}
			if ca.ID != got[0].ID || cb.ID != got[0].ID {
				t.Errorf("%s: replicas address cases %s and %s; the desk's is %s", bin, ca.ID, cb.ID, got[0].ID)
			}
			if (ca.AttachedTo == "") == (cb.AttachedTo == "") {
				t.Errorf("%s: exactly one replica should have attached: a %q, b %q", bin, ca.AttachedTo, cb.AttachedTo)
			} else {
				attached++
			}
			if ak := got[0].attr("anomaly_key"); ak != caseclient.AnomalyKey("waste_bin.fire", bin) {
				t.Errorf("%s: anomaly_key %q", bin, ak)
			}
		}
		count := func(g *gateway, how string) float64 {
			if v := g.metric(t, "citygw_cases_attached_total", `how="`+how+`"`); !math.IsNaN(v) { // NaN: none yet
				return v
			}
			return 0
		}
		n := 0.0
		for _, g := range replicas {
			n += count(g, "lookup") + count(g, "desk")
		}
		if int(n) < attached {
			t.Errorf("citygw_cases_attached_total sums to %v over the replicas, want at least %d", n, attached)
		}
		t.Logf("attached: by lookup a %v b %v, by the desk's answer a %v b %v",
			count(a, "lookup"), count(b, "lookup"), count(a, "desk"), count(b, "desk"))
	})

	t.Run("a replica killed with SIGKILL: the survivor goes on, nothing is lost", func(t *testing.T) {
		okA := ok(a)
		b.proc.Kill()
		killed := time.Now()
		time.Sleep(12 * time.Second)
		if v := ok(a); !(v > okA) {
			t.Errorf("the survivor decoded no message after the kill (%v before, %v after)", okA, v)
		}
		// Mosquitto keeps the dead replica's persistent session in the
		// group's rotation: its share waits in the broker.
		lost, total, ex := missing(t, c, db, killed.Add(2*time.Second).UnixNano(), time.Now().Add(-3*time.Second).UnixNano())
		t.Logf("while replica b was down: %d of %d readings published are not stored yet (held for b's session), e.g. %s",
			lost, total, strings.Join(ex, ", "))
		if lost == 0 {
			t.Errorf("every reading of the outage is stored while b is down: Mosquitto no longer holds a dead member's share; update gateway/DEPLOYMENT.md")
		}
		if err := b.proc.Start(); err != nil {
			t.Fatal(err)
		}
		b.waitRunning(t, 2)
		t.Logf("replica b restarted %v after the kill", time.Since(killed).Round(100*time.Millisecond))
		time.Sleep(5 * time.Second)
		waitFor(t, 60*time.Second, "the replicas' backlogs to drain", func() bool {
			return a.metric(t, "citygw_wal_backlog_points") < 100 && b.metric(t, "citygw_wal_backlog_points") < 100
		})
		cut := time.Now().Add(-3 * time.Second).UnixNano()
		var l, n int
		var examples []string
		waitFor(t, 60*time.Second, "every published reading in InfluxDB", func() bool {
			l, n, examples = missing(t, c, db, 0, cut)
			return l == 0
		})
		t.Logf("%d published readings checked, %d lost %v", n, l, examples)
	})

	t.Run("no case twice", func(t *testing.T) {
		open := map[string][]string{}
		for _, r := range dk.requests(t) {
			if r.Status == "open" && r.attr("anomaly_key") != "" {
				open[r.attr("anomaly_key")] = append(open[r.attr("anomaly_key")], r.ID)
			}
		}
		var keys []string
		for k := range open {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if len(open[k]) > 1 {
				t.Errorf("anomaly %s has %d open cases: %v", k, len(open[k]), open[k])
			}
		}
		for _, bin := range fires {
			if n := len(casesFor(dk.requests(t), "BIN-FIRE", bin)); n != 1 {
				t.Errorf("%s: %d BIN-FIRE cases after the kill and restart, want 1", bin, n)
			}
		}
		t.Logf("%d anomalies with an open case on the desk", len(keys))
	})
}
