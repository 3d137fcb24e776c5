package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/citygw/citygw/caseclient/casedesk"
	"github.com/citygw/citygw/gateway/testenv"
)

var secret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

// startDesk builds and starts the casedesk program and returns its base URL.
func startDesk(t *testing.T, bin, dir string, port int, extra ...string) (*testenv.Process, string) {
	t.Helper()
	args := append([]string{"-listen", fmt.Sprintf("127.0.0.1:%d", port), "-dir", dir, "-api-key", "demo-key"}, extra...)
	p := testenv.StartProcess(t, bin, args...)
	// StartProcess has started it already without the secret in the
	// environment: restart it with.
	p.Stop()
	p.Env = []string{"CASEDESK_WEBHOOK_SECRET=" + secret}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	restart(t, p, base)
	return p, base
}

// restart starts a stopped desk and waits for its new ready line.
func restart(t *testing.T, p *testenv.Process, base string) {
	t.Helper()
	ready := "casedesk ready: " + base
	n := strings.Count(p.Output(), ready)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(p.Output(), ready) <= n {
		if time.Now().After(deadline) || !p.Running() {
			t.Fatalf("casedesk did not print %q:\n%s", ready, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBinary(t *testing.T) {
	bin := testenv.BuildBinary(t, "github.com/citygw/citygw/caseclient/cmd/casedesk", t.TempDir(), true)
	dir := t.TempDir()
	port := testenv.FreePort(t)
	p, base := startDesk(t, bin, dir, port)

	form := url.Values{"api_key": {"demo-key"}, "service_code": {"GAS-LEAK"}, "lat": {"31.2304"}, "long": {"121.4737"},
		"description": {"Methane 25 %LEL at GS-3 [case cgw-ep7]"}, "attribute[case_key]": {"cgw-ep7"}, "attribute[severity]": {"critical"}}
	resp, err := http.PostForm(base+"/requests.json", form)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var out []struct {
		ID string `json:"service_request_id"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &out) != nil || len(out) != 1 || out[0].ID == "" {
		t.Fatalf("POST /requests.json: %d %s", resp.StatusCode, body)
	}
	id := out[0].ID

	// A signed webhook, with the secret from the environment.
	payload := []byte(`{"type":"case.opened","data":{"key":"cgw-ep8","title":"Bin fire B-12"}}`)
	key, _ := casedesk.ParseSecret(secret)
	ts := time.Now().Unix()
	req, _ := http.NewRequest("POST", base+"/webhook", bytes.NewReader(payload))
	req.Header.Set("webhook-id", "msg_1")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", "v1,"+casedesk.Sign(key, "msg_1", ts, payload))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("webhook: %d", resp.StatusCode)
	}

	// Restart (SIGKILL: a crash); everything is still there.
	p.Kill()
	restart(t, p, base)
	for _, check := range []struct{ path, want string }{
		{"/requests/" + id + ".json", `"case_key":["cgw-ep7"]`},
		{"/_control/webhooks", `"webhook_id": "msg_1"`},
		{"/", "Bin fire B-12"},
		{"/", "cgw-ep7"},
	} {
		resp, err := http.Get(base + check.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), check.want) {
			t.Errorf("GET %s after restart: %d, lacks %s:\n%s", check.path, resp.StatusCode, check.want, b)
		}
	}
	// A clean shutdown; secrets and keys were never logged.
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	var progOut []string // the program's own lines, not the harness's "=== started" lines with the arguments
	for _, l := range strings.Split(p.Output(), "\n") {
		if !strings.HasPrefix(l, "=== ") {
			progOut = append(progOut, l)
		}
	}
	out2 := strings.Join(progOut, "\n")
	for _, s := range []string{secret, secret[len("whsec_"):], "demo-key"} {
		if strings.Contains(out2, s) {
			t.Errorf("output contains a secret (%s…)", s[:8])
		}
	}
	if !regexp.MustCompile(`msg="service request received".*service_request_id=` + id).MatchString(out2) {
		t.Errorf("no log line for the request:\n%s", out2)
	}
}

func TestFlags(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "keys")
	os.WriteFile(keyFile, []byte("# keys\nk1\n\nk2\n"), 0o600)
	badServices := filepath.Join(dir, "services.yaml")
	os.WriteFile(badServices, []byte("- service_code: A\n  type: sometimes\n"), 0o600)
	tests := []struct {
		name string
		args []string
		code int
		out  string // in stdout or stderr
	}{
		{"help", []string{"-help"}, exitOK, "-webhook-secret"},
		{"version", []string{"version"}, exitOK, "casedesk"},
		{"no dir", []string{"-api-key", "k"}, exitUsage, "-dir is required"},
		{"no key", []string{"-dir", dir}, exitUsage, "-api-key"},
		{"missing key file", []string{"-dir", dir, "-api-key-file", filepath.Join(dir, "nope")}, exitUsage, "-api-key-file"},
		{"bad secret", []string{"-dir", dir, "-api-key", "k", "-webhook-secret", "hunter2"}, exitUsage, "whsec_"},
		{"bad services", []string{"-dir", dir, "-api-key-file", keyFile, "-services", badServices}, exitUsage, "services.yaml:1"},
		{"services and citycodes", []string{"-dir", dir, "-api-key", "k", "-services", badServices, "-citycodes", "../../../configs/citycodes.yaml"}, exitUsage, "exclude"},
		{"bad citycodes", []string{"-dir", dir, "-api-key", "k", "-citycodes", badServices}, exitUsage, "-citycodes"},
		{"unknown flag", []string{"-colour"}, exitUsage, "flag provided but not defined"},
		{"stray argument", []string{"-dir", dir, "-api-key", "k", "serve"}, exitUsage, "unexpected argument"},
		{"bad listen", []string{"-dir", dir, "-api-key", "k", "-listen", "256.0.0.1:1"}, exitRuntime, "listening"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			all := stdout.String() + stderr.String()
			if code != tt.code || !strings.Contains(all, tt.out) {
				t.Fatalf("exit %d, want %d; output lacks %q:\n%s", code, tt.code, tt.out, all)
			}
			if strings.Contains(all, "hunter2") {
				t.Error("the bad secret was printed")
			}
		})
	}
}

func TestServicesFromCodeTable(t *testing.T) {
	const table = "../../../configs/citycodes.yaml"
	if _, err := os.Stat(table); err != nil {
		t.Skip(err)
	}
	list, err := servicesFromCodeTable(table, "")
	if err != nil {
		t.Fatal(err)
	}
	byCode := map[string]casedesk.Service{}
	for _, s := range list {
		byCode[s.Code] = s
	}
	leak, ok := byCode["GAS-LEAK"]
	if !ok || !strings.Contains(leak.Name, "燃气泄漏") || leak.Agency == "" || leak.Type != casedesk.TypeRealtime || len(leak.Attributes) == 0 {
		t.Fatalf("GAS-LEAK from the table: %+v", leak)
	}
	// The desk accepts the list, and the built-in list has every code too.
	if _, err := casedesk.New(casedesk.Config{Dir: t.TempDir(), APIKeys: []string{"k"}, Services: list}, nil); err != nil {
		t.Fatal(err)
	}
	builtin := map[string]bool{}
	for _, s := range casedesk.DefaultServices() {
		builtin[s.Code] = true
	}
	for code := range byCode {
		if !builtin[code] {
			t.Errorf("built-in services lack %s", code)
		}
	}
}
