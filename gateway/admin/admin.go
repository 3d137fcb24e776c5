// Package admin serves the gateway's admin HTTP endpoints: Prometheus
// metrics, liveness and readiness probes, a JSON status document and Go's
// profiler (/debug/pprof/). It
// binds to loopback unless configured otherwise, and can require a bearer
// token on everything but the probes.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness condition: nil means ready.
type Check func() error

// Server is the admin HTTP server. Its token and readiness checks may be
// replaced while it serves (a configuration reload).
type Server struct {
	mux    *http.ServeMux
	token  atomic.Pointer[string]
	mu     sync.RWMutex
	checks map[string]Check
	status func() any
	log    *slog.Logger
}

// New returns a server exposing gatherer's metrics. token may be empty.
func New(gatherer prometheus.Gatherer, token string, log *slog.Logger) *Server {
	s := &Server{mux: http.NewServeMux(), checks: map[string]Check{}, log: log}
	s.SetToken(token)
	s.mux.Handle("GET /metrics", s.auth(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)})))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.Handle("GET /status", s.auth(http.HandlerFunc(s.statusJSON)))
	// Go's profiler, as Prometheus serves it, behind the token when one is
	// set: `go tool pprof http://127.0.0.1:9273/debug/pprof/heap`.
	s.mux.Handle("GET /debug/pprof/", s.auth(http.HandlerFunc(pprof.Index)))
	s.mux.Handle("GET /debug/pprof/cmdline", s.auth(http.HandlerFunc(pprof.Cmdline)))
	s.mux.Handle("GET /debug/pprof/profile", s.auth(http.HandlerFunc(pprof.Profile)))
	s.mux.Handle("GET /debug/pprof/symbol", s.auth(http.HandlerFunc(pprof.Symbol)))
	s.mux.Handle("GET /debug/pprof/trace", s.auth(http.HandlerFunc(pprof.Trace)))
	return s
}

// AddCheck registers a named readiness check.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	s.checks[name] = c
	s.mu.Unlock()
}

// SetChecks replaces every readiness check (the gateway's components were
// rebuilt after a reload).
func (s *Server) SetChecks(checks map[string]Check) {
	m := make(map[string]Check, len(checks))
	for n, c := range checks {
		m[n] = c
	}
	s.mu.Lock()
	s.checks = m
	s.mu.Unlock()
}

// SetToken replaces the bearer token; the next request is checked against
// it. An empty token opens every endpoint but the lifecycle ones.
func (s *Server) SetToken(token string) { s.token.Store(&token) }

func (s *Server) currentToken() string { return *s.token.Load() }

// SetStatus sets the function producing the /status document.
func (s *Server) SetStatus(f func() any) { s.status = f }

// Handle adds a handler (token-protected) to the server's mux.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, s.auth(h)) }

// HandleLifecycle adds a handler that changes the gateway (reload): it
// always requires the bearer token, and is refused with 403 while no token is
// configured, so that nothing on the machine can reconfigure the gateway
// unless the operator chose a secret for it.
func (s *Server) HandleLifecycle(pattern string, h http.Handler) {
	authed := s.auth(h)
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if s.currentToken() == "" {
			http.Error(w, "lifecycle endpoints are disabled: set admin.token to enable them", http.StatusForbidden)
			return
		}
		authed.ServeHTTP(w, r)
	})
}

// Handler returns the server's handler, for tests.
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) auth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := s.currentToken()
		if token == "" {
			h.ServeHTTP(w, r)
			return
		}
		want := []byte("Bearer " + token)
		// A browser cannot send a bearer token for a page and its event
		// stream, so HTTP basic auth with the token as the password (any
		// user name) is accepted too: the browser asks once.
		_, pw, basic := r.BasicAuth()
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 &&
			!(basic && subtle.ConstantTimeCompare([]byte(pw), []byte(token)) == 1) {
			w.Header().Add("WWW-Authenticate", `Bearer realm="citygw"`)
			w.Header().Add("WWW-Authenticate", `Basic realm="citygw gateway (password: the admin token)"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	s.mu.RLock()
	checks := s.checks
	s.mu.RUnlock()
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	ready := true
	for _, n := range names {
		if err := checks[n](); err != nil {
			ready = false
			fmt.Fprintf(&b, "%s: not ready: %v\n", n, err)
		} else {
			fmt.Fprintf(&b, "%s: ok\n", n)
		}
	}
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	w.Write([]byte(b.String()))
}

func (s *Server) statusJSON(w http.ResponseWriter, _ *http.Request) {
	var doc any = struct{}{}
	if s.status != nil {
		doc = s.status()
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		s.log.Warn("encoding status", "err", err)
	}
}

// Serve listens on addr until ctx ends. The listening address is sent on
// ready (useful with port 0) if ready is non-nil.
func (s *Server) Serve(ctx context.Context, addr string, ready chan<- string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	if ready != nil {
		ready <- l.Addr().String()
	}
	return s.ServeListener(ctx, l)
}

// ServeListener serves on l until ctx ends, then shuts the server down
// (requests in progress get 5 s to finish) and closes l. Binding first and
// serving after lets a caller check that an address is free before it gives
// up the listener it has (a reload moving the admin listener).
func (s *Server) ServeListener(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	s.log.Info("admin listening", "addr", l.Addr().String(), "auth", s.currentToken() != "")
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close() // streams still open after the grace period
		}
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}
