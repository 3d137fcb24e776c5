package statuspage

import (
	"html"
	"net/url"
	"testing"
)

// TestAssetRefs: every id's text and href are what html and url escaping
// give, whether the href is kept apart (ids that need escaping) or not.
func TestAssetRefs(t *testing.T) {
	ids := []string{"BIN-000001", "lamp 7", "a/b", "x&y", "<c>", "名字-1", "q?r#s", "p%q"}
	r := newAssetRefs(ids)
	for i, id := range ids {
		if got, want := r.text[i], html.EscapeString(id); got != want {
			t.Errorf("%q: text %q, want %q", id, got, want)
		}
		var o out
		r.writeHref(&o, i)
		if got, want := string(o.b), html.EscapeString("assets/"+url.PathEscape(id)); got != want {
			t.Errorf("%q: href %q, want %q", id, got, want)
		}
	}
	if _, ok := r.href[0]; ok {
		t.Errorf("a plain id keeps an href of its own")
	}
}
