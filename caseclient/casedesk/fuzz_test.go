package casedesk

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
)

// FuzzParseAttributes feeds arbitrary form bodies through the attribute
// parser and the validation against a service with every datatype.
func FuzzParseAttributes(f *testing.F) {
	for _, s := range []string{
		"attribute[case_key]=k&attribute[severity]=major",
		"attribute[hazards][]=traffic&attribute[hazards][]=dark&attribute[power_w]=1e3",
		"attribute[first_seen]=2026-01-15T18:04:05%2B08:00",
		"attribute[=x&attribute[a]]=y&attribute[a][b]=z&attribute[]=1",
		"attributes=1&attribute=2&attribute[x][]=",
		"attribute%5Bcase_key%5D=%E7%81%AF",
	} {
		f.Add(s)
	}
	svcs, err := LoadServices("testdata/services.yaml")
	if err != nil {
		f.Fatal(err)
	}
	svc := &svcs[0]
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		vals, multi, err := parseAttributes(form)
		if err != nil {
			return
		}
		n := 0
		for k, v := range form {
			if strings.HasPrefix(k, "attribute[") {
				n += len(v)
			}
		}
		got := 0
		for code, v := range vals {
			if code == "" || strings.ContainsAny(code, "[]") {
				t.Fatalf("attribute code %q", code)
			}
			got += len(v)
			if multi[code] && form["attribute["+code+"][]"] == nil {
				t.Fatalf("%s marked multi without a [] field", code)
			}
		}
		if got != n {
			t.Fatalf("%d attribute values parsed from %d", got, n)
		}
		if err := validateAttributes(svc, vals, multi); err == nil {
			if len(vals["case_key"]) == 0 {
				t.Fatal("validation passed without the required case_key")
			}
			for _, v := range vals["severity"] {
				if v != "critical" && v != "major" && v != "minor" {
					t.Fatalf("severity %q passed", v)
				}
			}
		}
	})
}

// FuzzParseSignatures checks the webhook-signature parser never panics and
// that what it returns re-encodes to a header it parses the same way.
func FuzzParseSignatures(f *testing.F) {
	for _, s := range []string{
		"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
		"v1,AAAA v1a,xyz v1,BBBB",
		"v1", "v1,", ",", "v2,abc", "v1,***", "  v1,AA==  ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		sigs, err := ParseSignatures(h)
		if err != nil {
			return
		}
		if len(sigs) == 0 {
			t.Fatal("no error and no signature")
		}
		parts := make([]string, len(sigs))
		for i, s := range sigs {
			parts[i] = "v1," + base64.StdEncoding.EncodeToString(s)
		}
		again, err := ParseSignatures(strings.Join(parts, " "))
		if err != nil || len(again) != len(sigs) {
			t.Fatalf("re-encoded %v: %v", parts, err)
		}
		for i := range sigs {
			if string(again[i]) != string(sigs[i]) {
				t.Fatalf("signature %d changed", i)
			}
		}
	})
}

// FuzzParseIdempotencyKey checks keys are printable ASCII of 1 to 255
// characters and survive quoting as a structured-field string.
func FuzzParseIdempotencyKey(f *testing.F) {
	for _, s := range []string{`"abc"`, `abc`, `"a\"b"`, `"a\\b"`, `"`, `""`, `"a"b"`, "\"caf\u00e9\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		k, err := ParseIdempotencyKey(h)
		if err != nil || k == "" {
			return
		}
		if len(k) > 255 {
			t.Fatalf("key of %d characters", len(k))
		}
		for _, c := range []byte(k) {
			if c < 0x20 || c > 0x7e {
				t.Fatalf("key %q has byte %#x", k, c)
			}
		}
		quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(k) + `"`
		if back, err := ParseIdempotencyKey(quoted); err != nil || back != k {
			t.Fatalf("%q quoted as %s parses to %q, %v", k, quoted, back, err)
		}
	})
}
