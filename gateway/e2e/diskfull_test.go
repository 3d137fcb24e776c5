package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/gateway/testenv"
)

// TestDiskFull runs the gateway with its write-ahead log on a 4 MiB tmpfs,
// InfluxDB stopped (so the log must hold everything) and a filler file
// eating most of the space, under MQTT and Modbus load from the simulated
// city. While the disk is full the gateway keeps running, /readyz says the
// WAL is not ready, citygw_wal_disk_full is 1, and no MQTT message is
// acknowledged (on_full: block; the broker keeps them). Then the filler is
// deleted and InfluxDB started: the gateway recovers without a restart, and
// every message the bins published is in InfluxDB.
//
// It mounts a tmpfs: as root, or else in a user+mount namespace
// (unshare -rm) where the whole test runs again.
//
// Run it alone: go test -race -count=1 -v -run TestDiskFull ./gateway/e2e
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test starts real processes")
	}
	if !testenv.AsRoot(t) {
		return
	}
	st := startStack(t)
	db, mosq := st.db, st.mosq
	walFS := testenv.MountTmpfs(t, "size=4m")
	walDir := filepath.Join(walFS, "wal")
	c := startCity(t, st.simBin, st.dir, mosq.URL(), "-mqtt-interval", "1s")
	tap := startWriteTap(t, db)
	g := startGatewayWith(t, st.gwBin, st.dir, c, tap.db, mosq.URL(), gatewayOptions{
		extra: fmt.Sprintf("wal: {dir: %q, segment_bytes: 64KiB, max_bytes: 64MiB, on_full: block}\n", walDir),
	})
	_, mqttAssets := byTransport(c.inv.Assets)
	waitFor(t, 60*time.Second, "every asset flowing", func() bool {
		for _, a := range c.inv.Assets {
			if len(points(t, db, a.Kind, a.ID)) < 2 {
				return false
			}
		}
		return true
	})

	// InfluxDB down, and the WAL's file system nearly full.
	tap.setPhase(phaseDiskFull)
	db.Stop()
	filler := testenv.FillDisk(t, walFS, 128<<10)
	fullSince := time.Now()
	waitFor(t, 120*time.Second, "citygw_wal_disk_full to be 1", func() bool {
		return g.metric(t, "citygw_wal_disk_full") == 1
	})
	t.Logf("the WAL's disk was full %v after the filler took all but 128 KiB", time.Since(fullSince).Round(100*time.Millisecond))

	// While full: reported, not a crash, and nothing acknowledged.
	ok := func() float64 { return g.metric(t, "citygw_mqtt_messages_total", `result="ok"`) }
	okBefore, appendsBefore, simAckedBefore := ok(), g.metric(t, "citygw_wal_appends_total"), c.stats(t).MQTT.Acked
	code, body := g.do(t, "GET", "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "wal: not ready: WAL disk is full") || !strings.Contains(body, walDir) {
		t.Errorf("/readyz on a full disk = %d %q, want 503 with the WAL's full disk and its path", code, body)
	}
	time.Sleep(10 * time.Second)
	if !g.proc.Running() {
		t.Fatalf("the gateway exited on a full disk:\n%s", g.proc.Output())
	}
	if v := g.metric(t, "citygw_wal_disk_full"); v != 1 {
		t.Errorf("citygw_wal_disk_full = %v 10s into the full disk", v)
	}
	if v := g.metric(t, "citygw_wal_disk_full_errors_total"); !(v >= 1) {
		t.Errorf("citygw_wal_disk_full_errors_total = %v", v)
	}
	okAfter, appendsAfter, simAckedAfter := ok(), g.metric(t, "citygw_wal_appends_total"), c.stats(t).MQTT.Acked
	if okAfter != okBefore || appendsAfter != appendsBefore {
		t.Errorf("while the disk was full the gateway acknowledged %v MQTT messages and appended %v lines, want none",
			okAfter-okBefore, appendsAfter-appendsBefore)
	}
	waiting, inflight := g.metric(t, "citygw_wal_appends_waiting"), g.metric(t, "citygw_mqtt_inflight")
	if !(waiting >= 1) || !(inflight >= 1) {
		t.Errorf("while full: %v appends waiting, %v MQTT messages received and unacknowledged; want both > 0", waiting, inflight)
	}
	if simAckedAfter <= simAckedBefore {
		t.Errorf("the broker acknowledged no publication while the gateway's disk was full (%d then %d)", simAckedBefore, simAckedAfter)
	}
	t.Logf("10s on a full disk: %v appends waiting, %v MQTT messages unacknowledged in the gateway, the broker took %d more publications",
		waiting, inflight, simAckedAfter-simAckedBefore)

	// Space freed and InfluxDB back: recovery without a restart.
	tap.setPhase(phaseSteady)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	db.Start()
	waitFor(t, 60*time.Second, "citygw_wal_disk_full to be 0", func() bool {
		return g.metric(t, "citygw_wal_disk_full") == 0
	})
	waitFor(t, 120*time.Second, "the backlog to drain", func() bool {
		return g.metric(t, "citygw_wal_backlog_points") < 100
	})
	waitFor(t, 60*time.Second, "/readyz to be ready", func() bool {
		code, _ := g.do(t, "GET", "/readyz")
		return code == http.StatusOK
	})
	t.Logf("recovered %v after space was freed and InfluxDB started", time.Since(freed).Round(100*time.Millisecond))
	time.Sleep(5 * time.Second)
	if !g.proc.Running() || strings.Count(g.proc.Output(), "gateway running") != 1 {
		t.Fatalf("the gateway restarted or exited:\n%s", g.proc.Output())
	}
	lost, _ := waitStored(t, c, db, mqttAssets, 60*time.Second)
	r := tap.report()
	t.Logf("disk full summary: lost=%d duplicates=%d (%d points written during the full disk, %d distinct points in all)",
		lost, r.dups[phaseDiskFull]+r.dups[phaseSteady], r.written[phaseDiskFull], r.distinct)
	tap.crossCheck(t, db, c.inv.Assets)
}
