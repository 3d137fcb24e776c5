package caseclient

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/caseclient/casedesk"
	"github.com/citygw/citygw/rules"
)

// The desk closes a case while its anomaly persists: after the wait a new
// case opens referencing the old one; the cleared update then goes to the
// new case only. A case closed after its anomaly cleared is not re-opened.
func TestClosedCaseWithPersistingAnomalyReopens(t *testing.T) {
	d := startDesk(t, nil)
	cfg := fastConfig(t, deskSink(d))
	cfg.ReopenWait = ms(300)
	c := startClient(t, cfg)
	ctx := context.Background()
	f := fire("r.test", "streetlight_fault", "streetlight", "SL-1", []string{"SL-1"}, t0, "major")
	g := fire("r.test", "streetlight_fault", "streetlight", "SL-2", []string{"SL-2"}, t0, "major")
	if err := c.Transitions(ctx, []rules.Transition{f, g}); err != nil {
		t.Fatal(err)
	}
	k0 := caseKey(f.EpisodeID, 0)
	waitFor(t, 10*time.Second, "the first cases", func() bool { return len(d.Requests()) == 2 })
	old := d.requestsByKey()[k0][0]
	// g clears, then both are closed by the desk.
	if err := c.Transitions(ctx, []rules.Transition{cleared(g, t0.Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	gk := caseKey(g.EpisodeID, 0)
	waitFor(t, 10*time.Second, "g's cleared update", func() bool { return len(clientUpdates(d.requestsByKey()[gk][0])) == 1 })
	closedAt := time.Now()
	if err := d.CloseRequest(old.ID, "NO_FURTHER_ACTION", "crew found nothing"); err != nil {
		t.Fatal(err)
	}
	if err := d.CloseRequest(d.requestsByKey()[gk][0].ID, "FIXED", "lamp replaced"); err != nil {
		t.Fatal(err)
	}
	k1 := caseKey(f.EpisodeID, 1)
	waitFor(t, 10*time.Second, "the re-opened case", func() bool { return len(d.requestsByKey()[k1]) == 1 })
	if waited := time.Since(closedAt); waited < 300*time.Millisecond {
		t.Errorf("re-opened %v after the closure, before the 300ms wait", waited)
	}
	re := d.requestsByKey()[k1][0]
	if got := re.Attributes["reopens"]; len(got) != 1 || got[0] != k0 {
		t.Errorf("reopens attribute %v, want %s", got, k0)
	}
	if !strings.Contains(re.Description, k0) || !strings.Contains(re.Description, old.ID) || !strings.Contains(re.Description, "re-opened") {
		t.Errorf("the new case's description does not reference the old one:\n%s", re.Description)
	}
	if err := c.Transitions(ctx, []rules.Transition{cleared(f, t0.Add(2*time.Hour))}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the cleared update on the new case", func() bool {
		return len(clientUpdates(d.requestsByKey()[k1][0])) == 1
	})
	time.Sleep(400 * time.Millisecond) // past another wait: nothing else may open
	if n := len(d.Requests()); n != 3 {
		t.Errorf("%d requests, want 3 (g's closure after clearing must not re-open)", n)
	}
	if n := len(clientUpdates(d.requestsByKey()[k0][0])); n != 0 {
		t.Errorf("the closed case got %d updates", n)
	}
	st := c.Status()
	for _, cs := range st.Cases {
		if cs.Episode == f.EpisodeID && (cs.Sinks[0].Key != k1 || len(cs.Sinks[0].Previous) != 1 || !strings.HasPrefix(cs.Sinks[0].Previous[0], k0+"=")) {
			t.Errorf("status of the re-opened case %+v", cs.Sinks[0])
		}
	}
}

// Batch services answer with a token that resolves to an id later; the
// update waits for the id. Blackbox services give no id: the case is open
// but its updates cannot be posted (dead letters, counted as undeliverable).
func TestBatchTokenAndBlackboxServices(t *testing.T) {
	svcs := casedesk.DefaultServices()
	for i := range svcs {
		switch svcs[i].Code {
		case "SL-FAULT":
			svcs[i].Type = casedesk.TypeBatch
		case "BIN-FULL":
			svcs[i].Type = casedesk.TypeBlackbox
		}
	}
	d := startDesk(t, func(c *casedesk.Config) { c.Services = svcs; c.TokenDelay = 300 * time.Millisecond })
	c := startClient(t, fastConfig(t, deskSink(d)))
	f := fire("r.test", "streetlight_fault", "streetlight", "SL-1", []string{"SL-1"}, t0, "major")
	b := fire("r.bin", "bin_overflow", "waste_bin", "BIN-1", []string{"BIN-1"}, t0, "minor")
	ts := []rules.Transition{f, b, cleared(f, t0.Add(time.Minute)), cleared(b, t0.Add(time.Minute))}
	if err := c.Transitions(context.Background(), ts); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the batch case's update after its token resolved", func() bool {
		rs := d.requestsByKey()[caseKey(f.EpisodeID, 0)]
		return len(rs) == 1 && len(clientUpdates(rs[0])) == 1
	})
	waitFor(t, 10*time.Second, "outbox drained", func() bool { return c.counter("citygw_case_outbox_depth") == 0 })
	if n := len(d.Requests()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
	st := c.Status()
	for _, cs := range st.Cases {
		sc := cs.Sinks[0]
		switch cs.Episode {
		case f.EpisodeID:
			if sc.ID == "" || sc.Token != "" {
				t.Errorf("batch case: id %q token %q", sc.ID, sc.Token)
			}
		case b.EpisodeID:
			if sc.ID != "" || sc.Status != scOpen {
				t.Errorf("blackbox case: %+v", sc)
			}
		}
	}
	if c.counter("citygw_cases_failed_total", "reason", "undeliverable") != 1 {
		t.Error("the blackbox case's update should be one undeliverable dead letter")
	}
}
