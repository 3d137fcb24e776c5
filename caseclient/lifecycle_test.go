package caseclient

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/rules"
)

// One episode: open, a severity change (an update), cleared (an update),
// on both an Open311 desk and a signed webhook; nothing is closed.
func TestLifecycleOpenUpdateClearedOnOneCase(t *testing.T) {
	d := startDesk(t, nil)
	cfg := fastConfig(t, deskSink(d), hookSink(d))
	cfg.RepeatInterval = ms(1) // severity changes go out at once
	off := false
	cfg.Remind = &off
	c := startClient(t, cfg)
	ctx := context.Background()

	f := fire("streetlight.dark_at_night", "streetlight_fault", "streetlight", "SL-GCJ", []string{"SL-GCJ"}, t0, "major")
	if err := c.Transitions(ctx, []rules.Transition{f}); err != nil {
		t.Fatal(err)
	}
	key := caseKey(f.EpisodeID, 0)
	waitFor(t, 10*time.Second, "the case on the desk", func() bool { return len(d.requestsByKey()[key]) == 1 })
	req := d.requestsByKey()[key][0]
	if req.ServiceCode != "SL-FAULT" || req.Status != "open" {
		t.Errorf("request %+v", req)
	}
	wlat, wlon := GCJ02ToWGS84(31.17530398364597, 121.531541859215)
	if req.Lat == nil || metres(*req.Lat, *req.Long, wlat, wlon) > 0.05 {
		t.Errorf("location %v,%v, want WGS84 %v,%v", req.Lat, req.Long, wlat, wlon)
	}
	for k, want := range map[string]string{"component_code": "3101150118000009", "grid": "31011500001", "district": "310115",
		"major_class": "01", "sub_class": "18", "case_type": "component", "severity": "major", "rule": "streetlight.dark_at_night",
		"department": "区市政照明管理所", "deadline": "2 working days", "episode_id": f.EpisodeID} {
		if got := req.Attributes[k]; len(got) != 1 || got[0] != want {
			t.Errorf("attribute %s = %v, want %q", k, got, want)
		}
	}
	if !strings.HasPrefix(req.Description, keyTag(key)) || !strings.Contains(req.Description, "路灯不亮") {
		t.Errorf("description %q", req.Description)
	}

	// Severity change: an update on the same case.
	f2 := f
	f2.Severity = "critical"
	if err := c.Transitions(ctx, []rules.Transition{f2}); err != nil {
		t.Fatal(err)
	}
	// The same firing again (an engine retry) changes nothing.
	if err := c.Transitions(ctx, []rules.Transition{f2}); err != nil {
		t.Fatal(err)
	}
	// Cleared.
	if err := c.Transitions(ctx, []rules.Transition{cleared(f2, t0.Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "two updates and three webhooks", func() bool {
		return len(clientUpdates(d.requestsByKey()[key][0])) == 2 && len(d.Webhooks()) == 3
	})
	time.Sleep(200 * time.Millisecond) // nothing more may arrive
	if n := len(d.Requests()); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
	req = d.requestsByKey()[key][0]
	ups := clientUpdates(req)
	if len(ups) != 2 || !strings.Contains(ups[0].Description, "severity changed to critical") ||
		!strings.Contains(ups[1].Description, "anomaly cleared, awaiting verification") {
		t.Fatalf("updates %+v", ups)
	}
	if req.Status != "open" || ups[0].Status != "OPEN" || ups[1].Status != "OPEN" {
		t.Errorf("the gateway must never close a case: status %s, updates %s %s", req.Status, ups[0].Status, ups[1].Status)
	}
	hooks := d.Webhooks()
	types := []string{}
	for _, h := range hooks {
		var ev WebhookEvent
		if err := json.Unmarshal(h.Payload, &ev); err != nil {
			t.Fatal(err)
		}
		types = append(types, ev.Type)
		if h.IdempotencyKey != h.ID || ev.Data.CaseKey != key || !strings.HasPrefix(h.ID, key+":") {
			t.Errorf("webhook %s: idempotency key %s, case %s", h.ID, h.IdempotencyKey, ev.Data.CaseKey)
		}
	}
	if strings.Join(types, ",") != "case.opened,case.updated,case.cleared" {
		t.Errorf("webhook events in order %v", types)
	}
	if c.counter("citygw_cases_opened_total", "sink", "desk") != 1 || c.counter("citygw_cases_updated_total", "sink", "desk") != 2 ||
		c.counter("citygw_cases_opened_total", "sink", "hook") != 1 || c.counter("citygw_cases_updated_total", "sink", "hook") != 2 {
		t.Errorf("metrics opened/updated wrong")
	}
	if c.counter("citygw_case_transitions_ignored_total", "why", "duplicate") != 1 {
		t.Errorf("the repeated firing should count as a duplicate")
	}
	if c.counter("citygw_case_outbox_depth") != 0 || c.counter("citygw_case_delivery_duration_seconds") != 6 {
		t.Errorf("outbox depth %v, delivery samples %v", c.counter("citygw_case_outbox_depth"), c.counter("citygw_case_delivery_duration_seconds"))
	}
	st := c.Status()
	if len(st.Cases) != 1 || st.Cases[0].Firing || len(st.Cases[0].Sinks) != 2 || st.Cases[0].Sinks[0].ID != req.ID ||
		st.Cases[0].Sinks[0].Link != d.srv.URL+"/cases/"+req.ID {
		t.Errorf("status %+v", st)
	}
}

// Pending, cancelled and shadow transitions open nothing.
func TestPendingAndShadowOpenNothing(t *testing.T) {
	d := startDesk(t, nil)
	c := startClient(t, fastConfig(t, deskSink(d)))
	f := fire("streetlight.dark_at_night", "streetlight_fault", "streetlight", "SL-1", []string{"SL-1"}, t0, "major")
	pend := f
	pend.From, pend.To = rules.Inactive, rules.Pending
	cancel := f
	cancel.From, cancel.To, cancel.Reason = rules.Pending, rules.Inactive, "cancelled"
	shadow := fire("streetlight.burning_by_day", "streetlight_fault", "streetlight", "SL-2", []string{"SL-2"}, t0, "minor")
	shadow.Shadow = true
	if err := c.Transitions(context.Background(), []rules.Transition{pend, cancel, shadow, cleared(shadow, t0.Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(d.Requests()); n != 0 {
		t.Fatalf("%d requests opened", n)
	}
	if c.counter("citygw_case_transitions_ignored_total", "why", "pending") != 1 ||
		c.counter("citygw_case_transitions_ignored_total", "why", "cancelled") != 1 ||
		c.counter("citygw_case_transitions_ignored_total", "why", "shadow") != 2 {
		t.Errorf("ignored transitions not counted")
	}
	if c.counter("citygw_case_outbox_depth") != 0 {
		t.Error("outbox not empty")
	}
}
