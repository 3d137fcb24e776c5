package casedesk

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		cfg  Config
		msg  string
	}{
		{"no api key", Config{Dir: dir}, "API key"},
		{"empty api key", Config{Dir: dir, APIKeys: []string{""}}, "API key"},
		{"no dir", Config{APIKeys: []string{"k"}}, "Dir"},
		{"bad secret", Config{Dir: dir, APIKeys: []string{"k"}, WebhookSecrets: []string{"secret"}}, "whsec_"},
		{"bad service", Config{Dir: dir, APIKeys: []string{"k"}, Services: []Service{{Code: "X", Type: "sometimes"}}}, "type"},
		{"duplicate service", Config{Dir: dir, APIKeys: []string{"k"}, Services: []Service{{Code: "X", Type: "batch"}, {Code: "X", Type: "batch"}}}, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := New(tt.cfg, nil)
			if err == nil {
				d.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q lacks %q", err, tt.msg)
			}
		})
	}
	d, err := New(Config{Dir: dir, APIKeys: []string{"k"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if len(d.services) != len(DefaultServices()) {
		t.Errorf("default services not used")
	}
}

func TestPersistence(t *testing.T) {
	dir := t.TempDir()
	td := startDesk(t, dir, nil)
	id := td.openRequest("k1")
	code, body := td.post("/requests.json", url.Values{"api_key": {testKey}, "service_code": {"BIN-FULL"},
		"lat": {"31"}, "long": {"121"}, "attribute[case_key]": {"b1"}})
	if code != 200 {
		t.Fatal(code, body)
	}
	tok := decode[[]map[string]string](t, body)[0]["token"]
	td.post("/servicerequestupdates.json", url.Values{"api_key": {testKey}, "service_request_id": {id}, "update_id": {"u1"},
		"status": {"OPEN"}, "updated_datetime": {"2026-01-15T10:00:00Z"}, "description": {"cleared"}})
	if err := td.CloseRequest(id, "FIXED", "done"); err != nil {
		t.Fatal(err)
	}
	td.sendHook(hook{id: "m1", body: caseBody, key: "op-1"})
	before, hooksBefore := td.Requests(), td.Webhooks()
	td.stop()

	td2 := startDesk(t, dir, nil)
	after, hooksAfter := td2.Requests(), td2.Webhooks()
	a, _ := json.Marshal(before)
	b, _ := json.Marshal(after)
	if string(a) != string(b) {
		t.Fatalf("requests changed across a restart:\n%s\n%s", a, b)
	}
	a, _ = json.Marshal(hooksBefore)
	b, _ = json.Marshal(hooksAfter)
	if string(a) != string(b) {
		t.Fatalf("webhooks changed across a restart:\n%s\n%s", a, b)
	}
	// Ids keep counting; dedup state survived.
	if next := td2.openRequest("k3"); next != "1003" {
		t.Errorf("next id after restart %s, want 1003", next)
	}
	code, body = td2.post("/servicerequestupdates.json", url.Values{"api_key": {testKey}, "service_request_id": {id}, "update_id": {"u1"},
		"status": {"OPEN"}, "updated_datetime": {"2026-01-15T10:00:00Z"}, "description": {"cleared"}})
	if r, _ := td2.Request(id); code != 200 || len(r.Updates) != 2 {
		t.Errorf("duplicate update after restart: %d %s, %d updates", code, body, len(r.Updates))
	}
	if code, body, _ := td2.sendHook(hook{id: "m1", body: caseBody}); !strings.Contains(body, "duplicate") {
		t.Errorf("duplicate webhook after restart: %d %s", code, body)
	}
	if _, _, hdr := td2.sendHook(hook{id: "m9", body: caseBody, key: "op-1"}); hdr.Get("Idempotent-Replayed") != "true" {
		t.Errorf("idempotency key forgotten across a restart")
	}
	td2.clock.Add(time.Minute)
	if code, body := td2.get("/tokens/" + tok + ".json"); code != 200 || !strings.Contains(body, `"service_request_id":"1002"`) {
		t.Errorf("token after restart: %d %s", code, body)
	}
	// Reset forgets everything but keeps counting.
	if err := td2.Reset(); err != nil {
		t.Fatal(err)
	}
	if len(td2.Requests()) != 0 || len(td2.Webhooks()) != 0 {
		t.Fatal("reset kept data")
	}
	if next := td2.openRequest("k4"); next != "1004" {
		t.Errorf("id after reset %s, want 1004", next)
	}
	td2.stop()
	td3 := startDesk(t, dir, nil)
	if n := len(td3.Requests()); n != 1 {
		t.Errorf("%d requests after reset and restart, want 1", n)
	}
}

func TestControlAPI(t *testing.T) {
	td := startDesk(t, "", nil)
	id := td.openRequest("k1")
	td.sendHook(hook{id: "m1", body: caseBody})
	ctl := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, td.srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return readResp(t, resp)
	}
	code, body := ctl("GET", "/_control/requests", "")
	if reqs := decode[[]Request](t, body); code != 200 || len(reqs) != 1 || reqs[0].ID != id || reqs[0].CaseKey() != "k1" {
		t.Fatalf("/_control/requests: %d %s", code, body)
	}
	code, body = ctl("GET", "/_control/webhooks", "")
	if ws := decode[[]WebhookDelivery](t, body); code != 200 || len(ws) != 1 || ws[0].Case.Key != "cgw-ep1" {
		t.Fatalf("/_control/webhooks: %d %s", code, body)
	}
	code, body = ctl("POST", "/_control/fault", `{"mode":"429","retry_after":"3s","count":1,"paths":["requests"]}`)
	if code != 200 || !strings.Contains(body, `"retry_after": "3s"`) {
		t.Fatalf("set fault: %d %s", code, body)
	}
	if code, _ := td.post("/requests.json", goodForm("k2")); code != 429 {
		t.Errorf("fault not applied: %d", code)
	}
	for _, bad := range []string{`{"mode":"teapot"}`, `{"mode":"500","colour":"red"}`, `not json`} {
		if code, body := ctl("POST", "/_control/fault", bad); code != 400 {
			t.Errorf("bad fault %s: %d %s", bad, code, body)
		}
	}
	ctl("POST", "/_control/fault", `{"mode":"500"}`)
	if code, body := ctl("DELETE", "/_control/fault", ""); code != 200 || !strings.Contains(body, `"mode": "none"`) {
		t.Errorf("clear fault: %d %s", code, body)
	}
	code, body = ctl("POST", "/_control/close", `{"id":"`+id+`","status":"FIXED","notes":"verified"}`)
	if code != 200 || !strings.Contains(body, `"status": "closed"`) {
		t.Fatalf("close: %d %s", code, body)
	}
	if code, _ := ctl("POST", "/_control/close", `{"id":"4242"}`); code != 400 {
		t.Errorf("closing an unknown request: %d", code)
	}
	code, body = td.get("/requests/" + id + ".json")
	if !strings.Contains(body, `"status":"closed"`) || !strings.Contains(body, `"status_notes":"verified"`) {
		t.Errorf("closed request over Open311: %s", body)
	}
	if code, body := ctl("POST", "/_control/reopen", `{"id":"`+id+`","notes":"not fixed"}`); code != 200 || !strings.Contains(body, `"status": "open"`) {
		t.Errorf("reopen: %d %s", code, body)
	}
	if code, _ := ctl("POST", "/_control/reset", ""); code != 200 || len(td.Requests()) != 0 {
		t.Errorf("reset: %d", code)
	}

	// Not from loopback: refused.
	req := httptest.NewRequest("GET", "/_control/requests", nil)
	req.RemoteAddr = "192.0.2.7:40000"
	rec := httptest.NewRecorder()
	td.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Errorf("control API from 192.0.2.7: %d", rec.Code)
	}
	req = httptest.NewRequest("GET", "/_control/requests", nil)
	req.RemoteAddr = "[::1]:40000"
	rec = httptest.NewRecorder()
	td.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("control API from ::1: %d", rec.Code)
	}
}

func TestHTMLPages(t *testing.T) {
	td := startDesk(t, "", nil)
	f := goodForm(`<script>alert("key")</script>`)
	f.Set("description", `Lamp <b>dark</b> & "quoted"`)
	code, body := td.post("/requests.json", f)
	if code != 200 {
		t.Fatal(code, body)
	}
	td.clock.Add(time.Minute)
	second := td.openRequest("k-second")
	td.post("/servicerequestupdates.json", url.Values{"api_key": {testKey}, "service_request_id": {second}, "update_id": {"u1"},
		"status": {"OPEN"}, "updated_datetime": {"2026-01-15T10:00:00Z"}, "description": {"anomaly cleared <i>"}})
	td.clock.Add(time.Minute)
	td.sendHook(hook{id: "m1", body: `{"type":"case.opened","data":{"key":"wh<1>","title":"Bin <fire>","status":"open","service":"bin_fire","location":{"lat":31.1,"lon":121.3}}}`})
	td.clock.Add(time.Minute)
	td.sendHook(hook{id: "m2", body: `{"type":"case.cleared","data":{"key":"wh<1>","status":"cleared","description":"fire out"}}`})

	code, page := td.get("/")
	if code != 200 {
		t.Fatal(code)
	}
	for _, s := range []string{
		`&lt;script&gt;alert(&#34;key&#34;)&lt;/script&gt;`,
		`Lamp &lt;b&gt;dark&lt;/b&gt; &amp; &#34;quoted&#34;`,
		`anomaly cleared &lt;i&gt;`,
		`Bin &lt;fire&gt;`,
		`31.230400, 121.473700`, `31.100000, 121.300000`,
		`<a href="/cases/wh:wh%3C1%3E">`, `SL-FAULT`, `bin_fire`, `cleared`,
	} {
		if !strings.Contains(page, s) {
			t.Errorf("page lacks %s", s)
		}
	}
	for _, s := range []string{"<script>", "<b>dark", "<i>", "<fire>", "http://", "https://"} {
		if strings.Contains(page, s) {
			t.Errorf("page contains unescaped or external %s", s)
		}
	}
	// Newest first: the webhook case, then the second request, then the first.
	iw, i2, i1 := strings.Index(page, "/cases/wh:"), strings.Index(page, "/cases/"+second), strings.Index(page, "/cases/1001")
	if iw < 0 || i2 < 0 || i1 < 0 || !(iw < i2 && i2 < i1) {
		t.Errorf("order on the page: webhook %d, %s %d, 1001 %d", iw, second, i2, i1)
	}
	code, one := td.get("/cases/" + second)
	if code != 200 || !strings.Contains(one, "k-second") || !strings.Contains(one, "attribute[severity]") || !strings.Contains(one, "anomaly cleared &lt;i&gt;") {
		t.Errorf("case page: %d %s", code, one)
	}
	code, one = td.get("/cases/wh:wh%3C1%3E")
	if code != 200 || !strings.Contains(one, "m1") || !strings.Contains(one, "m2") || !strings.Contains(one, "fire out") || strings.Contains(one, "<fire>") {
		t.Errorf("webhook case page: %d %s", code, one)
	}
	if code, _ := td.get("/cases/nope"); code != 404 {
		t.Errorf("unknown case: %d", code)
	}
}

// Concurrent clients: every request gets its own id, every update and
// webhook is stored once.
func TestConcurrentClients(t *testing.T) {
	td := startDesk(t, "", nil)
	const n = 16
	ids := make(chan string, n)
	errs := make(chan string, 3*n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.PostForm(td.srv.URL+"/requests.json", goodForm(fmt.Sprintf("k%d", i)))
			if err != nil {
				errs <- err.Error()
				return
			}
			code, body := readResp(t, resp)
			var out []map[string]any
			if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
				errs <- body
				return
			}
			id := out[0]["service_request_id"].(string)
			ids <- id
			for range 2 { // the same update twice, concurrently with the others
				resp, err := http.PostForm(td.srv.URL+"/servicerequestupdates.json", url.Values{"api_key": {testKey},
					"service_request_id": {id}, "update_id": {"u-" + id}, "status": {"OPEN"},
					"updated_datetime": {"2026-01-15T10:00:00Z"}, "description": {"x"}})
				if err != nil {
					errs <- err.Error()
					continue
				}
				if code, body := readResp(t, resp); code != 200 {
					errs <- body
				}
			}
			if code, body, _ := td.sendHook(hook{id: fmt.Sprintf("m%d", i%4), body: caseBody}); code != 200 {
				errs <- body
			}
		}()
	}
	wg.Wait()
	close(ids)
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	seen := map[string]bool{}
	for id := range ids {
		if seen[id] {
			t.Errorf("id %s given twice", id)
		}
		seen[id] = true
	}
	reqs := td.Requests()
	if len(reqs) != n || len(seen) != n {
		t.Fatalf("%d requests stored, %d ids answered, want %d", len(reqs), len(seen), n)
	}
	for _, r := range reqs {
		if len(r.Updates) != 1 {
			t.Errorf("request %s has %d updates, want 1", r.ID, len(r.Updates))
		}
	}
	dups := 0
	for _, w := range td.Webhooks() {
		dups += w.Duplicates
	}
	if w := td.Webhooks(); len(w) != 4 || dups != n-4 {
		t.Errorf("%d webhooks with %d duplicates, want 4 and %d", len(w), dups, n-4)
	}
}
