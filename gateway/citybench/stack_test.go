package citybench

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/citygw/citygw/gateway/localproc"
)

// newBench builds the binaries into a temporary work directory and checks
// for the tools; systems without their tool are left out.
func newBench(t *testing.T, systems ...string) *Bench {
	t.Helper()
	if testing.Short() {
		t.Skip("starts mosquitto, influxd, the gateway and telegraf")
	}
	var keep []string
	for _, s := range systems {
		if s == SysTelegraf {
			if _, err := localproc.LookTool("telegraf"); err != nil {
				t.Logf("telegraf left out: %v", err)
				continue
			}
		}
		keep = append(keep, s)
	}
	var progress logWriter
	progress.t = t
	b, err := New(context.Background(), Options{Repo: repoRoot(t), Work: t.TempDir(), Systems: keep, Timeout: 2 * time.Minute, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type logWriter struct{ t *testing.T }

func (l *logWriter) Write(p []byte) (int, error) { l.t.Log(string(p)); return len(p), nil }

// A small burst through every system: every message arrives and is
// counted, and the report holds each process's figures.
func TestBurstSmall(t *testing.T) {
	b := newBench(t, AllSystems()...)
	b.Opts.Messages, b.Opts.Assets = 2000, 40
	rep, err := Scenarios()["burst"].Run(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Systems) != len(b.Opts.Systems) {
		t.Fatalf("%d results for %v", len(rep.Systems), b.Opts.Systems)
	}
	for _, s := range rep.Systems {
		if s.Error != "" || s.Points != 2000 || s.Messages != 2000 || s.PointsPerS <= 0 || s.Publisher.Assets != 40 {
			t.Errorf("%s: %+v", s.System, s)
		}
		roles := []string{}
		for _, p := range s.Procs {
			roles = append(roles, p.Role)
			if p.PeakRSSMB <= 0 {
				t.Errorf("%s %s: peak RSS %v", s.System, p.Role, p.PeakRSSMB)
			}
		}
		want := []string{"system", "broker", "database", "publisher"}
		if s.System == SysCeiling {
			want = []string{"system", "broker", "publisher"}
		}
		if !reflect.DeepEqual(roles, want) {
			t.Errorf("%s: processes %v, want %v", s.System, roles, want)
		}
	}
	if _, ok := rep.Ratios["citygw/ceiling points_per_s"]; !ok {
		t.Errorf("ratios %v", rep.Ratios)
	}
}

// Telegraf with configs/bench/telegraf.conf writes exactly the points citygw
// writes: same measurement, tag keys, field keys and types, and per asset
// the same timestamps and values.
func TestTelegrafMatchesCitygw(t *testing.T) {
	b := newBench(t, SysCitygw, SysTelegraf)
	if !slices.Contains(b.Opts.Systems, SysTelegraf) {
		t.Skip("telegraf not installed (CITYGW_TOOLS_BENCH=1 bash scripts/tools.sh)")
	}
	ctx := context.Background()
	const assets, messages = 12, 360
	inv, err := b.Inventory(ctx, assets)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	broker, err := StartMosquitto(b.Opts.Repo, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Stop()
	db, err := StartInfluxDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Stop()
	gw := &Stack{System: SysCitygw, Dir: filepath.Join(dir, "gw"), Broker: broker, DB: db, DBName: "citygw"}
	tg := &Stack{System: SysTelegraf, Dir: filepath.Join(dir, "tg"), Broker: broker, DB: db, DBName: "telegraf"}
	for _, st := range []*Stack{gw, tg} {
		if err := mkdir(st.Dir); err != nil {
			t.Fatal(err)
		}
		if err := db.CreateDB(st.DBName); err != nil {
			t.Fatal(err)
		}
	}
	if gw.SUT, gw.Admin, err = b.citygw(gw, inv); err != nil {
		t.Fatal(err)
	}
	tg.SUT = b.telegraf(tg, inv)
	for _, st := range []*Stack{gw, tg} {
		if err := st.SUT.Start(); err != nil {
			t.Fatal(err)
		}
		defer st.SUT.Stop()
	}
	for id, p := range map[string]*Process{citygwClientID: gw.SUT, telegrafClient: tg.SUT} {
		if err := broker.WaitSubscribed(ctx, id, binFilter, p, 5*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	load := child(&Process{Name: "publisher", Path: b.Sim, Args: append(b.LoadArgs(assets, "-messages", fmt.Sprint(messages)), "-mqtt", broker.URL()),
		LogFile: filepath.Join(dir, "publisher.log")})
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	if err := load.Wait(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"citygw", "telegraf"} {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			n, err := db.Count(name, measurement, countField)
			if err == nil && n == messages {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d points (%v)", name, n, messages, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, q := range []string{"SHOW MEASUREMENTS", "SHOW TAG KEYS", "SHOW FIELD KEYS", `SHOW TAG VALUES WITH KEY IN ("district", "gateway", "grid")`} {
		a, err1 := db.Query("citygw", q)
		c, err2 := db.Query("telegraf", q)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if !reflect.DeepEqual(a, c) {
			t.Errorf("%s differs:\ncitygw   %v\ntelegraf %v", q, a, c)
		} else {
			t.Logf("%s: %v", q, a)
		}
	}
	// Every point, in the same order: time, tags and fields.
	q := "SELECT * FROM waste_bin GROUP BY * ORDER BY time"
	a, err1 := db.Query("citygw", q)
	c, err2 := db.Query("telegraf", q)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if len(a) != assets || !reflect.DeepEqual(a, c) {
		ja, _ := json.Marshal(a)
		jc, _ := json.Marshal(c)
		t.Fatalf("points differ (%d and %d series):\ncitygw   %.2000s\ntelegraf %.2000s", len(a), len(c), ja, jc)
	}
}
