package casedesk

import (
	"net/url"
	"testing"
)

// BenchmarkValidateForm measures the per-request form work: attribute
// parsing and validation against a service definition.
func BenchmarkValidateForm(b *testing.B) {
	svc := DefaultServices()[0]
	form := url.Values{"attribute[case_key]": {"cgw-ep1"}, "attribute[severity]": {"major"}, "attribute[case_type]": {"component"},
		"attribute[first_seen]": {"2026-01-15T10:00:00Z"}, "attribute[component_code]": {"3101010118000001"}, "api_key": {"k"}}
	b.ReportAllocs()
	for b.Loop() {
		vals, multi, err := parseAttributes(form)
		if err != nil {
			b.Fatal(err)
		}
		if err := validateAttributes(&svc, vals, multi); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyWebhook measures a signature check against two secrets.
func BenchmarkVerifyWebhook(b *testing.B) {
	key, _ := ParseSecret(testSecret2)
	d := &Desk{}
	for _, s := range []string{testSecret1, testSecret2} {
		k, _ := ParseSecret(s)
		d.secrets = append(d.secrets, k)
	}
	body := []byte(caseBody)
	sigs, err := ParseSignatures("v1," + Sign(key, "msg_1", 1700000000, body))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !d.verify("msg_1", "1700000000", body, sigs) {
			b.Fatal("signature not verified")
		}
	}
}
