package casedesk

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const testKey = "key-1"

// clock is a settable time source for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testDesk is a desk served over real loopback HTTP.
type testDesk struct {
	*Desk
	t     *testing.T
	srv   *httptest.Server
	clock *clock
	cfg   Config
}

func testServices(t *testing.T) []Service {
	t.Helper()
	list, err := LoadServices("testdata/services.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startDesk opens a desk in dir (a new temporary one when "") with the test
// services, the test key and secrets, and serves it.
func startDesk(t *testing.T, dir string, mod func(*Config)) *testDesk {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	c := newClock()
	cfg := Config{Dir: dir, APIKeys: []string{testKey, "key-2"}, WebhookSecrets: []string{testSecret1, testSecret2},
		Services: testServices(t), Now: c.Now, TokenDelay: time.Minute}
	if mod != nil {
		mod(&cfg)
	}
	d, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	td := &testDesk{Desk: d, t: t, srv: srv, clock: c, cfg: cfg}
	t.Cleanup(td.stop)
	return td
}

func (td *testDesk) stop() {
	if td.srv != nil {
		td.srv.CloseClientConnections()
		td.srv.Close()
		td.srv = nil
	}
	td.Desk.Close()
}

// post sends a form; it returns the status and body.
func (td *testDesk) post(path string, form url.Values) (int, string) {
	td.t.Helper()
	resp, err := http.PostForm(td.srv.URL+path, form)
	if err != nil {
		td.t.Fatalf("POST %s: %v", path, err)
	}
	return readResp(td.t, resp)
}

func (td *testDesk) get(path string) (int, string) {
	td.t.Helper()
	resp, err := http.Get(td.srv.URL + path)
	if err != nil {
		td.t.Fatalf("GET %s: %v", path, err)
	}
	return readResp(td.t, resp)
}

func readResp(t *testing.T, resp *http.Response) (int, string) {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading answer: %v", err)
	}
	return resp.StatusCode, string(b)
}

func decode[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	return v
}

// goodForm is a valid request for SL-FAULT.
func goodForm(key string) url.Values {
	return url.Values{"api_key": {testKey}, "service_code": {"SL-FAULT"}, "lat": {"31.2304"}, "long": {"121.4737"},
		"description": {"Lamp dark " + key}, "attribute[case_key]": {key}, "attribute[severity]": {"major"}}
}

// openRequest posts goodForm and returns the new service_request_id.
func (td *testDesk) openRequest(key string) string {
	td.t.Helper()
	code, body := td.post("/requests.json", goodForm(key))
	if code != http.StatusOK {
		td.t.Fatalf("POST /requests.json: %d %s", code, body)
	}
	out := decode[[]map[string]any](td.t, body)
	id, _ := out[0]["service_request_id"].(string)
	if id == "" {
		td.t.Fatalf("no service_request_id in %s", body)
	}
	return id
}
