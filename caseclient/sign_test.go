package caseclient

import "testing"

// The Standard Webhooks reference vector (the spec's libraries' "sign
// function works" test).
func TestSignStandardWebhooksVector(t *testing.T) {
	key, err := decodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	if Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, []byte(`{"test": 2432232314}`)) == got {
		t.Fatal("the timestamp must be signed")
	}
}

func TestDecodeSecret(t *testing.T) {
	cases := []struct {
		in string
		ok bool
	}{
		{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", true},
		{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", false},           // no prefix
		{"whsec_!!!", false},                                  // not base64
		{"whsec_c2hvcnQ=", false},                             // 5 bytes
		{"whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", true}, // 24 bytes
		{"whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=", false},     // 23 bytes
	}
	for _, c := range cases {
		if _, err := decodeSecret(c.in); (err == nil) != c.ok {
			t.Errorf("decodeSecret(%q) err = %v, want ok=%v", c.in, err, c.ok)
		}
	}
}
