package casedesk

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Secrets of the tests: 32 and 24 key bytes.
var (
	testSecret1 = "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	testSecret2 = "whsec_" + base64.StdEncoding.EncodeToString([]byte("rotated-key-of-24-bytes!"))
)

// The Standard Webhooks specification's example: secret, id, timestamp,
// payload and the signature the reference libraries produce.
func TestSignSpecVector(t *testing.T) {
	key, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

type hook struct {
	id, body, key string
	ts            int64
	secret        string
	sig           string // overrides the computed header
}

func (td *testDesk) sendHook(h hook) (int, string, http.Header) {
	td.t.Helper()
	if h.ts == 0 {
		h.ts = td.clock.Now().Unix()
	}
	if h.secret == "" {
		h.secret = testSecret1
	}
	key, err := ParseSecret(h.secret)
	if err != nil {
		td.t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, td.srv.URL+"/webhook", strings.NewReader(h.body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", h.id)
	req.Header.Set("webhook-timestamp", fmt.Sprint(h.ts))
	sig := h.sig
	if sig == "" {
		sig = "v1," + Sign(key, h.id, h.ts, []byte(h.body))
	}
	req.Header.Set("webhook-signature", sig)
	if h.key != "" {
		req.Header.Set("Idempotency-Key", h.key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		td.t.Fatalf("POST /webhook: %v", err)
	}
	code, body := readResp(td.t, resp)
	return code, body, resp.Header
}

const caseBody = `{"type":"case.opened","timestamp":"2026-01-15T10:00:00Z","data":{"key":"cgw-ep1","title":"路灯不亮 L-1","description":"Lamp L-1 is dark","severity":"major","service":"streetlight_fault","lat":31.2304,"long":121.4737}}`

func TestWebhookSignatures(t *testing.T) {
	td := startDesk(t, "", nil)
	now := td.clock.Now().Unix()
	other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("an-unknown-key-of-32-bytes-long!"))
	key1, _ := ParseSecret(testSecret1)
	good := "v1," + Sign(key1, "m-multi", now, []byte(caseBody))
	tests := []struct {
		name string
		h    hook
		code int
		msg  string
	}{
		{"good", hook{id: "m1", body: caseBody}, 200, `"accepted"`},
		{"rotated secret", hook{id: "m2", body: caseBody, secret: testSecret2}, 200, `"accepted"`},
		{"duplicate id", hook{id: "m1", body: caseBody}, 200, `"duplicate"`},
		{"duplicate id, other secret", hook{id: "m1", body: caseBody, secret: testSecret2}, 200, `"duplicate"`},
		{"unknown secret", hook{id: "m3", body: caseBody, secret: other}, 401, "no webhook-signature matches"},
		{"body changed", hook{id: "m3", body: caseBody, sig: "v1," + Sign(key1, "m3", now, []byte(caseBody+" "))}, 401, "no webhook-signature matches"},
		{"id changed", hook{id: "m3", body: caseBody, sig: "v1," + Sign(key1, "m4", now, []byte(caseBody))}, 401, "no webhook-signature matches"},
		{"several signatures, one good", hook{id: "m-multi", body: caseBody, sig: "v1,AAAA v1a,xyz " + good}, 200, `"accepted"`},
		{"only other versions", hook{id: "m5", body: caseBody, sig: "v1a,abcd"}, 401, "no v1 signature"},
		{"not base64", hook{id: "m5", body: caseBody, sig: "v1,***"}, 401, "base64"},
		{"no comma", hook{id: "m5", body: caseBody, sig: "v1"}, 401, "version,signature"},
		{"stale", hook{id: "m6", body: caseBody, ts: now - 301}, 401, "tolerance"},
		{"future", hook{id: "m6", body: caseBody, ts: now + 301}, 401, "tolerance"},
		{"edge of window", hook{id: "m7", body: caseBody, ts: now - 300}, 200, "accepted"},
		{"timestamp not a number", hook{id: "m8", body: caseBody, sig: "v1,AAAA"}, 0, ""},
		{"not JSON", hook{id: "m9", body: "lamp out"}, 400, "not JSON"},
	}
	for _, tt := range tests {
		if tt.code == 0 {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			code, body, _ := td.sendHook(tt.h)
			if code != tt.code || !strings.Contains(body, tt.msg) {
				t.Fatalf("got %d %s, want %d with %q", code, body, tt.code, tt.msg)
			}
		})
	}
	for _, tt := range []struct {
		name string
		hdr  map[string]string
		code int
	}{
		{"no headers", map[string]string{}, 400},
		{"no signature", map[string]string{"webhook-id": "x", "webhook-timestamp": fmt.Sprint(now)}, 400},
		{"bad timestamp", map[string]string{"webhook-id": "x", "webhook-timestamp": "yesterday", "webhook-signature": "v1,AAAA"}, 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, td.srv.URL+"/webhook", strings.NewReader(caseBody))
			for k, v := range tt.hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if code, body := readResp(t, resp); code != tt.code {
				t.Fatalf("got %d %s, want %d", code, body, tt.code)
			}
		})
	}
	ws := td.Webhooks()
	var ids []string
	for _, w := range ws {
		ids = append(ids, w.ID)
	}
	if strings.Join(ids, ",") != "m1,m2,m-multi,m7" {
		t.Fatalf("stored webhooks %v", ids)
	}
	m1 := ws[0]
	if m1.Duplicates != 2 || m1.Case.Key != "cgw-ep1" || m1.Case.Title != "路灯不亮 L-1" || m1.Case.Type != "case.opened" ||
		m1.Case.Lat == nil || *m1.Case.Lat != 31.2304 || *m1.Case.Lon != 121.4737 || m1.ContentType != "application/json" ||
		!bytes.Contains(m1.Payload, []byte(`"severity":"major"`)) || m1.Timestamp.Unix() != now {
		t.Errorf("stored webhook %+v", m1)
	}
}

func TestIdempotencyKey(t *testing.T) {
	td := startDesk(t, "", nil)
	// First use stores the result; a retry (new webhook-id, same body) replays it.
	code, body, hdr := td.sendHook(hook{id: "m1", body: caseBody, key: `"op-1"`})
	if code != 200 || hdr.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %d %s", code, body)
	}
	td.clock.Add(time.Minute)
	code2, body2, hdr2 := td.sendHook(hook{id: "m1", body: caseBody, key: `"op-1"`})
	if code2 != code || body2 != body || hdr2.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s %v, want %d %s", code2, body2, hdr2, code, body)
	}
	if w := td.Webhooks(); len(w) != 1 || w[0].Duplicates != 0 || w[0].IdempotencyKey != "op-1" {
		t.Fatalf("webhooks after replay: %+v", w)
	}
	// The same key with another payload.
	code, body, _ = td.sendHook(hook{id: "m2", body: strings.Replace(caseBody, "major", "critical", 1), key: `"op-1"`})
	if code != http.StatusUnprocessableEntity {
		t.Fatalf("reused key: %d %s", code, body)
	}
	// Bare tokens are accepted too; malformed keys are refused.
	if code, body, _ := td.sendHook(hook{id: "m3", body: `{"data":{"key":"k3"}}`, key: "op-3"}); code != 200 {
		t.Fatalf("bare key: %d %s", code, body)
	}
	if code, body, _ := td.sendHook(hook{id: "m4", body: `{"data":{"key":"k4"}}`, key: `"unterminated`}); code != 400 {
		t.Fatalf("malformed key: %d %s", code, body)
	}
	// A key in flight: the first call is held back by a slow fault.
	td.SetFault(Fault{Mode: FaultSlow, Delay: 2 * time.Second, Count: 1, Paths: []string{PathWebhook}})
	var wg sync.WaitGroup
	wg.Add(1)
	var slowCode int
	go func() {
		defer wg.Done()
		slowCode, _, _ = td.sendHook(hook{id: "m5", body: `{"data":{"key":"k5"}}`, key: `"op-5"`})
	}()
	waitFor(t, func() bool { _, n := td.CurrentFault(); return n == 1 }, "the slow call to arrive")
	waitFor(t, func() bool {
		td.mu.Lock()
		defer td.mu.Unlock()
		return td.idem["op-5"] != nil
	}, "the key to be in flight")
	code, body, _ = td.sendHook(hook{id: "m5", body: `{"data":{"key":"k5"}}`, key: `"op-5"`})
	if code != http.StatusConflict {
		t.Fatalf("key in flight: %d %s", code, body)
	}
	wg.Wait()
	if slowCode != 200 {
		t.Fatalf("slow call: %d", slowCode)
	}
	if code, _, hdr := td.sendHook(hook{id: "m5", body: `{"data":{"key":"k5"}}`, key: `"op-5"`}); code != 200 || hdr.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("after the slow call: %d", code)
	}

	// Handled, but the answer was lost (500 after handling): the retry gets
	// the real result replayed, and the message is stored once.
	td.SetFault(Fault{Mode: Fault500, AfterHandling: true, Count: 1, Paths: []string{PathWebhook}})
	if code, _, _ := td.sendHook(hook{id: "m6", body: `{"data":{"key":"k6"}}`, key: "op-6"}); code != 500 {
		t.Fatalf("answer under the fault: %d", code)
	}
	code, body, hdr = td.sendHook(hook{id: "m6", body: `{"data":{"key":"k6"}}`, key: "op-6"})
	if code != 200 || hdr.Get("Idempotent-Replayed") != "true" || !strings.Contains(body, `"accepted"`) {
		t.Fatalf("retry after a lost answer: %d %s %v", code, body, hdr)
	}
	// Refused before handling (503): nothing is recorded under the key.
	td.SetFault(Fault{Mode: Fault503, Count: 1, Paths: []string{PathWebhook}})
	if code, _, _ := td.sendHook(hook{id: "m7", body: `{"data":{"key":"k7"}}`, key: "op-7"}); code != 503 {
		t.Fatalf("answer under the 503 fault: %d", code)
	}
	code, body, hdr = td.sendHook(hook{id: "m7", body: `{"data":{"key":"k7"}}`, key: "op-7"})
	if code != 200 || hdr.Get("Idempotent-Replayed") != "" || !strings.Contains(body, `"accepted"`) {
		t.Fatalf("retry after a 503: %d %s %v", code, body, hdr)
	}
	var stored []string
	for _, w := range td.Webhooks() {
		stored = append(stored, w.ID)
	}
	if strings.Join(stored, ",") != "m1,m3,m5,m6,m7" {
		t.Fatalf("stored webhooks %v", stored)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestParseIdempotencyKey(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{``, "", true},
		{`"abc"`, "abc", true},
		{`  "8e03978e-40d5-43e8-bc93-6894a57f9324" `, "8e03978e-40d5-43e8-bc93-6894a57f9324", true},
		{`"a\"b"`, `a"b`, true},
		{`"a\\b"`, `a\b`, true},
		{`abc`, "abc", true},
		{`"abc`, "", false},
		{`"a"b"`, "", false},
		{`"a\nb"`, "", false},
		{`""`, "", false},
		{`"` + strings.Repeat("x", 256) + `"`, "", false},
		{"\"caf\u00e9\"", "", false},
	}
	for _, tt := range tests {
		got, err := ParseIdempotencyKey(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseIdempotencyKey(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseSecret(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{testSecret1, true},
		{testSecret2, true},
		{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", false},
		{"whsec_!!!", false},
		{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 23)), false},
		{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65)), false},
	} {
		if _, err := ParseSecret(tt.in); (err == nil) != tt.ok {
			t.Errorf("ParseSecret(%q): %v", tt.in, err)
		}
	}
}

// The case client's event shape (caseclient.WebhookEvent): the case under
// data.case, the key and status under data, an update's text under data.text.
func TestExtractCaseClientShape(t *testing.T) {
	opened := extractCase([]byte(`{"type":"case.opened","timestamp":"2026-01-15T10:00:00Z","data":{"operation_id":"op1","case_key":"cgw-ep1","episode_id":"ep1","rule":"gas.leak","severity":"critical","case":{"key":"cgw-ep1","title":"燃气泄漏 GS-3","description":"Methane 25 %LEL","service":"gas_leak","lat":31.23,"long":121.47,"assets":["GS-3"]}}}`))
	if opened.Type != "case.opened" || opened.Key != "cgw-ep1" || opened.Title != "燃气泄漏 GS-3" || opened.Description != "Methane 25 %LEL" ||
		opened.Service != "gas_leak" || opened.Lat == nil || *opened.Lat != 31.23 || opened.Lon == nil || *opened.Lon != 121.47 {
		t.Errorf("opened: %+v", opened)
	}
	cleared := extractCase([]byte(`{"type":"case.cleared","data":{"case_key":"cgw-ep1","status":"cleared","text":"anomaly cleared, awaiting verification"}}`))
	if cleared.Key != "cgw-ep1" || cleared.Status != "cleared" || cleared.Description != "anomaly cleared, awaiting verification" || cleared.Lat != nil {
		t.Errorf("cleared: %+v", cleared)
	}
	if c := extractCase([]byte(`[1,2]`)); c != (WebhookCase{}) {
		t.Errorf("array payload: %+v", c)
	}
}
