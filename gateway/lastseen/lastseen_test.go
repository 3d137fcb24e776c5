package lastseen

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/testenv"
)

// TestLastSeen stores points in a real InfluxDB 1.8 as the gateway's
// writer would (measurement = kind, tag asset) and asks when each asset
// was last stored: the newest point after since, over whichever field it
// carried, for assets of two kinds and more assets than one batch holds.
func TestLastSeen(t *testing.T) {
	db := testenv.StartInfluxDB(t)
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	var list []*devices.Asset
	for i := range batch + 5 {
		list = append(list, &devices.Asset{ID: fmt.Sprintf("BIN-%04d", i), Model: "binsense-ws3", Lat: 31.2, Lon: 121.4})
	}
	list = append(list, &devices.Asset{ID: "O'Brien-1", Model: "binsense-ws3", Lat: 31.2, Lon: 121.4},
		&devices.Asset{ID: "SL-1", Model: "citylight-slc200", Modbus: &devices.ModbusAddr{Host: "127.0.0.1:1502", Unit: 1}, Lat: 31.2, Lon: 121.4})
	inv, err := devices.NewInventory(cat, list)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Millisecond)
	since := now.Add(-10 * time.Minute)
	at := func(d time.Duration) int64 { return now.Add(d).UnixNano() }
	lines := []string{
		fmt.Sprintf("waste_bin,asset=BIN-0000,gateway=gw-a fill_pct=10 %d", at(-5*time.Minute)),
		fmt.Sprintf("waste_bin,asset=BIN-0000,gateway=gw-b fill_pct=11 %d", at(-time.Minute)),            // the other replica, later
		fmt.Sprintf("waste_bin,asset=BIN-0001,gateway=gw-a battery_pct=80i %d", at(-2*time.Minute)),      // another field only
		fmt.Sprintf("waste_bin,asset=BIN-0002,gateway=gw-a fill_pct=10 %d", at(-time.Hour)),              // before since
		fmt.Sprintf("waste_bin,asset=BIN-%04d,gateway=gw-b fill_pct=10 %d", batch+3, at(-3*time.Minute)), // second batch
		fmt.Sprintf(`waste_bin,asset=O'Brien-1,gateway=gw-a fill_pct=10 %d`, at(-4*time.Minute)),
		fmt.Sprintf("streetlight,asset=SL-1,gateway=gw-a relay_on=true %d", at(-30*time.Second)),
	}
	resp, err := http.Post(db.URL()+"/write?db="+db.DB, "text/plain", strings.NewReader(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write: HTTP %d", resp.StatusCode)
	}
	q := New(db.URL(), db.Bucket(), "", 10*time.Second)
	got, err := q.LastSeen(context.Background(), inv.Assets, since)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Time{
		"BIN-0000": now.Add(-time.Minute), "BIN-0001": now.Add(-2 * time.Minute),
		fmt.Sprintf("BIN-%04d", batch+3): now.Add(-3 * time.Minute), "O'Brien-1": now.Add(-4 * time.Minute), "SL-1": now.Add(-30 * time.Second),
	}
	if len(got) != len(want) {
		t.Errorf("got %d assets, want %d: %v", len(got), len(want), got)
	}
	for id, w := range want {
		if !got[id].Equal(w) {
			t.Errorf("%s: last seen %v, want %v", id, got[id], w)
		}
	}

	db.Stop()
	if _, err := q.LastSeen(context.Background(), inv.Assets[:3], since); err == nil || !strings.Contains(err.Error(), "waste_bin") {
		t.Errorf("InfluxDB down: err %v, want one naming what was asked", err)
	}
}
