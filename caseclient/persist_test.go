package caseclient

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/caseclient/casedesk"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/gateway/testenv"
	"github.com/citygw/citygw/rules"
)

func threeEpisodes() []rules.Transition {
	var ts []rules.Transition
	for i, id := range []string{"SL-1", "SL-2", "SL-3"} {
		ts = append(ts, fire("r.test", "streetlight_fault", "streetlight", id, []string{id}, t0.Add(time.Duration(i)*time.Minute), "major"))
	}
	for _, f := range ts[:3] {
		ts = append(ts, cleared(f, t0.Add(time.Hour)))
	}
	return ts
}

// checkOnce asserts the desk holds each of the episodes' cases exactly once
// with exactly one (cleared) update.
func checkOnce(t *testing.T, d *desk, ts []rules.Transition) {
	t.Helper()
	byKey := d.requestsByKey()
	n := 0
	for _, tr := range ts {
		if tr.To != rules.Firing {
			continue
		}
		n++
		rs := byKey[caseKey(tr.EpisodeID, 0)]
		if len(rs) != 1 {
			t.Errorf("case of %s: %d requests, want 1", tr.GroupKey, len(rs))
			continue
		}
		if ups := clientUpdates(rs[0]); len(ups) != 1 || !strings.Contains(ups[0].Description, "anomaly cleared") {
			t.Errorf("case of %s: updates %+v, want one cleared", tr.GroupKey, ups)
		}
	}
	if len(d.Requests()) != n {
		t.Errorf("%d requests on the desk, want %d", len(d.Requests()), n)
	}
}

// Operations acknowledged while the desk was failing are delivered, once,
// by the next client on the same outbox.
func TestRestartDeliversTheOutbox(t *testing.T) {
	d := startDesk(t, nil)
	d.SetFault(casedesk.Fault{Mode: casedesk.Fault500}) // until cleared
	cfg := fastConfig(t, deskSink(d), hookSink(d))
	c := startClient(t, cfg)
	ts := threeEpisodes()
	if err := c.Transitions(context.Background(), ts); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "failed attempts", func() bool { return c.counter("citygw_cases_failed_total") >= 4 })
	if got := c.counter("citygw_case_outbox_depth"); got != 12 {
		t.Fatalf("outbox depth %v, want 12 (3 opens + 3 cleared, 2 sinks)", got)
	}
	if c.counter("citygw_case_outbox_oldest_seconds") <= 0 {
		t.Error("oldest age not reported")
	}
	c.stop()
	d.SetFault(casedesk.Fault{Mode: casedesk.FaultNone})
	if len(d.Requests()) != 0 {
		t.Fatal("the desk stored requests while failing them before handling")
	}

	c2 := newClient(t, cfg)
	if got := c2.counter("citygw_case_outbox_depth"); got != 12 {
		t.Fatalf("reopened outbox depth %v, want 12", got)
	}
	c2.start()
	waitFor(t, 10*time.Second, "delivery after the restart", func() bool { return c2.counter("citygw_case_outbox_depth") == 0 })
	checkOnce(t, d, ts)
	if n := len(d.Webhooks()); n != 6 {
		t.Errorf("%d webhook messages, want 6", n)
	}
}

// crashHelper makes the test binary the child of TestSIGKILLWithCasesInFlight.
var crashHelper = flag.Bool("crash-helper", false, "run as the crash test's child: outbox path and desk URL follow")

// TestCrashHelper is the child: it acknowledges the episodes (prints ACKED)
// and delivers until it is killed.
func TestCrashHelper(t *testing.T) {
	if !*crashHelper {
		t.Skip("only run as the child of TestSIGKILLWithCasesInFlight")
	}
	outbox, url := flag.Arg(0), flag.Arg(1)
	cfg := Config{Outbox: outbox, Sinks: []SinkConfig{{Name: "desk", Type: SinkOpen311, URL: url, APIKey: testAPIKey}},
		DeliveryInterval: ms(20), RetryBase: ms(20), RetryMax: ms(200), Timeout: yamlconf.Duration(time.Minute)}
	c := newClient(t, cfg)
	if err := c.Transitions(context.Background(), threeEpisodes()); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ACKED")
	os.Stdout.Sync()
	c.start()
	time.Sleep(time.Minute)
	t.Fatal("not killed")
}

// A gateway SIGKILLed with cases in the outbox, one of them stored by the
// desk but not yet answered, loses none and duplicates none: the in-flight
// request was marked on disk before it was sent, so the next client looks it
// up before posting again.
func TestSIGKILLWithCasesInFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	d := startDesk(t, nil)
	// The desk stores the first POST and holds its answer back.
	d.SetFault(casedesk.Fault{Mode: casedesk.FaultSlow, Delay: time.Minute, Count: 1})
	outbox := t.TempDir() + "/outbox.db"
	p := testenv.StartProcess(t, os.Args[0], "-test.run=^TestCrashHelper$", "-test.v", "-crash-helper", outbox, d.srv.URL)
	waitFor(t, 30*time.Second, "the child to acknowledge and the desk to store the first case", func() bool {
		return strings.Contains(p.Output(), "ACKED") && len(d.Requests()) == 1
	})
	p.Kill()
	if len(d.Requests()) != 1 {
		t.Fatalf("%d requests before the restart", len(d.Requests()))
	}
	cfg := fastConfig(t, deskSink(d))
	cfg.Outbox = outbox
	c2 := startClient(t, cfg)
	waitFor(t, 15*time.Second, "delivery after the crash", func() bool { return c2.counter("citygw_case_outbox_depth") == 0 })
	checkOnce(t, d, threeEpisodes())
	if got := c2.counter("citygw_cases_opened_total"); got != 3 {
		t.Errorf("opened %v, want 3", got)
	}
	if got := c2.counter("citygw_case_reconciled_total"); got != 1 {
		t.Errorf("reconciled %v, want 1 (the case in flight at the kill)", got)
	}
}

// Two gateway replicas (separate outboxes) see the same episode: with
// lookup_before_open the second finds the first's case by its key and does
// not post a duplicate.
func TestReplicasOpenOneCase(t *testing.T) {
	d := startDesk(t, nil)
	cfg1 := fastConfig(t, deskSink(d))
	cfg1.LookupBeforeOpen = true
	cfg2 := cfg1
	cfg2.Outbox = t.TempDir() + "/replica2.db"
	a, b := startClient(t, cfg1), startClient(t, cfg2)
	ts := threeEpisodes()
	if err := a.Transitions(context.Background(), ts); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "replica 1's cases", func() bool { return a.counter("citygw_case_outbox_depth") == 0 })
	if err := b.Transitions(context.Background(), ts[:3]); err != nil { // replica 2 saw the firings only
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "replica 2 done", func() bool { return b.counter("citygw_case_outbox_depth") == 0 })
	checkOnce(t, d, ts)
	if b.counter("citygw_cases_opened_total") != 3 {
		t.Errorf("replica 2 should have found all 3 cases")
	}
}

// Operations of a sink removed from the configuration go to the dead
// letters at start instead of waiting forever; status URLs hide tokens.
func TestRemovedSinkOpsAreDeadLettered(t *testing.T) {
	d := startDesk(t, nil)
	d.SetFault(casedesk.Fault{Mode: casedesk.Fault500})
	hook := hookSink(d)
	hook.URL += "?token=s3cr3t"
	cfg := fastConfig(t, deskSink(d), hook)
	c := startClient(t, cfg)
	if err := c.Transitions(context.Background(), threeEpisodes()); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); strings.Contains(st.Sinks[1].URL, "s3cr3t") {
		t.Errorf("status shows the URL's token: %s", st.Sinks[1].URL)
	}
	c.stop()
	cfg.Sinks = cfg.Sinks[1:]
	c2 := newClient(t, cfg)
	if got, dead := c2.counter("citygw_case_outbox_depth"), c2.counter("citygw_case_dead_letters"); got != 6 || dead != 6 {
		t.Errorf("outbox %v, dead letters %v; want 6 and 6", got, dead)
	}
}
