package control_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/firmware-sim/city"
	"github.com/citygw/citygw/firmware-sim/control"
	"github.com/citygw/citygw/firmware-sim/sim"
)

func server(t *testing.T) (*httptest.Server, *sim.Engine) {
	t.Helper()
	conf, err := city.LoadConfig("../../configs/city-small.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cat, _ := devices.LoadBuiltinCatalog()
	c, err := city.Generate(conf, cat)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := sim.New(c, sim.Options{History: time.Minute, Log: log})
	e.Start()
	srv := httptest.NewServer(control.Handler(e, log))
	t.Cleanup(srv.Close)
	return srv, e
}

func do(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(data) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s %s: %v\n%s", method, url, err, data)
		}
	}
	return resp.StatusCode, m
}

func TestFaultsAPI(t *testing.T) {
	srv, e := server(t)
	code, f := do(t, "POST", srv.URL+"/faults", `{"fault":"leakage","asset":"CAB-001","for":"10m","params":{"ma":60}}`)
	if code != http.StatusCreated || f["id"] == "" || f["fault"] != "leakage" || f["until"] == nil {
		t.Fatalf("POST: %d %v", code, f)
	}
	id := f["id"].(string)
	for _, bad := range []struct{ body, want string }{
		{`{"fault":"lamp_gone","asset":"SL-001-01"}`, "unknown fault"},
		{`{"fault":"lamp_out","asset":"GAS-001"}`, "applies to"},
		{`{"fault":"lamp_out","asset":"SL-001-01","for":"soon"}`, "for"},
		{`{"fault":"lamp_out","asset":"SL-001-01","colour":"red"}`, "unknown field"},
		{`{"fault":"slow_reply","asset":"SL-001-01","params":{"delay":"x"}}`, "duration"},
	} {
		code, m := do(t, "POST", srv.URL+"/faults", bad.body)
		if code != http.StatusBadRequest || !strings.Contains(m["error"].(string), bad.want) {
			t.Errorf("POST %s: %d %v, want 400 with %q", bad.body, code, m, bad.want)
		}
	}
	code, list := do(t, "GET", srv.URL+"/faults", "")
	if code != 200 || len(list["faults"].([]any)) != 1 || list["kinds"].(map[string]any)["bin_fire"] == nil {
		t.Errorf("GET /faults: %d %v", code, list)
	}
	if len(e.ListFaults()) != 1 {
		t.Error("fault not in the engine")
	}
	if code, _ := do(t, "DELETE", srv.URL+"/faults/"+id, ""); code != http.StatusNoContent {
		t.Errorf("DELETE: %d", code)
	}
	if code, _ := do(t, "DELETE", srv.URL+"/faults/"+id, ""); code != http.StatusNotFound {
		t.Errorf("second DELETE: %d", code)
	}
}

func TestTruthAndStatsAPI(t *testing.T) {
	srv, _ := server(t)
	code, tr := do(t, "GET", srv.URL+"/truth?asset=GAS-001", "")
	if code != 200 {
		t.Fatalf("truth: %d %v", code, tr)
	}
	a := tr["assets"].([]any)[0].(map[string]any)
	if a["asset"] != "GAS-001" || a["values"].(map[string]any)["alarm"] != "none" {
		t.Errorf("truth: %v", a)
	}
	if code, _ := do(t, "GET", srv.URL+"/truth?asset=NOPE", ""); code != 404 {
		t.Errorf("unknown asset: %d", code)
	}
	code, h := do(t, "GET", srv.URL+"/truth/history?asset=SL-001-01&window=1m", "")
	if code != 200 || len(h["samples"].([]any)) != 1 {
		t.Errorf("history: %d %v", code, h)
	}
	if code, _ := do(t, "GET", srv.URL+"/truth/history", ""); code != 400 {
		t.Errorf("history without asset: %d", code)
	}
	code, st := do(t, "GET", srv.URL+"/stats", "")
	if code != 200 || st["ticks"].(float64) != 1 || st["modbus"] == nil || st["mqtt"] == nil {
		t.Errorf("stats: %d %v", code, st)
	}
	resp, err := http.Get(srv.URL + "/city")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "id: BIN-0010") {
		t.Errorf("city: %.200s", body)
	}
}

func TestLoopbackOnly(t *testing.T) {
	_, e := server(t)
	h := control.Handler(e, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for addr, want := range map[string]int{"10.1.2.3:5555": 403, "127.0.0.1:5555": 200, "[::1]:5555": 200} {
		req := httptest.NewRequest("GET", "/healthz", nil)
		req.RemoteAddr = addr
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("from %s: %d, want %d", addr, rec.Code, want)
		}
	}
	for addr, ok := range map[string]bool{"127.0.0.1:0": true, "localhost:8090": true, "[::1]:80": true, "0.0.0.0:8090": false, ":8090": false, "192.168.1.2:80": false} {
		if err := control.CheckLoopback(addr); (err == nil) != ok {
			t.Errorf("CheckLoopback(%q) = %v", addr, err)
		}
	}
}
