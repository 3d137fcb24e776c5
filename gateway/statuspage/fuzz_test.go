package statuspage

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzRequests feeds outside input (the filter query and the asset id in
// the path) to the page: it must answer 200, 404 or the mux's redirect of
// an unclean path ("/assets/."), never fail, and never let the input add
// markup.
func FuzzRequests(f *testing.F) {
	fx := newFixture(f, nil)
	h := fx.page.Handler()
	for _, s := range []string{"kind=gas_station", "grid=<script>alert(1)</script>", `district="><svg onload=x>`,
		"kind=%00&grid=%ff", "partial=1&kind=waste_bin", "GAS-001", "a/../b", "x\"y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		q := url.Values{"kind": {in}, "district": {in}, "grid": {in}}
		if vs, err := url.ParseQuery(in); err == nil {
			for k, v := range vs {
				q[k] = v
			}
		}
		for _, target := range []string{"/?" + q.Encode(), "/api/summary?" + q.Encode(), "/assets/" + url.PathEscape(in)} {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", target, nil))
			if w.Code != http.StatusOK && w.Code != http.StatusNotFound && w.Code != http.StatusTemporaryRedirect && w.Code != http.StatusMovedPermanently {
				t.Fatalf("GET %s = %d", target, w.Code)
			}
			body := w.Body.String()
			if w.Code == http.StatusOK && strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
				if n := strings.Count(body, "<script"); n > 1 || strings.Contains(body, "<svg onload") {
					t.Fatalf("GET %s: input became markup (%d scripts)", target, n)
				}
			}
		}
	})
}
