package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
)

// TestDurability is issue 5's fault suite under steady load from the
// simulated city: InfluxDB stopped for 60 s and restarted, Mosquitto
// restarted, and the gateway killed with SIGKILL and restarted. Afterwards
// every MQTT message the bins published after the gateway first subscribed
// must be in InfluxDB (a lost reading fails the test), and every Modbus
// device must have a point for every second of the InfluxDB outage (the
// write-ahead log held them). Replays after the SIGKILL are harmless
// duplicates (same series and timestamp) and are reported, not failed.
//
// Run it alone: go test -race -count=1 -v -run TestDurability ./gateway/e2e
func TestDurability(t *testing.T) {
	st := startStack(t)
	db, mosq := st.db, st.mosq
	c := startCity(t, st.simBin, st.dir, mosq.URL(), "-mqtt-interval", "1s")
	g := startGateway(t, st.gwBin, st.dir, c, db, mosq.URL())
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
	mosq.Restart()
	waitFor(t, 60*time.Second, "the gateway to reconnect to mosquitto", func() bool {
		return g.metric(t, "citygw_mqtt_connected") == 1
	})

	// The gateway killed with SIGKILL, then started again on the same data dir.
	time.Sleep(3 * time.Second)
	g.proc.Kill()
	killed := time.Now()
	time.Sleep(3 * time.Second)
	if err := g.proc.Start(); err != nil {
		t.Fatal(err)
	}
	g.waitRunning(t, 2)
	restarted := time.Now()
	time.Sleep(8 * time.Second)

	t.Run("no mqtt message lost", func(t *testing.T) {
		waitFor(t, 60*time.Second, "the last messages to be stored", func() bool {
			return g.metric(t, "citygw_wal_backlog_points") < 100
		})
		cut := time.Now().Add(-3 * time.Second).UnixNano()
		lost, total := 0, 0
		var examples []string
		for _, a := range mqttAssets {
			pts := points(t, db, a.Kind, a.ID)
			first := int64(1<<63 - 1)
			for ts := range pts {
				first = min(first, ts)
			}
			for _, s := range c.history(t, a.ID) {
				ts := s.UnixMs * int64(time.Millisecond)
				if ts < first || ts > cut {
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
		if lost > 0 {
			t.Errorf("%d of %d published messages are not in InfluxDB, e.g. %s", lost, total, strings.Join(examples, ", "))
		}
		t.Logf("%d published messages checked, %d lost", total, lost)
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

	t.Run("duplicates after the SIGKILL are reported", func(t *testing.T) {
		written := g.metric(t, "citygw_influx_points_written_total")
		t.Logf("after the restart the gateway wrote %v points (replayed unacknowledged WAL records included); the kill was at %v, the restart %v later",
			written, killed.Format("15:04:05"), restarted.Sub(killed).Round(100*time.Millisecond))
		if v := g.metric(t, "citygw_wal_corrupt_records_total"); v > 0 {
			t.Logf("the WAL skipped %v corrupt records after the SIGKILL", v)
		}
	})
}
