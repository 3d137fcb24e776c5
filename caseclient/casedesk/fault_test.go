package casedesk

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestFaults(t *testing.T) {
	tests := []struct {
		name       string
		fault      Fault
		code       int    // of the failing call; 0: no answer at all
		retryAfter string // expected Retry-After ("date" for an HTTP-date)
		stored     bool   // the failing call's request was stored anyway
	}{
		{"500", Fault{Mode: Fault500, Count: 2}, 500, "", false},
		{"500 after handling", Fault{Mode: Fault500, Count: 2, AfterHandling: true}, 500, "", true},
		{"429", Fault{Mode: Fault429, Count: 2, RetryAfter: 1500 * time.Millisecond}, 429, "2", false},
		{"429 date", Fault{Mode: Fault429, Count: 2, RetryAfter: 30 * time.Second, RetryAfterDate: true}, 429, "date", false},
		{"503", Fault{Mode: Fault503, Count: 2, RetryAfter: 5 * time.Second}, 503, "5", false},
		{"503 without Retry-After", Fault{Mode: Fault503, Count: 2}, 503, "", false},
		{"410", Fault{Mode: "410", Count: 2}, 410, "", false},
		{"502 with Retry-After", Fault{Mode: "502", Count: 2, RetryAfter: time.Second}, 502, "1", false},
		{"drop", Fault{Mode: FaultDrop, Count: 2}, 0, "", false},
		{"drop after handling", Fault{Mode: FaultDrop, Count: 2, AfterHandling: true}, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := startDesk(t, "", nil)
			td.SetFault(tt.fault)
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			for i := range 2 {
				resp, err := client.PostForm(td.srv.URL+"/requests.json", goodForm("k"))
				if tt.code == 0 {
					if err == nil {
						resp.Body.Close()
						t.Fatalf("call %d: answered %d, want a dropped connection", i, resp.StatusCode)
					}
					continue
				}
				if err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
				code, body := readResp(t, resp)
				if code != tt.code {
					t.Fatalf("call %d: %d %s, want %d", i, code, body, tt.code)
				}
				errs := decode[[]apiError](t, body)
				if len(errs) != 1 || errs[0].Code != tt.code {
					t.Errorf("fault body %s", body)
				}
				ra := resp.Header.Get("Retry-After")
				switch tt.retryAfter {
				case "date":
					at, err := http.ParseTime(ra)
					if err != nil || !at.Equal(td.clock.Now().Add(30*time.Second)) {
						t.Errorf("Retry-After %q, want the HTTP-date 30 s ahead", ra)
					}
				default:
					if ra != tt.retryAfter {
						t.Errorf("Retry-After %q, want %q", ra, tt.retryAfter)
					}
				}
			}
			if n := len(td.Requests()); (n == 2) != tt.stored || n != 0 && n != 2 {
				t.Fatalf("%d requests stored by the failing calls, want stored=%v", n, tt.stored)
			}
			// Count 2: the third call goes through, and the fault is cleared.
			id := td.openRequest("k3")
			if f, n := td.CurrentFault(); f.Mode != FaultNone || n != 2 {
				t.Errorf("after the count: fault %+v, %d failed", f, n)
			}
			if _, ok := td.Request(id); !ok {
				t.Error("request after the fault not stored")
			}
		})
	}
}

func TestFaultSlowPastClientTimeout(t *testing.T) {
	td := startDesk(t, "", nil)
	td.SetFault(Fault{Mode: FaultSlow, Delay: 3 * time.Second, Paths: []string{PathRequests}, Methods: []string{"POST"}})
	client := &http.Client{Timeout: 300 * time.Millisecond}
	_, err := client.PostForm(td.srv.URL+"/requests.json", goodForm("slow-1"))
	var ue *url.Error
	if err == nil || !errors.As(err, &ue) || !ue.Timeout() {
		t.Fatalf("want a client timeout, got %v", err)
	}
	// The desk handled it: the client must reconcile before posting again.
	reqs := td.Requests()
	if len(reqs) != 1 || reqs[0].CaseKey() != "slow-1" {
		t.Fatalf("requests after the timed-out call: %+v", reqs)
	}
	// GETs are not slowed (Methods: POST), so the reconcile answers at once.
	code, body := td.get("/requests.json?service_code=SL-FAULT")
	if code != 200 || !strings.Contains(body, `"case_key":["slow-1"]`) {
		t.Fatalf("reconcile: %d %s", code, body)
	}
	// The fault holds until cleared: a patient client gets the real answer late.
	patient := &http.Client{Timeout: 10 * time.Second}
	t0 := time.Now()
	resp, err := patient.PostForm(td.srv.URL+"/requests.json", goodForm("slow-2"))
	if err != nil {
		t.Fatal(err)
	}
	if code, body := readResp(t, resp); code != 200 || !strings.Contains(body, "service_request_id") {
		t.Fatalf("slow answer: %d %s", code, body)
	}
	if time.Since(t0) < 3*time.Second {
		t.Errorf("slow answer came after %v, before the 3 s delay", time.Since(t0))
	}
	td.SetFault(Fault{Mode: FaultNone})
	td.openRequest("fast")
}

func TestFaultPathsAndPages(t *testing.T) {
	td := startDesk(t, "", nil)
	id := td.openRequest("k1")
	td.SetFault(Fault{Mode: Fault500, Paths: []string{PathUpdates, PathWebhook}})
	if code, _ := td.get("/requests.json"); code != 200 {
		t.Errorf("requests failed under an updates fault: %d", code)
	}
	if code, _ := td.get("/services.json"); code != 200 {
		t.Errorf("services failed under an updates fault: %d", code)
	}
	code, _ := td.post("/servicerequestupdates.json", url.Values{"api_key": {testKey}, "service_request_id": {id}, "update_id": {"u1"},
		"status": {"OPEN"}, "updated_datetime": {"2026-01-15T10:00:00Z"}, "description": {"x"}})
	if code != 500 {
		t.Errorf("update under an updates fault: %d", code)
	}
	if code, _, _ := td.sendHook(hook{id: "m1", body: caseBody}); code != 500 {
		t.Errorf("webhook under a webhook fault: %d", code)
	}
	if code, _ := td.get("/"); code != 200 {
		t.Errorf("HTML page failed under a fault: %d", code)
	}
	if code, _ := td.get("/_control/requests"); code != 200 {
		t.Errorf("control API failed under a fault: %d", code)
	}
	// Unlimited until cleared.
	_, n := td.CurrentFault()
	if n != 2 {
		t.Errorf("%d calls failed, want 2", n)
	}
	td.SetFault(Fault{})
	if code, _, _ := td.sendHook(hook{id: "m1", body: caseBody}); code != 200 {
		t.Errorf("webhook after clearing: %d", code)
	}
}

func TestFaultJSON(t *testing.T) {
	tests := []struct {
		in   string
		want Fault
		err  bool
	}{
		{`{"mode":"429","retry_after":"5s","count":3,"paths":["requests"]}`, Fault{Mode: "429", RetryAfter: 5 * time.Second, Count: 3, Paths: []string{"requests"}}, false},
		{`{"mode":"429","retry_after":7}`, Fault{Mode: "429", RetryAfter: 7 * time.Second}, false},
		{`{"mode":"slow","delay":"1.5s","methods":["POST"]}`, Fault{Mode: "slow", Delay: 1500 * time.Millisecond, Methods: []string{"POST"}}, false},
		{`{"mode":"slow","delay":"0.25"}`, Fault{Mode: "slow", Delay: 250 * time.Millisecond}, false},
		{`{"mode":"drop","after_handling":true}`, Fault{Mode: "drop", AfterHandling: true}, false},
		{`{"mode":"slow","delay":"soon"}`, Fault{}, true},
		{`{"mode":"slow","delay":-1}`, Fault{}, true},
	}
	for _, tt := range tests {
		var f Fault
		err := json.Unmarshal([]byte(tt.in), &f)
		if (err != nil) != tt.err {
			t.Errorf("%s: error %v", tt.in, err)
			continue
		}
		if err != nil {
			continue
		}
		a, _ := json.Marshal(f)
		b, _ := json.Marshal(tt.want)
		if string(a) != string(b) {
			t.Errorf("%s: got %s, want %s", tt.in, a, b)
		}
		var back Fault
		if err := json.Unmarshal(a, &back); err != nil {
			t.Errorf("%s: round trip: %v", a, err)
		}
	}
	for _, f := range []Fault{{Mode: "200"}, {Mode: "600"}, {Mode: "+500"}, {Mode: "teapot"}, {Mode: "slow"}, {Mode: "500", Count: -1}, {Mode: "500", Paths: []string{"html"}}} {
		if f.Check() == nil {
			t.Errorf("%+v passed Check", f)
		}
	}
}
