package localproc

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// parseConf reads the TOML subset InfluxDBConfig writes into
// "section.key" -> value ("key" at the top).
func parseConf(t *testing.T, conf string) map[string]string {
	t.Helper()
	out := map[string]string{}
	section := ""
	for _, line := range strings.Split(conf, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]") + "."
		default:
			k, v, ok := strings.Cut(line, " = ")
			if !ok {
				t.Fatalf("not a key = value line: %q", line)
			}
			if _, dup := out[section+k]; dup {
				t.Fatalf("%s%s twice", section, k)
			}
			out[section+k] = v
		}
	}
	return out
}

func TestInfluxDBConfig(t *testing.T) {
	base := map[string]string{
		"reporting-disabled":         "true",
		"bind-address":               `"127.0.0.1:8088"`,
		"meta.dir":                   `"/d/meta"`,
		"data.dir":                   `"/d/data"`,
		"data.wal-dir":               `"/d/wal"`,
		"data.query-log-enabled":     "false",
		"http.bind-address":          `"127.0.0.1:8086"`,
		"http.auth-enabled":          "false",
		"http.flux-enabled":          "false",
		"monitor.store-enabled":      "false",
		"continuous_queries.enabled": "false",
		"logging.level":              `"warn"`,
	}
	for _, tc := range []struct {
		name   string
		opts   InfluxDBOptions
		want   map[string]string // over base; "" means absent
		absent []string
	}{
		{"defaults", InfluxDBOptions{Dir: "/d"}, nil, []string{"data.max-values-per-tag", "http.max-body-size"}},
		{"benchmark", InfluxDBOptions{Dir: "/d", UnlimitedTagValues: true},
			map[string]string{"data.max-values-per-tag": "0"}, []string{"http.max-body-size"}},
		{"tests", InfluxDBOptions{Dir: "/d", Flux: true, MaxBodySize: 4096},
			map[string]string{"http.flux-enabled": "true", "http.max-body-size": "4096"}, []string{"data.max-values-per-tag"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseConf(t, InfluxDBConfig(tc.opts, 8086, 8088))
			for k, v := range base {
				if w, ok := tc.want[k]; ok {
					v = w
				}
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			for _, k := range tc.absent {
				if v, ok := got[k]; ok {
					t.Errorf("%s = %q, want it absent", k, v)
				}
			}
		})
	}
}

// TestInfluxDB starts a real influxd, stops it and starts it again on the
// same port and data (an outage), and checks that a database made before
// the outage is still there.
func TestInfluxDB(t *testing.T) {
	if _, err := LookTool("influxd"); err != nil {
		t.Fatalf("%v; install it with: %s", err, InfluxDBInstall)
	}
	dir := t.TempDir()
	db, err := NewInfluxDB(InfluxDBOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	db.LogFile = filepath.Join(dir, "influxd.log")
	defer db.Stop()
	query := func(q string) string {
		t.Helper()
		resp, err := http.PostForm(db.URL()+"/query", url.Values{"q": {q}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Status + " " + string(body)
	}
	for life := 1; life <= 2; life++ {
		if err := db.Start(); err != nil {
			t.Fatal(err)
		}
		if err := db.WaitReady(60 * time.Second); err != nil {
			log, _ := os.ReadFile(db.LogFile)
			t.Fatalf("life %d: %v\n%s", life, err, log)
		}
		if life == 1 {
			query("CREATE DATABASE outage")
			db.Stop()
			continue
		}
		if got := query("SHOW DATABASES"); !strings.Contains(got, `"outage"`) {
			t.Fatalf("after the restart: %s", got)
		}
	}
}

func TestInfluxDBWaitReadyExited(t *testing.T) {
	// Something that is not influxd and exits at once: WaitReady must say
	// so rather than wait out its timeout.
	db := &InfluxDB{Process: sh("exit 1"), Port: 1}
	if err := db.Start(); err != nil {
		t.Fatal(err)
	}
	if err := db.WaitReady(2 * time.Minute); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("WaitReady: %v, want that it exited", err)
	}
}
