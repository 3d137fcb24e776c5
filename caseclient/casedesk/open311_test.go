package casedesk

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestServicesEndpoints(t *testing.T) {
	td := startDesk(t, "", func(c *Config) { c.Jurisdiction = "huangpu" })
	tests := []struct {
		path     string
		code     int
		contains []string
	}{
		{"/services.json", 200, []string{`"service_code":"SL-FAULT"`, `"type":"batch"`, `"type":"blackbox"`, `"metadata":true`, `"keywords":"streetlight,lamp"`}},
		{"/services.json?jurisdiction_id=huangpu", 200, []string{`"SL-FAULT"`}},
		{"/services.json?jurisdiction_id=elsewhere", 404, []string{`"code":404`, "jurisdiction"}},
		{"/services/SL-FAULT.json", 200, []string{`"service_code":"SL-FAULT"`, `"code":"hazards"`, `"datatype":"multivaluelist"`, `{"key":"traffic","name":"Traffic"}`, `"required":true`}},
		{"/services/TIP-OFF.json", 200, []string{`"attributes":[]`}},
		{"/services/NOPE.json", 404, []string{`[{"code":404,"description":"unknown service_code \"NOPE\""}]`}},
		{"/services/SL-FAULT.xml", 404, []string{"JSON"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body := td.get(tt.path)
			if code != tt.code {
				t.Fatalf("status %d, want %d: %s", code, tt.code, body)
			}
			for _, s := range tt.contains {
				if !strings.Contains(body, s) {
					t.Errorf("answer lacks %s:\n%s", s, body)
				}
			}
		})
	}
}

func TestPostRequestValidation(t *testing.T) {
	td := startDesk(t, "", func(c *Config) { c.Jurisdiction = "huangpu" })
	with := func(mod func(url.Values)) url.Values {
		f := goodForm("k1")
		mod(f)
		return f
	}
	tests := []struct {
		name string
		form url.Values
		code int
		msg  string
	}{
		{"ok", goodForm("k1"), 200, `"service_request_id":"1001"`},
		{"second key", with(func(f url.Values) { f.Set("api_key", "key-2") }), 200, `"service_request_id":"1002"`},
		{"no api_key", with(func(f url.Values) { f.Del("api_key") }), 403, "api_key"},
		{"bad api_key", with(func(f url.Values) { f.Set("api_key", "key-3") }), 403, "api_key"},
		{"api_key prefix", with(func(f url.Values) { f.Set("api_key", "key-") }), 403, "api_key"},
		{"other jurisdiction", with(func(f url.Values) { f.Set("jurisdiction_id", "x") }), 404, "jurisdiction"},
		{"no service_code", with(func(f url.Values) { f.Del("service_code") }), 400, "service_code is required"},
		{"unknown service_code", with(func(f url.Values) { f.Set("service_code", "NOPE") }), 404, `unknown service_code \"NOPE\"`},
		{"no location", with(func(f url.Values) { f.Del("lat"); f.Del("long") }), 400, "location is required"},
		{"lat only", with(func(f url.Values) { f.Del("long") }), 400, "lat and long"},
		{"lat out of range", with(func(f url.Values) { f.Set("lat", "91") }), 400, "lat"},
		{"long not a number", with(func(f url.Values) { f.Set("long", "east") }), 400, "long"},
		{"address instead", with(func(f url.Values) { f.Del("lat"); f.Del("long"); f.Set("address_string", "人民大道200号") }), 200, "service_request_id"},
		{"address_id instead", with(func(f url.Values) { f.Del("lat"); f.Del("long"); f.Set("address_id", "A-17") }), 200, "service_request_id"},
		{"description 4000", with(func(f url.Values) { f.Set("description", strings.Repeat("灯", 4000)) }), 200, "service_request_id"},
		{"description 4001", with(func(f url.Values) { f.Set("description", strings.Repeat("灯", 4001)) }), 400, "4001 characters"},
		{"required attribute missing", with(func(f url.Values) { f.Del("attribute[case_key]") }), 400, "attribute[case_key] is required"},
		{"required attribute empty", with(func(f url.Values) { f.Set("attribute[case_key]", "") }), 400, "attribute[case_key] is required"},
		{"number", with(func(f url.Values) { f.Set("attribute[power_w]", "150.5") }), 200, "service_request_id"},
		{"not a number", with(func(f url.Values) { f.Set("attribute[power_w]", "lots") }), 400, "attribute[power_w]"},
		{"datetime", with(func(f url.Values) { f.Set("attribute[first_seen]", "2026-01-15T18:04:05+08:00") }), 200, "service_request_id"},
		{"datetime without zone", with(func(f url.Values) { f.Set("attribute[first_seen]", "2026-01-15T18:04:05") }), 400, "attribute[first_seen]"},
		{"single value not in list", with(func(f url.Values) { f.Set("attribute[severity]", "apocalyptic") }), 400, "attribute[severity]"},
		{"single value twice", with(func(f url.Values) { f["attribute[severity]"] = []string{"major", "minor"} }), 400, "attribute[severity] takes one value"},
		{"single value in multi form", with(func(f url.Values) { f.Del("attribute[severity]"); f.Set("attribute[severity][]", "major") }), 400, "attribute[severity] takes one value"},
		{"multi values", with(func(f url.Values) { f["attribute[hazards][]"] = []string{"traffic", "dark"} }), 200, "service_request_id"},
		{"multi value not in list", with(func(f url.Values) { f["attribute[hazards][]"] = []string{"traffic", "bears"} }), 400, "attribute[hazards]"},
		{"malformed attribute", with(func(f url.Values) { f.Set("attribute[oops", "1") }), 400, "malformed attribute"},
		{"unknown attribute kept", with(func(f url.Values) { f.Set("attribute[extra]", "x") }), 200, "service_request_id"},
		{"batch", url.Values{"api_key": {testKey}, "service_code": {"BIN-FULL"}, "lat": {"31"}, "long": {"121"}, "attribute[case_key]": {"b1"}}, 200, `[{"token":"`},
		{"blackbox", url.Values{"api_key": {testKey}, "service_code": {"TIP-OFF"}, "address_string": {"somewhere"}}, 200, `[]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := td.post("/requests.json", tt.form)
			if code != tt.code || !strings.Contains(body, tt.msg) {
				t.Fatalf("got %d %s, want %d with %q", code, body, tt.code, tt.msg)
			}
			if code != 200 {
				errs := decode[[]apiError](t, body)
				if len(errs) != 1 || errs[0].Code != code || errs[0].Description == "" {
					t.Errorf("error body %s is not [{code, description}]", body)
				}
			}
		})
	}
	t.Run("not a form", func(t *testing.T) {
		resp, err := http.Post(td.srv.URL+"/requests.json", "application/json", strings.NewReader(`{"api_key":"key-1"}`))
		if err != nil {
			t.Fatal(err)
		}
		code, body := readResp(t, resp)
		if code != 400 || !strings.Contains(body, "x-www-form-urlencoded") {
			t.Fatalf("got %d %s", code, body)
		}
	})
	// The request is stored with everything sent.
	reqs := td.Requests()
	first := reqs[0]
	if first.ID != "1001" || first.CaseKey() != "k1" || first.Status != "open" || first.ServiceCode != "SL-FAULT" ||
		first.Lat == nil || *first.Lat != 31.2304 || *first.Long != 121.4737 || first.Attributes["severity"][0] != "major" ||
		first.AgencyResponsible != "区市政照明管理所" || !first.RequestedAt.Equal(td.clock.Now()) {
		t.Errorf("stored request %+v", first)
	}
	var multi, extra bool
	for _, r := range reqs {
		if h := r.Attributes["hazards"]; len(h) == 2 && h[0] == "traffic" && h[1] == "dark" {
			multi = true
		}
		if r.Attributes["extra"] != nil {
			extra = true
		}
	}
	if !multi || !extra {
		t.Errorf("multi-value (%v) or unknown (%v) attribute not stored", multi, extra)
	}
}

func TestGetRequests(t *testing.T) {
	td := startDesk(t, "", nil)
	a := td.openRequest("a") // 10:00
	td.clock.Add(time.Hour)
	f := goodForm("b")
	f.Set("service_code", "SL-FAULT")
	b := td.openRequest("b") // 11:00
	td.clock.Add(time.Hour)
	if err := td.CloseRequest(a, "FIXED", "lamp replaced"); err != nil {
		t.Fatal(err)
	}
	td.clock.Add(100 * 24 * time.Hour) // a and b are older than 90 days now
	c := td.openRequest("c")
	tests := []struct {
		query string
		code  int
		ids   []string
	}{
		{"", 200, []string{c}},
		{"?start_date=2026-01-15T00:00:00Z", 200, []string{b, a}},
		{"?start_date=2026-01-15T10:30:00Z&end_date=2026-01-15T12:00:00Z", 200, []string{b}},
		{"?start_date=2026-01-15T18:30:00%2B08:00&end_date=2026-01-15T19:00:00%2B08:00", 200, []string{b}},
		{"?end_date=2026-01-16T00:00:00Z", 200, []string{b, a}},
		{"?start_date=2026-01-15T00:00:00Z&status=closed", 200, []string{a}},
		{"?start_date=2026-01-15T00:00:00Z&status=open", 200, []string{b}},
		{"?start_date=2026-01-15T00:00:00Z&status=open,closed", 200, []string{b, a}},
		{"?start_date=2026-01-15T00:00:00Z&service_code=BIN-FULL", 200, nil},
		{"?service_request_id=" + a + "," + c, 200, []string{c, a}},
		{"?service_request_id=" + a + "&status=open", 200, []string{a}}, // ids override the other filters
		{"?status=pending", 400, nil},
		{"?start_date=yesterday", 400, nil},
		{"?end_date=2026-01-15", 400, nil},
		{"?start_date=2026-01-16T00:00:00Z&end_date=2026-01-15T00:00:00Z", 400, nil},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			code, body := td.get("/requests.json" + tt.query)
			if code != tt.code {
				t.Fatalf("status %d, want %d: %s", code, tt.code, body)
			}
			if code != 200 {
				return
			}
			got := decode[[]apiRequest](t, body)
			var ids []string
			for _, r := range got {
				ids = append(ids, r.ID)
			}
			if strings.Join(ids, ",") != strings.Join(tt.ids, ",") {
				t.Fatalf("ids %v, want %v", ids, tt.ids)
			}
		})
	}
	code, body := td.get("/requests/" + a + ".json")
	if code != 200 {
		t.Fatalf("GET /requests/%s.json: %d %s", a, code, body)
	}
	got := decode[[]apiRequest](t, body)
	r := got[0]
	if r.Status != "closed" || r.StatusNotes == nil || *r.StatusNotes != "lamp replaced" || r.ServiceCode != "SL-FAULT" ||
		r.RequestedDatetime != "2026-01-15T10:00:00Z" || r.UpdatedDatetime != "2026-01-15T12:00:00Z" || *r.Lat != 31.2304 ||
		r.Attributes["case_key"][0] != "a" || !strings.Contains(r.Description, "Lamp dark a") {
		t.Errorf("GET /requests/%s.json: %s", a, body)
	}
	for _, s := range []string{`"service_request_id":"1001"`, `"expected_datetime":null`, `"lat":31.2304`} {
		if !strings.Contains(body, s) {
			t.Errorf("answer lacks %s: %s", s, body)
		}
	}
	if code, body := td.get("/requests/9999.json"); code != 404 || !strings.Contains(body, `"code":404`) {
		t.Errorf("unknown id: %d %s", code, body)
	}
}

func TestGetRequestsLimit(t *testing.T) {
	td := startDesk(t, "", nil)
	td.openRequest("first")
	// The rest in memory only: a thousand fsyncs would only slow the test.
	td.mu.Lock()
	tmpl := *td.requests["1001"]
	for i := range maxResults + 4 {
		r := tmpl
		r.ID = strconv.Itoa(2000 + i)
		td.requests[r.ID] = &r
	}
	td.mu.Unlock()
	code, body := td.get("/requests.json")
	if code != 200 {
		t.Fatal(code, body)
	}
	if n := len(decode[[]apiRequest](t, body)); n != maxResults {
		t.Fatalf("%d requests answered, want the limit %d", n, maxResults)
	}
}

func TestTokens(t *testing.T) {
	td := startDesk(t, "", nil)
	code, body := td.post("/requests.json", url.Values{"api_key": {testKey}, "service_code": {"BIN-FULL"},
		"lat": {"31"}, "long": {"121"}, "attribute[case_key]": {"b1"}})
	if code != 200 {
		t.Fatal(code, body)
	}
	tok := decode[[]map[string]string](t, body)[0]["token"]
	if tok == "" {
		t.Fatalf("no token in %s", body)
	}
	code, body = td.get("/tokens/" + tok + ".json")
	if code != 200 || body != `[{"service_request_id":null,"token":"`+tok+`"}]`+"\n" {
		t.Fatalf("pending token: %d %s", code, body)
	}
	if code, _ := td.get("/requests/1001.json"); code != 404 {
		t.Errorf("request visible by id before its token resolved: %d", code)
	}
	if code, body := td.get("/requests.json"); code != 200 || body != "[]\n" {
		t.Errorf("request listed before its token resolved: %d %s", code, body)
	}
	td.clock.Add(time.Minute) // TokenDelay
	code, body = td.get("/tokens/" + tok + ".json")
	if code != 200 || body != `[{"service_request_id":"1001","token":"`+tok+`"}]`+"\n" {
		t.Fatalf("resolved token: %d %s", code, body)
	}
	if code, _ := td.get("/requests/1001.json"); code != 200 {
		t.Errorf("request not visible after its token resolved: %d", code)
	}
	if code, body := td.get("/tokens/nope.json"); code != 404 || !strings.Contains(body, "unknown token") {
		t.Errorf("unknown token: %d %s", code, body)
	}
}

func TestUpdates(t *testing.T) {
	td := startDesk(t, "", nil)
	id := td.openRequest("k1")
	upd := func(mod func(url.Values)) url.Values {
		f := url.Values{"api_key": {testKey}, "service_request_id": {id}, "update_id": {"u1"}, "status": {"OPEN"},
			"updated_datetime": {"2026-01-15T18:30:00+08:00"}, "description": {"anomaly cleared, awaiting verification"}}
		if mod != nil {
			mod(f)
		}
		return f
	}
	tests := []struct {
		name string
		form url.Values
		code int
		msg  string
	}{
		{"ok", upd(nil), 200, `[{"update_id":"u1"}]`},
		{"same update_id again", upd(func(f url.Values) { f.Set("description", "retry") }), 200, `[{"update_id":"u1"}]`},
		{"second", upd(func(f url.Values) {
			f.Set("update_id", "u2")
			f.Set("status", "IN_PROGRESS")
			f.Set("media_url", "http://x/y.jpg")
		}), 200, `[{"update_id":"u2"}]`},
		{"no api_key", upd(func(f url.Values) { f.Del("api_key") }), 403, "api_key"},
		{"bad api_key", upd(func(f url.Values) { f.Set("api_key", "nope") }), 403, "api_key"},
		{"unknown request", upd(func(f url.Values) { f.Set("service_request_id", "4242"); f.Set("update_id", "u9") }), 404, "4242"},
		{"no service_request_id", upd(func(f url.Values) { f.Del("service_request_id") }), 400, "service_request_id is required"},
		{"no update_id", upd(func(f url.Values) { f.Del("update_id") }), 400, "update_id is required"},
		{"no status", upd(func(f url.Values) { f.Del("status") }), 400, "status is required"},
		{"lower-case status", upd(func(f url.Values) { f.Set("update_id", "u3"); f.Set("status", "open") }), 400, "status"},
		{"unknown status", upd(func(f url.Values) { f.Set("update_id", "u3"); f.Set("status", "DONE") }), 400, "status"},
		{"no updated_datetime", upd(func(f url.Values) { f.Del("updated_datetime") }), 400, "updated_datetime is required"},
		{"bad updated_datetime", upd(func(f url.Values) { f.Set("update_id", "u3"); f.Set("updated_datetime", "18:30") }), 400, "updated_datetime"},
		{"no description", upd(func(f url.Values) { f.Del("description") }), 400, "description is required"},
		{"long description", upd(func(f url.Values) { f.Set("update_id", "u3"); f.Set("description", strings.Repeat("x", 4001)) }), 400, "4001"},
		{"reserved id", upd(func(f url.Values) { f.Set("update_id", "desk-1") }), 400, "reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := td.post("/servicerequestupdates.json", tt.form)
			if code != tt.code || !strings.Contains(body, tt.msg) {
				t.Fatalf("got %d %s, want %d with %q", code, body, tt.code, tt.msg)
			}
		})
	}
	// update_id reused for another request
	other := td.openRequest("k2")
	code, body := td.post("/servicerequestupdates.json", upd(func(f url.Values) { f.Set("service_request_id", other) }))
	if code != 400 || !strings.Contains(body, "already used") {
		t.Errorf("update_id reused on another request: %d %s", code, body)
	}
	r, _ := td.Request(id)
	if len(r.Updates) != 2 || r.Updates[0].ID != "u1" || r.Updates[0].Description != "anomaly cleared, awaiting verification" ||
		r.Updates[1].MediaURL != "http://x/y.jpg" || r.Status != "open" {
		t.Fatalf("stored updates %+v, status %s", r.Updates, r.Status)
	}

	// The desk closes the request; a later update is recorded but does not reopen it.
	td.clock.Add(time.Hour)
	if err := td.CloseRequest(id, "", "verified: lamp on"); err != nil {
		t.Fatal(err)
	}
	if err := td.CloseRequest(id, "", "again"); err == nil {
		t.Error("closing a closed request succeeded")
	}
	if err := td.CloseRequest(id, "OPEN", "x"); err == nil {
		t.Error("closing with OPEN succeeded")
	}
	code, body = td.post("/servicerequestupdates.json", upd(func(f url.Values) { f.Set("update_id", "u4") }))
	if code != 200 {
		t.Fatalf("update on a closed request: %d %s", code, body)
	}
	r, _ = td.Request(id)
	if r.Status != "closed" || len(r.Updates) != 4 || r.Updates[2].Source != "desk" || r.Updates[2].Status != "CLOSED" {
		t.Fatalf("after close and update: status %s, updates %+v", r.Status, r.Updates)
	}
	// REOPEN reopens; a closing status from the client closes.
	td.post("/servicerequestupdates.json", upd(func(f url.Values) { f.Set("update_id", "u5"); f.Set("status", "REOPEN") }))
	if r, _ = td.Request(id); r.Status != "open" {
		t.Fatalf("REOPEN left status %s", r.Status)
	}
	td.post("/servicerequestupdates.json", upd(func(f url.Values) { f.Set("update_id", "u6"); f.Set("status", "FIXED") }))
	if r, _ = td.Request(id); r.Status != "closed" {
		t.Fatalf("FIXED left status %s", r.Status)
	}

	code, body = td.get("/servicerequestupdates.json?start_date=2026-01-15T00:00:00Z")
	if code != 200 {
		t.Fatal(code, body)
	}
	list := decode[[]apiUpdate](t, body)
	var got []string
	for _, u := range list {
		got = append(got, u.UpdateID+":"+u.Status+":"+u.Source)
	}
	// Oldest first; u1…u6 share an updated_datetime (ties by id), the desk's close is an hour later.
	if want := "u1:open:client,u2:in_progress:client,u4:open:client,u5:reopen:client,u6:fixed:client,desk-1:closed:desk"; strings.Join(got, ",") != want {
		t.Errorf("GET updates: %v, want %s", got, want)
	}
	for _, u := range list {
		if u.ServiceRequestID != id || u.UpdatedDatetime == "" {
			t.Errorf("update %+v", u)
		}
	}
	code, body = td.get("/servicerequestupdates.json?start_date=2026-01-15T10:45:00Z&end_date=2026-01-15T11:30:00Z")
	if code != 200 || !strings.Contains(body, `"update_id":"desk-1"`) || strings.Contains(body, `"u1"`) {
		t.Errorf("date-filtered updates: %d %s", code, body)
	}
	if code, _ := td.get("/servicerequestupdates.json?start_date=soon"); code != 400 {
		t.Errorf("bad start_date: %d", code)
	}
}
