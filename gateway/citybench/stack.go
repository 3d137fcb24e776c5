package citybench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"github.com/citygw/citygw/gateway/influxql"
	"github.com/citygw/citygw/gateway/localproc"
)

// Mosquitto is a broker started fresh for one system's run, configured from
// configs/bench/mosquitto.conf.
type Mosquitto struct {
	*Process
	Port int
}

// URL is the broker's client URL.
func (m *Mosquitto) URL() string { return fmt.Sprintf("tcp://127.0.0.1:%d", m.Port) }

// StartMosquitto writes the broker's configuration into dir from the
// template and starts it.
func StartMosquitto(repo, dir string) (*Mosquitto, error) {
	bin, err := localproc.RequireTool("mosquitto", localproc.MosquittoInstall)
	if err != nil {
		return nil, err
	}
	port, err := localproc.FreePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	if err := renderTemplate(filepath.Join(repo, "configs", "bench", "mosquitto.conf"), conf, map[string]any{
		"Port": port, "Root": os.Geteuid() == 0,
	}); err != nil {
		return nil, err
	}
	m := &Mosquitto{Port: port, Process: child(&Process{Name: "mosquitto", Path: bin, Args: []string{"-c", conf},
		LogFile: filepath.Join(dir, "mosquitto.log")})}
	if err := m.Start(); err != nil {
		return nil, err
	}
	if err := localproc.WaitTCP(fmt.Sprintf("127.0.0.1:%d", port), 15*time.Second); err != nil {
		m.Stop()
		return nil, fmt.Errorf("mosquitto did not start (log %s): %w", m.LogFile, err)
	}
	return m, nil
}

// WaitSubscribed waits until the broker logged that clientID subscribed to
// filter (the configuration logs subscriptions), failing early when sub
// exits.
func (m *Mosquitto) WaitSubscribed(ctx context.Context, clientID, filter string, sub *Process, timeout time.Duration) error {
	want := fmt.Sprintf(" %s 1 %s", clientID, filter)
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(m.LogFile)
		if bytes.Contains(b, []byte(want)) {
			return nil
		}
		if sub.Exited() {
			return fmt.Errorf("%s exited before subscribing (log %s)", sub.Name, sub.LogFile)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not subscribe to %s within %v (broker log %s)", clientID, filter, timeout, m.LogFile)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// InfluxDB is an influxd 1.8 started fresh for one system's run: HTTP API
// on a free loopback port, data in its directory, auth off, no limit on
// the values of a tag (126,000 assets), /debug/pprof on (the burst
// profiles influxd too), log in influxd.log.
type InfluxDB struct {
	*localproc.InfluxDB
	http *http.Client
}

// InfluxDBInstall is how a missing influxd is installed (scripts/tools.sh does it).
const InfluxDBInstall = localproc.InfluxDBInstall

// StartInfluxDB writes an influxd configuration into dir, starts it and
// waits until it answers /ping.
func StartInfluxDB(dir string) (*InfluxDB, error) {
	srv, err := localproc.NewInfluxDB(localproc.InfluxDBOptions{Dir: dir, UnlimitedTagValues: true, Pprof: true})
	if err != nil {
		return nil, err
	}
	srv.LogFile = filepath.Join(dir, "influxd.log")
	child(srv.Process)
	db := &InfluxDB{InfluxDB: srv, http: &http.Client{Timeout: 60 * time.Second}}
	if err := db.start(60 * time.Second); err != nil {
		return nil, err
	}
	return db, nil
}

// start starts influxd (at first, or again after an outage on the same
// data and port) and waits up to timeout until it answers /ping.
func (db *InfluxDB) start(timeout time.Duration) error {
	if err := db.Start(); err != nil {
		return err
	}
	if err := db.WaitReady(timeout); err != nil {
		db.Stop()
		return fmt.Errorf("%w (log %s)", err, db.LogFile)
	}
	return nil
}

// CreateDB creates a database.
func (db *InfluxDB) CreateDB(name string) error {
	_, err := db.Query("", "CREATE DATABASE "+quoteIdent(name))
	return err
}

func quoteIdent(s string) string { return influxql.QuoteIdent(s) }

// Series is one series of an InfluxQL answer.
type Series = influxql.Series

// Query runs InfluxQL against dbName through the 1.x /query API (epoch=ns,
// numbers kept as json.Number).
func (db *InfluxDB) Query(dbName, q string) ([]Series, error) {
	return influxql.Query(db.http, db.URL(), dbName, q)
}

// Count returns SELECT count(field) FROM measurement in dbName (0 when the
// measurement does not exist yet).
func (db *InfluxDB) Count(dbName, measurement, field string) (int64, error) {
	return influxql.Count(db.http, db.URL(), dbName, measurement, field)
}

// renderTemplate executes the text/template in src with data into dst.
func renderTemplate(src, dst string, data any) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("reading template: %w", err)
	}
	t, err := template.New(filepath.Base(src)).Option("missingkey=error").Parse(string(b))
	if err != nil {
		return fmt.Errorf("template %s: %w", src, err)
	}
	var out bytes.Buffer
	if err := t.Execute(&out, data); err != nil {
		return fmt.Errorf("template %s: %w", src, err)
	}
	if err := os.WriteFile(dst, out.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	return nil
}

func mkdir(dir string) error { return os.MkdirAll(dir, 0o755) }

// PointsWritten returns the points InfluxDB's HTTP API accepted so far
// (httpd pointsWrittenOK in /debug/vars, both write APIs): a cheap progress
// figure, where a count query over a million points would cost the database
// real CPU. Points written twice count twice.
func (db *InfluxDB) PointsWritten() (int64, error) {
	resp, err := db.http.Get(db.URL() + "/debug/vars")
	if err != nil {
		return 0, fmt.Errorf("influxd /debug/vars: %w", err)
	}
	defer resp.Body.Close()
	var vars map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		return 0, fmt.Errorf("influxd /debug/vars: %w", err)
	}
	var total int64
	for k, raw := range vars {
		if !strings.HasPrefix(k, "httpd") {
			continue
		}
		var s struct {
			Values struct {
				PointsWrittenOK int64 `json:"pointsWrittenOK"`
			} `json:"values"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("influxd /debug/vars %s: %w", k, err)
		}
		total += s.Values.PointsWrittenOK
	}
	return total, nil
}
