package caseclient

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/citygw/citygw/caseclient/casedesk"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/rules"
)

const (
	fireRule    = "streetlight.dark_at_night"
	fireService = "streetlight_fault"
)

// replicaConfig is a replica's client config: its own outbox, the desk,
// replicas mode on.
func replicaConfig(t *testing.T, url string) Config {
	cfg := fastConfig(t, SinkConfig{Name: "desk", Type: SinkOpen311, URL: url, APIKey: testAPIKey})
	cfg.Replicas = true
	off := false
	cfg.Remind = &off
	return cfg
}

// caseOf returns the client's case state of an episode at the desk sink.
func caseOf(c *running, episode string) CaseSinkStatus {
	for _, cs := range c.Status().Cases {
		if cs.Episode == episode && len(cs.Sinks) > 0 {
			return cs.Sinks[0]
		}
	}
	return CaseSinkStatus{}
}

// openRequests returns the desk's open requests about an anomaly.
func openRequests(d *desk, anomaly string) []casedesk.Request {
	var out []casedesk.Request
	for _, r := range d.Requests() {
		if r.Status == "open" && r.AnomalyKey() == anomaly {
			out = append(out, r)
		}
	}
	return out
}

// staleListing sits in front of the desk and answers GET /requests.json
// from the desk's answer at the moment it was armed: a lookup that ran
// before the other replica's POST landed. Everything else passes through.
type staleListing struct {
	desk http.Handler
	mu   sync.Mutex
	snap map[string][]byte // query -> body; nil when not armed
	// stripAnomaly removes attribute[anomaly_key] from POSTed requests: a
	// case system that keeps no per-anomaly uniqueness.
	stripAnomaly bool
}

func (s *staleListing) arm(base string, queries ...url.Values) error {
	snap := map[string][]byte{}
	for _, q := range queries {
		resp, err := http.Get(base + "/requests.json?" + q.Encode())
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		snap[q.Encode()] = b
	}
	s.mu.Lock()
	s.snap = snap
	s.mu.Unlock()
	return nil
}

func (s *staleListing) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/requests.json" {
		q := r.URL.Query()
		q.Del("start_date")
		q.Del("end_date")
		s.mu.Lock()
		b, ok := s.snap[q.Encode()]
		delete(s.snap, q.Encode()) // one stale answer per query
		s.mu.Unlock()
		if ok {
			w.Header().Set("Content-Type", "application/json")
			w.Write(b)
			return
		}
	}
	if r.Method == http.MethodPost && r.URL.Path == "/requests.json" && s.stripAnomaly {
		body, _ := io.ReadAll(r.Body)
		f, _ := url.ParseQuery(string(body))
		f.Del("attribute[anomaly_key]")
		enc := f.Encode()
		r.Body, r.ContentLength = io.NopCloser(strings.NewReader(enc)), int64(len(enc))
	}
	s.desk.ServeHTTP(w, r)
}

// TestReplicasAttach: a replica whose episode of an anomaly starts later
// than another replica's (it saw other readings) joins the open case
// instead of opening a second one, found by its lookup or, when the lookup
// raced the other replica's POST, told by the desk; closed cases and
// clients outside replicas mode are not merged; and the desk keeps one
// cleared update of the two replicas'.
func TestReplicasAttach(t *testing.T) {
	for _, tc := range []struct {
		name        string
		replicas    bool // replicas mode on both clients
		closeFirst  bool // the desk closes the first case before the second replica fires
		stale       bool // the second replica's lookups answer as before the first POST
		strip       bool // the desk keeps no per-anomaly uniqueness (attribute stripped)
		wantOpen    int  // requests on the desk about the anomaly
		wantHow     string
		wantDupes   float64 // counted by the second replica
		wantCleared int     // client updates ending in :cleared on the first request (both replicas clear)
	}{
		{name: "the lookup finds the open case", replicas: true, wantOpen: 1, wantHow: "lookup", wantCleared: 1},
		{name: "the lookup raced the first POST: the desk answers with the open case", replicas: true, stale: true,
			wantOpen: 1, wantHow: "desk", wantCleared: 1},
		{name: "a closed case is not joined", replicas: true, closeFirst: true, wantOpen: 2, wantCleared: 0}, // nothing is sent to a closed case
		{name: "a desk without per-anomaly uniqueness: the duplicate is counted", replicas: true, stale: true, strip: true,
			wantOpen: 2, wantDupes: 1, wantCleared: 1},
		{name: "not in replicas mode: two episodes, two cases", replicas: false, wantOpen: 2, wantCleared: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDesk(t, nil)
			front := &staleListing{desk: d.Handler(), stripAnomaly: tc.strip}
			srv := httptest.NewServer(front)
			t.Cleanup(srv.Close)
			cfgA, cfgB := replicaConfig(t, d.srv.URL), replicaConfig(t, srv.URL)
			cfgA.Replicas, cfgB.Replicas = tc.replicas, tc.replicas
			cfgA.LookupBeforeOpen, cfgB.LookupBeforeOpen = tc.replicas, tc.replicas
			cfgA.ReopenWait = yamlconf.Duration(time.Hour) // a closed first case stays closed here
			a, b := startClient(t, cfgA), startClient(t, cfgB)
			ctx := context.Background()

			fa := fire(fireRule, fireService, "streetlight", "SL-1", []string{"SL-1"}, t0, "major")
			fb := fire(fireRule, fireService, "streetlight", "SL-1", []string{"SL-1"}, t0.Add(7*time.Second), "major")
			anomaly := AnomalyKey(fireRule, "SL-1")
			code := testCodes(t).Service(fireService).ServiceCode("desk")
			if tc.stale {
				// Both of the second replica's lookups see the desk empty.
				q1 := url.Values{"service_code": {code}}
				q2 := url.Values{"service_code": {code}, "status": {"open"}}
				if err := front.arm(d.srv.URL, q1, q2); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.Transitions(ctx, []rules.Transition{fa}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the first replica's case", func() bool { return caseOf(a, fa.EpisodeID).ID != "" })
			first := caseOf(a, fa.EpisodeID)
			if tc.closeFirst {
				if err := d.CloseRequest(first.ID, "FIXED", "repaired"); err != nil {
					t.Fatal(err)
				}
				waitFor(t, 10*time.Second, "the first replica to see its case closed", func() bool {
					return caseOf(a, fa.EpisodeID).Status == scClosed
				})
			}
			if err := b.Transitions(ctx, []rules.Transition{fb}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the second replica's case", func() bool { return caseOf(b, fb.EpisodeID).ID != "" })
			second := caseOf(b, fb.EpisodeID)

			var about []casedesk.Request
			for _, r := range d.Requests() {
				if r.Attributes["rule"][0] == fireRule && r.DeviceID == "SL-1" {
					about = append(about, r)
				}
			}
			if len(about) != tc.wantOpen {
				t.Fatalf("%d requests on the desk about the anomaly, want %d", len(about), tc.wantOpen)
			}
			attached := tc.wantHow != ""
			if got := b.counter("citygw_cases_attached_total", "how", tc.wantHow); attached && got != 1 {
				t.Errorf("attached (how=%s) = %v, want 1", tc.wantHow, got)
			}
			if attached {
				if second.ID != first.ID || second.AttachedTo != first.Key {
					t.Errorf("second replica's case %+v; want attached to %s (id %s)", second, first.Key, first.ID)
				}
				if got := b.counter("citygw_cases_opened_total"); got != 0 {
					t.Errorf("the attached replica counts %v opened cases", got)
				}
				if tc.wantHow == "desk" {
					if m := about[0].Merged; len(m) != 1 || m[0] != second.Key {
						t.Errorf("desk's merged_case_keys %v, want [%s]", m, second.Key)
					}
				}
			} else {
				if second.ID == first.ID || second.AttachedTo != "" {
					t.Errorf("second replica's case %+v joined the first (%s)", second, first.ID)
				}
				if got := b.counter("citygw_cases_attached_total"); got != 0 {
					t.Errorf("attached = %v, want 0", got)
				}
			}
			if got := b.counter("citygw_cases_duplicate_total"); got != tc.wantDupes {
				t.Errorf("duplicates counted = %v, want %v", got, tc.wantDupes)
			}
			if tc.replicas && !tc.closeFirst && !tc.strip && len(openRequests(d, anomaly)) != 1 {
				t.Errorf("open requests with anomaly_key %s: %d, want 1", anomaly, len(openRequests(d, anomaly)))
			}

			// Both replicas see the anomaly clear and report it.
			for _, x := range []struct {
				c *running
				f rules.Transition
			}{{a, fa}, {b, fb}} {
				if err := x.c.Transitions(ctx, []rules.Transition{cleared(x.f, t0.Add(time.Hour))}); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, 10*time.Second, "both cleared updates delivered", func() bool {
				return a.Status().OutboxDepth == 0 && b.Status().OutboxDepth == 0
			})
			r, _ := d.Request(first.ID)
			n := 0
			for _, u := range clientUpdates(r) {
				if strings.HasSuffix(u.ID, ":cleared") {
					n++
				}
			}
			if n != tc.wantCleared {
				t.Errorf("%d cleared updates on request %s, want %d: %+v", n, first.ID, tc.wantCleared, clientUpdates(r))
			}
		})
	}
}

// TestReplicasRace: two replicas open the same anomalies at the same moment
// against one desk, with nothing to tell them apart but the desk's
// per-anomaly uniqueness: every anomaly ends with exactly one case, and
// both replicas address it.
func TestReplicasRace(t *testing.T) {
	d := startDesk(t, nil)
	a, b := startClient(t, replicaConfig(t, d.srv.URL)), startClient(t, replicaConfig(t, d.srv.URL))
	const n = 12
	ctx := context.Background()
	var fa, fb []rules.Transition
	for i := range n {
		g := fmt.Sprintf("LAMP-%02d", i)
		fa = append(fa, fire(fireRule, fireService, "streetlight", g, []string{g}, t0, "major"))
		fb = append(fb, fire(fireRule, fireService, "streetlight", g, []string{g}, t0.Add(time.Duration(i+1)*time.Second), "major"))
	}
	var wg sync.WaitGroup
	for _, x := range []struct {
		c  *running
		ts []rules.Transition
	}{{a, fa}, {b, fb}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, tr := range x.ts { // the opens go out back to back
				if err := x.c.Transitions(ctx, []rules.Transition{tr}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, 20*time.Second, "every case delivered by both replicas", func() bool {
		return a.Status().OutboxDepth == 0 && b.Status().OutboxDepth == 0
	})
	for i := range n {
		g := fmt.Sprintf("LAMP-%02d", i)
		reqs := openRequests(d, AnomalyKey(fireRule, g))
		if len(reqs) != 1 {
			t.Errorf("%s: %d open requests, want 1", g, len(reqs))
			continue
		}
		ca, cb := caseOf(a, fa[i].EpisodeID), caseOf(b, fb[i].EpisodeID)
		if ca.ID != reqs[0].ID || cb.ID != reqs[0].ID {
			t.Errorf("%s: replicas address %q and %q, the desk's case is %s", g, ca.ID, cb.ID, reqs[0].ID)
		}
		if (ca.AttachedTo == "") == (cb.AttachedTo == "") {
			t.Errorf("%s: exactly one replica should have attached: %q, %q", g, ca.AttachedTo, cb.AttachedTo)
		}
	}
	if total := len(d.Requests()); total != n {
		t.Errorf("%d requests on the desk, want %d", total, n)
	}
	opened := a.counter("citygw_cases_opened_total") + b.counter("citygw_cases_opened_total")
	attached := a.counter("citygw_cases_attached_total") + b.counter("citygw_cases_attached_total")
	if opened != n || attached != n {
		t.Errorf("opened %v + attached %v across the replicas, want %d each", opened, attached, n)
	}
	t.Logf("attached by lookup %v, by the desk %v", a.counter("citygw_cases_attached_total", "how", "lookup")+b.counter("citygw_cases_attached_total", "how", "lookup"),
		a.counter("citygw_cases_attached_total", "how", "desk")+b.counter("citygw_cases_attached_total", "how", "desk"))
}

// TestDeskOneOpenRequestPerAnomaly: the desk's unique index on anomaly_key
// among open requests, over its HTTP API.
func TestDeskOneOpenRequestPerAnomaly(t *testing.T) {
	d := startDesk(t, nil)
	post := func(caseKey, anomaly string) (int, string) {
		f := url.Values{"api_key": {testAPIKey}, "service_code": {"SL-FAULT"}, "lat": {"31"}, "long": {"121"},
			"description": {"[case " + caseKey + "] lamp dark"}, "attribute[case_key]": {caseKey}}
		if anomaly != "" {
			f.Set("attribute[anomaly_key]", anomaly)
		}
		resp, err := http.Post(d.srv.URL+"/requests.json", "application/x-www-form-urlencoded", strings.NewReader(f.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(bytes.TrimSpace(b))
	}
	for _, step := range []struct {
		name, caseKey, anomaly string
		close                  string // close this request id first
		want                   string // substring of the answer
	}{
		{name: "first open", caseKey: "k1", anomaly: "cgwa-x", want: `"service_request_id":"1001"`},
		{name: "second open of the anomaly: the open request", caseKey: "k2", anomaly: "cgwa-x",
			want: `"service_request_id":"1001","service_notice":"An open request for this anomaly exists: 1001; this report was merged into it.","account_id":null,"duplicate":true,"case_key":"k1"`},
		{name: "the first case's retry", caseKey: "k1", anomaly: "cgwa-x", want: `"duplicate":true,"case_key":"k1"`},
		{name: "another anomaly", caseKey: "k3", anomaly: "cgwa-y", want: `"service_request_id":"1002"`},
		{name: "no anomaly key: never merged", caseKey: "k4", want: `"service_request_id":"1003"`},
		{name: "no anomaly key again", caseKey: "k4", want: `"service_request_id":"1004"`},
		{name: "after the open request is closed, a new one", close: "1001", caseKey: "k5", anomaly: "cgwa-x",
			want: `"service_request_id":"1005"`},
	} {
		if step.close != "" {
			if err := d.CloseRequest(step.close, "FIXED", ""); err != nil {
				t.Fatal(err)
			}
		}
		code, body := post(step.caseKey, step.anomaly)
		if code != 200 || !strings.Contains(body, step.want) {
			t.Errorf("%s: %d %s; want 200 with %s", step.name, code, body, step.want)
		}
	}
	r, _ := d.Request("1001")
	if len(r.Merged) != 1 || r.Merged[0] != "k2" {
		t.Errorf("merged_case_keys of 1001 = %v, want [k2]", r.Merged)
	}
	// The merge survives a restart of the desk.
	d.Close()
	d2, err := casedesk.New(casedesk.Config{Dir: d.dir, APIKeys: []string{testAPIKey}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if r, _ := d2.Request("1001"); len(r.Merged) != 1 {
		t.Errorf("after a restart merged_case_keys of 1001 = %v", r.Merged)
	}
}

// The webhook carries the anomaly key in a header and in the event.
func TestReplicasWebhookAnomalyHeader(t *testing.T) {
	got := make(chan http.Header, 4)
	var body []byte
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		body = b
		mu.Unlock()
		got <- r.Header.Clone()
	}))
	defer srv.Close()
	cfg := fastConfig(t, SinkConfig{Name: "hook", Type: SinkWebhook, URL: srv.URL, Secret: testSecret})
	cfg.Replicas = true
	c := startClient(t, cfg)
	f := fire(fireRule, fireService, "streetlight", "SL-2", []string{"SL-2"}, t0, "major")
	if err := c.Transitions(context.Background(), []rules.Transition{f}); err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-got:
		want := AnomalyKey(fireRule, "SL-2")
		if h.Get(AnomalyHeader) != want {
			t.Errorf("%s = %q, want %q", AnomalyHeader, h.Get(AnomalyHeader), want)
		}
		mu.Lock()
		defer mu.Unlock()
		if !strings.Contains(string(body), `"anomaly_key":"`+want+`"`) {
			t.Errorf("event %s lacks the anomaly key", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook delivery")
	}
}

func TestAnomalyKey(t *testing.T) {
	for _, tc := range []struct {
		a, b [2]string
		same bool
	}{
		{[2]string{"r", "SL-1"}, [2]string{"r", "SL-1"}, true},
		{[2]string{"r", "SL-1"}, [2]string{"r", "SL-2"}, false},
		{[2]string{"r1", "SL-1"}, [2]string{"r2", "SL-1"}, false},
		{[2]string{"ab", "c"}, [2]string{"a", "bc"}, false}, // the separator matters
	} {
		ka, kb := AnomalyKey(tc.a[0], tc.a[1]), AnomalyKey(tc.b[0], tc.b[1])
		if (ka == kb) != tc.same || len(ka) != 25 || !strings.HasPrefix(ka, "cgwa-") {
			t.Errorf("AnomalyKey%v = %s, AnomalyKey%v = %s; same want %v", tc.a, ka, tc.b, kb, tc.same)
		}
	}
}

// TestReplicasReopen: the case system closes the one case of an anomaly
// that both replicas still see firing; each re-opens after reopen_wait and
// the anomaly again has exactly one open case, which both address.
func TestReplicasReopen(t *testing.T) {
	d := startDesk(t, nil)
	a, b := startClient(t, replicaConfig(t, d.srv.URL)), startClient(t, replicaConfig(t, d.srv.URL))
	ctx := context.Background()
	fa := fire(fireRule, fireService, "streetlight", "SL-3", []string{"SL-3"}, t0, "major")
	fb := fire(fireRule, fireService, "streetlight", "SL-3", []string{"SL-3"}, t0.Add(3*time.Second), "major")
	if err := a.Transitions(ctx, []rules.Transition{fa}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the first case", func() bool { return caseOf(a, fa.EpisodeID).ID != "" })
	if err := b.Transitions(ctx, []rules.Transition{fb}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the second replica attached", func() bool { return caseOf(b, fb.EpisodeID).AttachedTo != "" })
	first, firstKey := caseOf(a, fa.EpisodeID).ID, caseOf(a, fa.EpisodeID).Key
	if err := d.CloseRequest(first, "CLOSED", "closed while the lamp is still dark"); err != nil {
		t.Fatal(err)
	}
	anomaly := AnomalyKey(fireRule, "SL-3")
	waitFor(t, 10*time.Second, "both replicas to re-open", func() bool {
		ca, cb := caseOf(a, fa.EpisodeID), caseOf(b, fb.EpisodeID)
		return ca.ID != "" && ca.ID != first && cb.ID != "" && cb.ID != first && len(ca.Previous) == 1 && len(cb.Previous) == 1
	})
	reqs := openRequests(d, anomaly)
	if len(reqs) != 1 {
		t.Fatalf("%d open requests for the anomaly after the re-open, want 1", len(reqs))
	}
	ca, cb := caseOf(a, fa.EpisodeID), caseOf(b, fb.EpisodeID)
	if ca.ID != reqs[0].ID || cb.ID != reqs[0].ID {
		t.Errorf("replicas address %s and %s; the open case is %s", ca.ID, cb.ID, reqs[0].ID)
	}
	// Both replicas name the closed case alike (the attached one by the
	// case it was attached to), and the new case says what it re-opens.
	want := firstKey + "=" + first
	if len(ca.Previous) != 1 || ca.Previous[0] != want || len(cb.Previous) != 1 || cb.Previous[0] != want {
		t.Errorf("previous cases %v and %v, want [%s] each", ca.Previous, cb.Previous, want)
	}
	if got := reqs[0].Attributes["reopens"]; len(got) != 1 || got[0] != firstKey {
		t.Errorf("the new case re-opens %v, want %s", got, firstKey)
	}
	if n := len(d.Requests()); n != 2 {
		t.Errorf("%d requests on the desk, want 2 (the closed one and its re-open)", n)
	}
}
