package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/testenv"
)

// TestDurability is issue 5's fault suite under steady load from the
// simulated city: InfluxDB stopped for 60 s and restarted, Mosquitto
// restarted, and the gateway killed with SIGKILL and restarted. Afterwards
// every MQTT message the bins published after the gateway first subscribed
// must be in InfluxDB (a lost reading fails the test), and every Modbus
// device must have a point for every second of the InfluxDB outage (the
// write-ahead log held them). Replays are harmless duplicates (same series
// and timestamp): they are counted exactly by a tap in front of InfluxDB
// (see writeTap) and reported per fault, not failed.
//
// Run it alone: go test -race -count=1 -v -run TestDurability ./gateway/e2e
func TestDurability(t *testing.T) {
	st := startStack(t)
	db, mosq := st.db, st.mosq
	c := startCity(t, st.simBin, st.dir, mosq.URL(), "-mqtt-interval", "1s")
	tap := startWriteTap(t, db)
	g := startGateway(t, st.gwBin, st.dir, c, tap.db, mosq.URL())
	modbusAssets, mqttAssets := byTransport(c.inv.Assets)
	count := func(a *devices.Asset) int { return len(points(t, db, a.Kind, a.ID)) }
	waitFor(t, 60*time.Second, "every asset flowing", func() bool {
		for _, a := range c.inv.Assets {
			if count(a) < 2 {
				return false
			}
		}
		return true
	})

	// InfluxDB down for 60 s under load.
	outageStart := time.Now()
	tap.setPhase(phaseInfluxOutage)
	db.Stop()
	time.Sleep(20 * time.Second)
	if v := g.metric(t, "citygw_wal_backlog_points"); !(v > 0) {
		t.Errorf("citygw_wal_backlog_points = %v during the InfluxDB outage, want a backlog", v)
	}
	time.Sleep(40 * time.Second)
	db.Start()
	outageEnd := time.Now()
	waitFor(t, 120*time.Second, "the backlog to drain", func() bool {
		return g.metric(t, "citygw_wal_backlog_points") < 100
	})
	t.Logf("InfluxDB outage of %v drained %v after InfluxDB came back", outageEnd.Sub(outageStart).Round(time.Second), time.Since(outageEnd).Round(100*time.Millisecond))

	// Mosquitto restarted.
	tap.setPhase(phaseMosquittoRestart)
	mosq.Restart()
	waitFor(t, 60*time.Second, "the gateway to reconnect to mosquitto", func() bool {
		return g.metric(t, "citygw_mqtt_connected") == 1
	})

	// The gateway killed with SIGKILL, then started again on the same data dir.
	time.Sleep(3 * time.Second)
	tap.setPhase(phaseGatewayKill)
	g.proc.Kill()
	killed := time.Now()
	time.Sleep(3 * time.Second)
	if err := g.proc.Start(); err != nil {
		t.Fatal(err)
	}
	g.waitRunning(t, 2)
	restarted := time.Now()
	time.Sleep(8 * time.Second)

	lost := -1
	t.Run("no mqtt message lost", func(t *testing.T) {
		lost, _ = waitStored(t, c, db, mqttAssets, 60*time.Second)
	})

	t.Run("modbus readings of the InfluxDB outage were kept", func(t *testing.T) {
		from, to := outageStart.Add(2*time.Second), outageEnd.Add(-2*time.Second)
		for _, a := range modbusAssets {
			var ts []time.Time
			for n := range points(t, db, a.Kind, a.ID) {
				if tt := time.Unix(0, n); tt.After(from) && tt.Before(to) {
					ts = append(ts, tt)
				}
			}
			sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
			want := int(to.Sub(from).Seconds()) * 3 / 4
			if len(ts) < want {
				t.Errorf("%s: %d points during the %v outage window, want at least %d (one a second, less a margin)", a.ID, len(ts), to.Sub(from).Round(time.Second), want)
			}
			for i := 1; i < len(ts); i++ {
				if gap := ts[i].Sub(ts[i-1]); gap > 4*time.Second {
					t.Errorf("%s: a %v gap at %v during the outage", a.ID, gap, ts[i-1].Format("15:04:05"))
				}
			}
		}
	})

	t.Run("duplicates are reported per fault", func(t *testing.T) {
		t.Logf("the gateway was killed at %v and running again %v later", killed.Format("15:04:05"), restarted.Sub(killed).Round(100*time.Millisecond))
		if v := g.metric(t, "citygw_wal_corrupt_records_total"); v > 0 {
			t.Logf("the WAL skipped %v corrupt records after the SIGKILL", v)
		}
		r := tap.report()
		for _, ph := range []string{phaseSteady, phaseInfluxOutage, phaseMosquittoRestart, phaseGatewayKill} {
			t.Logf("%-17s %6d points acknowledged by InfluxDB, %4d of them duplicates", ph, r.written[ph], r.dups[ph])
		}
		t.Logf("durability summary: lost=%d duplicates: influxdb_outage=%d mosquitto_restart=%d gateway_sigkill=%d (steady=%d); %d points written, %d distinct",
			lost, r.dups[phaseInfluxOutage], r.dups[phaseMosquittoRestart], r.dups[phaseGatewayKill], r.dups[phaseSteady], r.total, r.distinct)
		tap.crossCheck(t, db, c.inv.Assets)
	})
}

// Phases of the fault suite; a duplicate counts in the phase in which it
// was written again.
const (
	phaseSteady           = "steady"
	phaseInfluxOutage     = "influxdb_outage"
	phaseMosquittoRestart = "mosquitto_restart"
	phaseGatewayKill      = "gateway_sigkill"
	phaseDiskFull         = "disk_full"
)

// writeTap is a reverse proxy between the gateway and InfluxDB that counts
// duplicates exactly. InfluxDB keeps one point per series and timestamp, so
// what it holds cannot show how often a point was written; its own write
// statistics (SHOW STATS) reset at every restart and would have to be read
// just before each stop, racing with the gateway's writes; the gateway's
// written-points counter dies with a SIGKILL. The tap sees every write
// request and its answer: each point of a write InfluxDB answered with 2xx
// is counted under its series key and timestamp, and any point acknowledged
// before is a duplicate, charged to the phase (fault) in which it was
// written again. It forwards bytes unchanged; when InfluxDB is down it
// breaks the gateway's connection, as a refused connection would. (A write
// InfluxDB applied but whose answer it never sent, because it stopped
// meanwhile, is invisible here as to every other counter: the gateway
// retries it and it counts once.)
type writeTap struct {
	db    *testenv.InfluxDB // a copy of the real one, with the tap's port: give it to the gateway
	mu    sync.Mutex
	phase string
	seen  map[string]int
	stats tapReport
}

type tapReport struct {
	total, distinct int
	written, dups   map[string]int // by phase
}

type tapBodyKey struct{}

func startWriteTap(t *testing.T, db *testenv.InfluxDB) *writeTap {
	t.Helper()
	up, err := url.Parse(db.URL())
	if err != nil {
		t.Fatal(err)
	}
	tap := &writeTap{phase: phaseSteady, seen: map[string]int{},
		stats: tapReport{written: map[string]int{}, dups: map[string]int{}}}
	proxy := httputil.NewSingleHostReverseProxy(up)
	proxy.ErrorHandler = func(http.ResponseWriter, *http.Request, error) {
		panic(http.ErrAbortHandler) // InfluxDB is down: no answer at all
	}
	proxy.ModifyResponse = func(resp *http.Response) error {
		body, _ := resp.Request.Context().Value(tapBodyKey{}).([]byte)
		if body != nil && resp.StatusCode/100 == 2 {
			tap.count(t, body, resp.Request.Header.Get("Content-Encoding"))
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/write") {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				panic(http.ErrAbortHandler)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r = r.WithContext(context.WithValue(r.Context(), tapBodyKey{}, body))
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tapped := *db
	tapped.Port = srv.Listener.Addr().(*net.TCPAddr).Port
	tap.db = &tapped
	return tap
}

func (tap *writeTap) setPhase(p string) {
	tap.mu.Lock()
	tap.phase = p
	tap.mu.Unlock()
}

// count records the points of one acknowledged write body.
func (tap *writeTap) count(t *testing.T, body []byte, encoding string) {
	if encoding == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Errorf("write tap: %v", err)
			return
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Errorf("write tap: %v", err)
			return
		}
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	for _, line := range bytes.Split(body, []byte("\n")) {
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		key := pointKey(line)
		tap.seen[key]++
		tap.stats.total++
		tap.stats.written[tap.phase]++
		if tap.seen[key] > 1 {
			tap.stats.dups[tap.phase]++
		} else {
			tap.stats.distinct++
		}
	}
}

// pointKey is a line protocol point's series key (measurement and tags, up
// to the first unescaped space) and timestamp (after the last space).
func pointKey(line []byte) string {
	end := len(line)
	for i := 0; i < len(line); i++ {
		if line[i] == '\\' {
			i++
			continue
		}
		if line[i] == ' ' {
			end = i
			break
		}
	}
	ts := line[bytes.LastIndexByte(line, ' ')+1:]
	return string(line[:end]) + " " + string(ts)
}

// crossCheck compares the distinct points the tap saw acknowledged with
// what InfluxDB holds for the assets, both up to ten seconds ago (older
// points have settled). The tap is read first, so a point written meanwhile
// can only make InfluxDB hold more. Fewer stored than acknowledged is a
// point InfluxDB lost: an error. More stored is a write InfluxDB applied
// without its answer reaching the gateway and not sent again: logged.
func (tap *writeTap) crossCheck(t *testing.T, db *testenv.InfluxDB, assets []*devices.Asset) {
	t.Helper()
	cut := time.Now().Add(-10 * time.Second).UnixNano()
	acked := 0
	tap.mu.Lock()
	for key := range tap.seen {
		ts, err := strconv.ParseInt(key[strings.LastIndexByte(key, ' ')+1:], 10, 64)
		if err != nil {
			t.Errorf("write tap: a point without a timestamp: %q", key)
		}
		if ts <= cut {
			acked++
		}
	}
	tap.mu.Unlock()
	stored := 0
	for _, a := range assets {
		for ts := range points(t, db, a.Kind, a.ID) {
			if ts <= cut {
				stored++
			}
		}
	}
	switch {
	case stored < acked:
		t.Errorf("InfluxDB holds %d points, but acknowledged %d distinct ones", stored, acked)
	case stored > acked:
		t.Logf("InfluxDB holds %d points, %d more than the distinct ones it acknowledged (writes whose answer was lost)", stored, stored-acked)
	default:
		t.Logf("InfluxDB holds %d points older than 10s: each distinct point it acknowledged, no other", stored)
	}
}

func (tap *writeTap) report() tapReport {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	r := tap.stats
	r.written, r.dups = map[string]int{}, map[string]int{}
	for k, v := range tap.stats.written {
		r.written[k] = v
	}
	for k, v := range tap.stats.dups {
		r.dups[k] = v
	}
	return r
}

func TestPointKey(t *testing.T) {
	for _, tt := range []struct{ line, want string }{
		{`waste_bin,asset=b1,gateway=gw fill=0.5,note="a b" 1700000000000000000`, `waste_bin,asset=b1,gateway=gw 1700000000000000000`},
		{`streetlight,asset=l\ 1,district=310101 on=true 42`, `streetlight,asset=l\ 1,district=310101 42`},
		{`m v=1i 7`, `m 7`},
	} {
		if got := pointKey([]byte(tt.line)); got != tt.want {
			t.Errorf("pointKey(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
}
