package caseclient

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/citygw/citygw/caseclient/casedesk"
	"github.com/citygw/citygw/rules"
)

// Every case reaches each sink exactly once, with its cleared update once,
// whatever the desk does to the first calls: 500s before or after storing,
// 429/503 with Retry-After, answers slower than the client's timeout, and
// dropped connections before or after storing.
func TestExactlyOnceUnderDeskFaults(t *testing.T) {
	faults := []casedesk.Fault{
		{Mode: casedesk.Fault500, Count: 4},
		{Mode: casedesk.Fault500, Count: 4, AfterHandling: true},
		{Mode: casedesk.Fault429, Count: 3, RetryAfter: time.Second},
		{Mode: casedesk.Fault503, Count: 3, RetryAfter: 2 * time.Second, RetryAfterDate: true, AfterHandling: true},
		{Mode: casedesk.FaultSlow, Count: 4, Delay: 3 * time.Second},
		{Mode: casedesk.FaultDrop, Count: 4},
		{Mode: casedesk.FaultDrop, Count: 4, AfterHandling: true},
	}
	for _, f := range faults {
		t.Run(fmt.Sprintf("%s_after=%v", f.Mode, f.AfterHandling), func(t *testing.T) {
			t.Parallel()
			d := startDesk(t, nil)
			cfg := fastConfig(t, deskSink(d), hookSink(d))
			cfg.Timeout = ms(400)
			c := startClient(t, cfg)
			d.SetFault(f)
			var ts []rules.Transition
			for i, id := range []string{"SL-1", "BIN-1", "GAS-1"} {
				tr := fire("r.test", "streetlight_fault", "streetlight", id, []string{id}, t0.Add(time.Duration(i)*time.Minute), "major")
				ts = append(ts, tr)
			}
			began := time.Now()
			if err := c.Transitions(context.Background(), ts); err != nil {
				t.Fatal(err)
			}
			var cl []rules.Transition
			for _, tr := range ts {
				cl = append(cl, cleared(tr, t0.Add(time.Hour)))
			}
			if err := c.Transitions(context.Background(), cl); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 30*time.Second, "every case and update delivered", func() bool {
				return c.counter("citygw_case_outbox_depth") == 0
			})
			elapsed := time.Since(began)
			time.Sleep(100 * time.Millisecond)
			byKey := d.requestsByKey()
			if len(d.Requests()) != 3 || len(byKey) != 3 {
				t.Fatalf("%d requests for %d keys, want 3 and 3", len(d.Requests()), len(byKey))
			}
			for _, tr := range ts {
				rs := byKey[caseKey(tr.EpisodeID, 0)]
				if len(rs) != 1 {
					t.Fatalf("case %s: %d requests", tr.GroupKey, len(rs))
				}
				if ups := clientUpdates(rs[0]); len(ups) != 1 {
					t.Errorf("case %s: %d updates, want 1 (cleared)", tr.GroupKey, len(ups))
				}
			}
			if n := len(d.Webhooks()); n != 6 {
				t.Errorf("%d distinct webhook messages, want 6", n)
			}
			if _, used := d.CurrentFault(); used == 0 {
				t.Error("the fault never fired")
			}
			failed := c.counter("citygw_cases_failed_total")
			if failed == 0 {
				t.Error("no failed attempt counted")
			}
			if c.counter("citygw_case_dead_letters") != 0 {
				t.Error("transient faults produced dead letters")
			}
			honour := f.RetryAfter
			if f.RetryAfterDate {
				honour -= time.Second // an HTTP-date has whole seconds
			}
			if f.RetryAfter > 0 && elapsed < honour {
				t.Errorf("all delivered after %v: Retry-After %v was not honoured", elapsed, f.RetryAfter)
			}
			t.Logf("fault %s: %v failed attempts, delivered in %v", f.Mode, failed, elapsed)
		})
	}
}

// A 4xx other than 408/409/429 is permanent: the op goes to the dead
// letters with the desk's message, is not retried, and the case's later
// updates are dead-lettered too (the desk has no such case).
func TestPermanentFailureIsDeadLettered(t *testing.T) {
	d := startDesk(t, nil)
	codes := testCodes(t)
	// A service code the desk does not know: 404 from POST /requests.json.
	codes.Services["streetlight_fault"].Codes = map[string]string{"default": "NO-SUCH"}
	c := newClientWithCodes(t, fastConfig(t, deskSink(d)), codes)
	c.start()
	f := fire("r.test", "streetlight_fault", "streetlight", "SL-1", []string{"SL-1"}, t0, "major")
	if err := c.Transitions(context.Background(), []rules.Transition{f}); err != nil {
		t.Fatal(err)
	}
	if err := c.Transitions(context.Background(), []rules.Transition{cleared(f, t0.Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "two dead letters", func() bool { return c.counter("citygw_case_dead_letters") == 2 })
	if c.counter("citygw_cases_failed_total", "reason", "rejected") != 1 || c.counter("citygw_cases_failed_total", "reason", "undeliverable") != 1 {
		t.Errorf("failed: rejected %v, undeliverable %v", c.counter("citygw_cases_failed_total", "reason", "rejected"),
			c.counter("citygw_cases_failed_total", "reason", "undeliverable"))
	}
	dead, err := c.st.dead()
	if err != nil || len(dead) != 2 {
		t.Fatalf("dead letters %v %+v", err, dead)
	}
	if want := `unknown service_code "NO-SUCH"`; !strings.Contains(dead[0].LastErr, want) || dead[0].Kind != opOpen {
		t.Errorf("dead letter %s %q lacks the desk's message %q", dead[0].Kind, dead[0].LastErr, want)
	}
	if st := c.Status(); st.Cases[0].Sinks[0].Status != scRejected || st.OutboxDepth != 0 {
		t.Errorf("status %+v", st)
	}
	if n := len(d.Requests()); n != 0 {
		t.Errorf("%d requests", n)
	}
}

// A webhook endpoint answering 410 Gone is disabled: no retries, its ops
// are dead letters, the other sink carries on, and it stays disabled after
// a restart until its URL changes. (The endpoint is a retired receiver: a
// real loopback HTTP server that answers 410 to everything.)
func TestWebhookGoneDisablesTheSink(t *testing.T) {
	d := startDesk(t, nil)
	var hits atomic.Int32
	retired := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "this endpoint was retired", http.StatusGone)
	}))
	defer retired.Close()
	hook := SinkConfig{Name: "hook", Type: SinkWebhook, URL: retired.URL + "/hook", Secret: testSecret}
	cfg := fastConfig(t, deskSink(d), hook)
	c := startClient(t, cfg)
	for i, id := range []string{"SL-1", "SL-2"} {
		f := fire("r.test", "streetlight_fault", "streetlight", id, []string{id}, t0.Add(time.Duration(i)*time.Minute), "major")
		if err := c.Transitions(context.Background(), []rules.Transition{f}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "desk cases and a disabled hook", func() bool {
		return len(d.Requests()) == 2 && c.counter("citygw_case_outbox_depth") == 0
	})
	if h := hits.Load(); h != 1 {
		t.Errorf("the retired endpoint was called %d times, want 1", h)
	}
	if c.counter("citygw_case_sink_up", "sink", "hook") != 0 || c.counter("citygw_case_sink_up", "sink", "desk") != 1 {
		t.Error("sink_up gauges wrong")
	}
	if c.counter("citygw_cases_failed_total", "sink", "hook", "reason", "gone") != 2 {
		t.Errorf("gone failures %v", c.counter("citygw_cases_failed_total", "sink", "hook", "reason", "gone"))
	}
	c.stop()
	c2 := newClient(t, cfg)
	if st := c2.Status(); !st.Sinks[1].Disabled {
		t.Error("the sink must stay disabled after a restart")
	}
	c2.stop()
	cfg.Sinks[1].URL = retired.URL + "/new-hook"
	c3 := newClient(t, cfg)
	if st := c3.Status(); st.Sinks[1].Disabled {
		t.Error("a new URL must enable the sink again")
	}
}

// Consecutive failures open the sink's breaker (sink_up 0); once the desk
// recovers, a half-open probe closes it and the backlog goes out.
func TestBreakerOpensAndRecovers(t *testing.T) {
	d := startDesk(t, nil)
	d.SetFault(casedesk.Fault{Mode: casedesk.Fault500})
	cfg := fastConfig(t, deskSink(d))
	cfg.BreakerFailures, cfg.BreakerCooldown = 3, ms(300)
	c := startClient(t, cfg)
	if err := c.Transitions(context.Background(), threeEpisodes()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the breaker to open", func() bool {
		return c.counter("citygw_case_sink_up", "sink", "desk") == 0 && c.Status().Sinks[0].Breaker != BreakerClosed
	})
	d.SetFault(casedesk.Fault{Mode: casedesk.FaultNone})
	waitFor(t, 10*time.Second, "recovery", func() bool { return c.counter("citygw_case_outbox_depth") == 0 })
	if c.counter("citygw_case_sink_up", "sink", "desk") != 1 || c.Status().Sinks[0].Breaker != BreakerClosed {
		t.Error("the breaker did not close after the desk recovered")
	}
	checkOnce(t, d, threeEpisodes())
}

// An update the desk stored but did not answer (500 after storing, or an
// answer slower than the timeout) is found again by its update_id through
// GET /servicerequestupdates.json, not posted twice.
func TestUpdateReconciledAfterAmbiguousFailure(t *testing.T) {
	for _, f := range []casedesk.Fault{
		{Mode: casedesk.Fault500, Count: 2, AfterHandling: true, Paths: []string{casedesk.PathUpdates}},
		{Mode: casedesk.FaultSlow, Count: 1, Delay: 3 * time.Second, Paths: []string{casedesk.PathUpdates}},
	} {
		t.Run(f.Mode, func(t *testing.T) {
			d := startDesk(t, nil)
			cfg := fastConfig(t, deskSink(d))
			cfg.Timeout = ms(400)
			c := startClient(t, cfg)
			d.SetFault(f)
			ts := threeEpisodes()
			if err := c.Transitions(context.Background(), ts); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 15*time.Second, "delivery", func() bool { return c.counter("citygw_case_outbox_depth") == 0 })
			checkOnce(t, d, ts)
			if _, used := d.CurrentFault(); used == 0 {
				t.Fatal("the fault never fired")
			}
			if c.counter("citygw_cases_updated_total") != 3 {
				t.Errorf("updated %v, want 3", c.counter("citygw_cases_updated_total"))
			}
			if c.counter("citygw_case_reconciled_total") == 0 {
				t.Error("no update was found by reconciliation (the desk's own dedup hid a second POST)")
			}
		})
	}
}
