package influxql

import "testing"

func TestQuoteIdent(t *testing.T) {
	for in, want := range map[string]string{
		"waste_bin":  `"waste_bin"`,
		`fill "pct"`: `"fill \"pct\""`,
		`a\b`:        `"a\\b"`,
	} {
		if got := QuoteIdent(in); got != want {
			t.Errorf("QuoteIdent(%q) = %s, want %s", in, got, want)
		}
	}
}
