package caseclient

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/rules"
)

// A long-running episode gets a "still active" update once per repeat
// interval, and a severity change waits for the interval too (it rides on
// the next update instead of adding one).
func TestRepeatIntervalBoundsUpdates(t *testing.T) {
	d := startDesk(t, nil)
	clk := &clock{t: time.Now()}
	cfg := fastConfig(t, deskSink(d))
	cfg.RepeatInterval, cfg.Now = ms(int(4*time.Hour/time.Millisecond)), clk.Now
	c := startClient(t, cfg)
	f := fire("r.test", "streetlight_fault", "streetlight", "SL-1", []string{"SL-1"}, t0, "major")
	if err := c.Transitions(context.Background(), []rules.Transition{f}); err != nil {
		t.Fatal(err)
	}
	key := caseKey(f.EpisodeID, 0)
	updates := func() []string {
		rs := d.requestsByKey()[key]
		if len(rs) == 0 {
			return nil
		}
		var out []string
		for _, u := range clientUpdates(rs[0]) {
			out = append(out, u.Description)
		}
		return out
	}
	waitFor(t, 10*time.Second, "the case", func() bool { return len(d.requestsByKey()[key]) == 1 })
	clk.Add(time.Hour)
	f2 := f
	f2.Severity = "critical"
	if err := c.Transitions(context.Background(), []rules.Transition{f2}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	if n := len(updates()); n != 0 {
		t.Fatalf("%d updates within the repeat interval", n)
	}
	clk.Add(3*time.Hour + time.Second)
	waitFor(t, 10*time.Second, "the first reminder", func() bool { return len(updates()) == 1 })
	if u := updates()[0]; !strings.Contains(u, "severity changed to critical") || !strings.Contains(u, "anomaly persists") {
		t.Errorf("reminder %q", u)
	}
	clk.Add(2 * time.Hour)
	time.Sleep(150 * time.Millisecond)
	if n := len(updates()); n != 1 {
		t.Fatalf("%d updates two hours after the last, want 1", n)
	}
	clk.Add(2*time.Hour + time.Second)
	waitFor(t, 10*time.Second, "the second reminder", func() bool { return len(updates()) == 2 })
	if u := updates()[1]; strings.Contains(u, "severity changed") {
		t.Errorf("second reminder repeats the severity change: %q", u)
	}
}

// An ended case's state is forgotten after the retention, once nothing of
// it is left in the outbox; a late duplicate of its end is ignored.
func TestRetentionForgetsEndedCases(t *testing.T) {
	d := startDesk(t, nil)
	clk := &clock{t: time.Now()}
	cfg := fastConfig(t, deskSink(d))
	cfg.Retention, cfg.Now = ms(int(time.Hour/time.Millisecond)), clk.Now
	c := startClient(t, cfg)
	f := fire("r.test", "streetlight_fault", "streetlight", "SL-1", []string{"SL-1"}, t0, "major")
	end := cleared(f, clk.Now())
	if err := c.Transitions(context.Background(), []rules.Transition{f, end}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "delivery", func() bool { return c.counter("citygw_case_outbox_depth") == 0 })
	time.Sleep(100 * time.Millisecond)
	if n := len(c.Status().Cases); n != 1 {
		t.Fatalf("%d cases in the status before the retention", n)
	}
	clk.Add(2 * time.Hour)
	waitFor(t, 10*time.Second, "the case state to be forgotten", func() bool { return len(c.Status().Cases) == 0 })
	if err := c.Transitions(context.Background(), []rules.Transition{end}); err != nil {
		t.Fatal(err)
	}
	if c.counter("citygw_case_transitions_ignored_total", "why", "unknown_episode") != 1 {
		t.Error("a late end of a forgotten episode should be ignored")
	}
	c.stop()
	c2 := newClient(t, cfg)
	if n := len(c2.Status().Cases); n != 0 {
		t.Errorf("the forgotten case came back after a restart")
	}
}
