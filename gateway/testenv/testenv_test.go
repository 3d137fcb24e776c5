package testenv

import (
	"strings"
	"testing"
	"time"
)

// TestProcess checks the test-facing layer over localproc.Process: the
// output kept over restarts with a line at each start and stop, Wait that
// does not judge the exit status, WaitOutput.
func TestProcess(t *testing.T) {
	p := StartProcess(t, "/bin/sh", "-c", "echo out; echo err >&2; exit 3")
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatalf("Wait on a process that exited with 3: %v (want nil: the output tells)", err)
	}
	if err := p.WaitOutput("err", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil { // it exited: it may start again
		t.Fatal(err)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	out := p.Output()
	if n := strings.Count(out, "out\n"); n != 2 {
		t.Errorf("%d runs' output, want 2:\n%s", n, out)
	}
	if n := strings.Count(out, "started /bin/sh -c"); n != 2 {
		t.Errorf("%d start lines, want 2:\n%s", n, out)
	}

	q := StartProcess(t, "/bin/sh", "-c", "sleep 300")
	if err := q.Wait(100 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("Wait on a running process: %v", err)
	}
	if err := q.WaitOutput("never printed", 100*time.Millisecond); err == nil {
		t.Fatal("WaitOutput found what was never printed")
	}
	q.Stop()
	if q.Running() {
		t.Fatal("running after Stop")
	}
	if !strings.Contains(q.Output(), "stopped sh with terminated") {
		t.Errorf("no stop line:\n%s", q.Output())
	}
}

// TestInfluxDBOutage starts influxd through testenv, stops it, starts it
// again on the same port and data, and finds its database and points.
func TestInfluxDBOutage(t *testing.T) {
	db := StartInfluxDB(t)
	resp, err := db.http.Post(db.URL()+"/write?db="+db.DB, "text/plain", strings.NewReader("m,asset=a1 v=1i 1\nm,asset=a2 v=2i 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("write: %s", resp.Status)
	}
	db.Stop()
	if db.Proc.Running() {
		t.Fatal("influxd running after Stop")
	}
	db.Start()
	if n := db.WaitCount(db.DB, "m", "v", 2, 30*time.Second); n != 2 {
		t.Fatalf("%d points after the restart, want 2", n)
	}
}

// TestMosquittoRestart starts a broker, restarts it on the same port and
// publishes to it with mosquitto_pub.
func TestMosquittoRestart(t *testing.T) {
	m := StartMosquitto(t)
	m.Restart()
	if err := WaitTCP(m.Addr(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	m.Pub("testenv/hello", "hi", 1)
}
