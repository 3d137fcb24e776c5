package statuspage

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/gateway/admin"
)

// TestMountOnAdmin mounts the page on the gateway's admin server: no route
// clashes with the admin's own, and the admin token guards the page.
func TestMountOnAdmin(t *testing.T) {
	_, inv := demo(t)
	reg := prometheus.NewRegistry()
	p, err := New(Options{Inventory: inv}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	adm := admin.New(reg, "tok", slog.New(slog.DiscardHandler))
	adm.SetStatus(func() any { return map[string]int{"assets": inv.Len()} })
	p.Mount(adm)
	srv := httptest.NewServer(adm.Handler())
	defer srv.Close()
	tests := []struct {
		path, auth string
		code       int
	}{
		{"/", "Bearer tok", 200},
		{"/", "", 401},
		{"/assets/GAS-001", "Bearer tok", 200},
		{"/api/summary", "Bearer tok", 200},
		{"/api/summary", "", 401},
		{"/status", "Bearer tok", 200},
		{"/metrics", "Bearer tok", 200},
		{"/healthz", "", 200},
		{"/nothing-here", "Bearer tok", 404},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", srv.URL+tt.path, nil)
		if tt.auth != "" {
			req.Header.Set("Authorization", tt.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("GET %s (%q) = %d, want %d", tt.path, tt.auth, resp.StatusCode, tt.code)
		}
	}
}
