package admin

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "citygw_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	ready := errors.New("broker down")
	s := New(reg, "tok", slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.AddCheck("mqtt", func() error { return ready })
	s.AddCheck("influxdb", func() error { return nil })
	s.SetStatus(func() any { return map[string]int{"assets": 7} })
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	get := func(path, auth string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		path, auth string
		code       int
		body       string
	}{
		{"/healthz", "", 200, "ok"},
		{"/readyz", "", 503, "mqtt: not ready: broker down"},
		{"/metrics", "", 401, "unauthorized"},
		{"/metrics", "Bearer wrong", 401, "unauthorized"},
		{"/metrics", "Bearer tok", 200, "citygw_test_total 3"},
		{"/status", "Bearer tok", 200, `"assets": 7`},
		{"/status", "", 401, ""},
		{"/status", "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:tok")), 200, `"assets": 7`},
		{"/status", "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:nope")), 401, ""},
		{"/debug/pprof/", "", 401, ""},
		{"/debug/pprof/", "Bearer tok", 200, "heap"},
		{"/debug/pprof/heap?debug=1", "Bearer tok", 200, "heap profile"},
	}
	for _, tt := range tests {
		code, body := get(tt.path, tt.auth)
		if code != tt.code || !strings.Contains(body, tt.body) {
			t.Errorf("GET %s (%q) = %d %q, want %d containing %q", tt.path, tt.auth, code, body, tt.code, tt.body)
		}
	}
	ready = nil
	if code, body := get("/readyz", ""); code != 200 || !strings.Contains(body, "influxdb: ok\nmqtt: ok") {
		t.Errorf("readyz when ready = %d %q", code, body)
	}
}

func TestLifecycleNeedsToken(t *testing.T) {
	called := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { called++ })
	for _, tt := range []struct {
		token, auth string
		code, calls int
	}{{"", "", 403, 0}, {"", "Bearer x", 403, 0}, {"tok", "", 401, 0}, {"tok", "Bearer tok", 200, 1}} {
		called = 0
		s := New(prometheus.NewRegistry(), tt.token, slog.New(slog.NewTextHandler(io.Discard, nil)))
		s.HandleLifecycle("POST /-/reload", h)
		req := httptest.NewRequest("POST", "/-/reload", nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != tt.code || called != tt.calls {
			t.Errorf("token %q auth %q: %d, %d calls; want %d, %d", tt.token, tt.auth, rec.Code, called, tt.code, tt.calls)
		}
	}
}

func TestReplaceTokenAndChecks(t *testing.T) {
	s := New(prometheus.NewRegistry(), "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.AddCheck("old", func() error { return errors.New("down") })
	s.HandleLifecycle("POST /-/reload", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	do := func(method, path, auth string) int {
		req := httptest.NewRequest(method, path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	steps := []struct {
		name                  string
		change                func()
		metricsNoAuth, reload int
		reloadAuth, ready     int
	}{
		{"no token", func() {}, 200, 403, 403, 503},
		{"token set", func() { s.SetToken("new") }, 401, 401, 200, 503},
		{"token rotated", func() { s.SetToken("newer") }, 401, 401, 401, 503},
		{"checks replaced", func() { s.SetChecks(map[string]Check{"fresh": func() error { return nil }}) }, 401, 401, 401, 200},
	}
	for _, st := range steps {
		st.change()
		got := []int{do("GET", "/metrics", ""), do("POST", "/-/reload", ""), do("POST", "/-/reload", "Bearer new"), do("GET", "/readyz", "")}
		want := []int{st.metricsNoAuth, st.reload, st.reloadAuth, st.ready}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: metrics/reload/reload with token/readyz = %v, want %v", st.name, got, want)
				break
			}
		}
	}
}

func TestServeListener(t *testing.T) {
	s := New(prometheus.NewRegistry(), "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, l) }()
	resp, err := http.Get("http://" + l.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz: %s", resp.Status)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeListener after cancel: %v", err)
	}
	// The address is free again once ServeListener returned.
	l2, err := net.Listen("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("the listener was not closed: %v", err)
	}
	l2.Close()
}
