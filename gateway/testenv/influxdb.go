package testenv

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/gateway/influxql"
	"github.com/citygw/citygw/gateway/localproc"
)

// InfluxDBInstall is how a missing influxd is installed.
const InfluxDBInstall = localproc.InfluxDBInstall

// DefaultInfluxDB is the database StartInfluxDB creates.
const DefaultInfluxDB = "citygw"

// InfluxDB is an influxd 1.8 server started by a test: HTTP API on a free
// loopback port, data in the test's temporary directory, auth off, Flux on.
// Stop and Start keep its ports and data, for outage tests.
type InfluxDB struct {
	Proc *Process
	Dir  string // meta, data and wal live here
	Port int    // HTTP API port
	DB   string // the database created at start (DefaultInfluxDB)

	t    testing.TB
	srv  *localproc.InfluxDB
	http *http.Client
}

// StartInfluxDB starts influxd, waits until it answers /ping and creates the
// database DefaultInfluxDB. The server is stopped when the test ends.
func StartInfluxDB(t testing.TB) *InfluxDB {
	t.Helper()
	return StartInfluxDBWith(t, InfluxDBOptions{})
}

// InfluxDBOptions changes StartInfluxDBWith's server configuration.
type InfluxDBOptions struct {
	// MaxBodySize is [http] max-body-size in bytes: larger write bodies
	// (after gzip decoding) get 413. 0: influxd's default, 25000000.
	MaxBodySize int
}

// StartInfluxDBWith is StartInfluxDB with options.
func StartInfluxDBWith(t testing.TB, opts InfluxDBOptions) *InfluxDB {
	t.Helper()
	if opts.MaxBodySize <= 0 {
		opts.MaxBodySize = 25000000
	}
	RequireTool(t, "influxd", InfluxDBInstall)
	dir := t.TempDir()
	srv, err := localproc.NewInfluxDB(localproc.InfluxDBOptions{Dir: dir, Flux: true, MaxBodySize: opts.MaxBodySize})
	if err != nil {
		t.Fatal(err)
	}
	db := &InfluxDB{Proc: watch(t, srv.Process), Dir: dir, Port: srv.Port, DB: DefaultInfluxDB, t: t, srv: srv,
		http: &http.Client{Timeout: 30 * time.Second}}
	db.Start()
	db.CreateDB(db.DB)
	return db
}

// URL returns the server's base URL, http://127.0.0.1:port.
func (db *InfluxDB) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", db.Port) }

// Bucket returns the v2-compatibility bucket of the database's default
// retention policy, "db/autogen".
func (db *InfluxDB) Bucket() string { return db.DB + "/autogen" }

// Stop shuts the server down (SIGTERM), keeping its data and ports.
func (db *InfluxDB) Stop() { db.Proc.Stop() }

// Kill kills the server (SIGKILL, a crash), keeping its data and ports.
func (db *InfluxDB) Kill() { db.Proc.Kill() }

// Start (re)starts the server on its ports and data and waits until it
// answers /ping.
func (db *InfluxDB) Start() {
	db.t.Helper()
	if err := db.Proc.Start(); err != nil {
		db.t.Fatal(err)
	}
	if err := db.srv.WaitReady(30 * time.Second); err != nil {
		db.t.Fatalf("%v:\n%s", err, db.Proc.Output())
	}
}

// CreateDB creates a database (idempotent); it fails the test on error.
func (db *InfluxDB) CreateDB(name string) {
	db.t.Helper()
	if _, err := db.Query("", "CREATE DATABASE "+QuoteIdent(name)); err != nil {
		db.t.Fatalf("creating database %s: %v", name, err)
	}
}

// QuoteIdent quotes an InfluxQL identifier.
func QuoteIdent(s string) string { return influxql.QuoteIdent(s) }

// Series is one series of an InfluxQL result (influxql.Series).
type Series = influxql.Series

// Rows returns a series' rows as maps from column name to value.
func Rows(s Series) []map[string]any {
	out := make([]map[string]any, len(s.Values))
	for i, row := range s.Values {
		m := make(map[string]any, len(row))
		for j, v := range row {
			if j < len(s.Columns) {
				m[s.Columns[j]] = v
			}
		}
		out[i] = m
	}
	return out
}

// Query runs InfluxQL statements against db (may be empty for server-wide
// statements) through the 1.x /query API, with epoch=ns, and returns every
// series of every statement. A statement error is returned as an error.
func (db *InfluxDB) Query(dbName, q string) ([]Series, error) {
	return influxql.Query(db.http, db.URL(), dbName, q)
}

// Count returns how many points of measurement in dbName carry field
// (SELECT count(field)); 0 when there are none.
func (db *InfluxDB) Count(dbName, measurement, field string) (int, error) {
	n, err := influxql.Count(db.http, db.URL(), dbName, measurement, field)
	return int(n), err
}

// WaitCount waits until Count reaches at least want and returns the last
// count; it fails the test after timeout.
func (db *InfluxDB) WaitCount(dbName, measurement, field string, want int, timeout time.Duration) int {
	db.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n, err := db.Count(dbName, measurement, field)
		if err == nil && n >= want {
			return n
		}
		if time.Now().After(deadline) {
			db.t.Fatalf("%s.%s in %s: %d points after %v, want %d (last error %v)", measurement, field, dbName, n, timeout, want, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// QueryFlux runs a Flux query through the v2-compatibility /api/v2/query
// endpoint (annotated CSV) and returns the data rows as maps from column name
// to the raw CSV text. Tables of several results are concatenated; header and
// annotation rows are not returned.
func (db *InfluxDB) QueryFlux(flux string) ([]map[string]string, error) {
	body, err := json.Marshal(map[string]any{
		"query":   flux,
		"type":    "flux",
		"dialect": map[string]any{"header": true, "annotations": []string{}},
	})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, db.URL()+"/api/v2/query", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/csv")
	resp, err := db.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("flux query: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("flux query: reading answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("flux query: HTTP %d: %s", resp.StatusCode, data)
	}
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	var header []string
	var rows []map[string]string
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("flux query: parsing CSV: %w", err)
		}
		if len(rec) == 0 || len(rec) == 1 && rec[0] == "" {
			header = nil // a blank line separates tables with different columns
			continue
		}
		if header == nil || isFluxHeader(rec) {
			header = rec
			continue
		}
		if len(rec) > 0 && strings.HasPrefix(rec[0], "#") {
			continue
		}
		if len(header) > 1 && header[1] == "error" {
			return nil, fmt.Errorf("flux query: %s", strings.Join(rec, " "))
		}
		m := make(map[string]string, len(rec))
		for i, v := range rec {
			if i < len(header) && header[i] != "" {
				m[header[i]] = v
			}
		}
		rows = append(rows, m)
	}
	return rows, nil
}

// isFluxHeader reports whether a CSV record is a table's header row.
func isFluxHeader(rec []string) bool {
	return len(rec) > 2 && rec[1] == "result" && rec[2] == "table" || len(rec) > 1 && rec[0] == "" && rec[1] == "error"
}
