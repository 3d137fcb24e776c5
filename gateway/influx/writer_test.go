package influx

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/gateway/testenv"
)

func TestRejectedPoints(t *testing.T) {
	tests := []struct {
		msg    string
		points int
		want   int
	}{
		{`partial write: field type conflict: input field "fill_pct" on measurement "waste_bin" is type integer, already exists as type float dropped=1`, 10, 1},
		{`partial write: field type conflict: dropped=3`, 2, 2},
		{"partial write: unable to parse 'garbage': missing fields\nunable to parse 'x y': invalid field format dropped=0", 5, 2},
		{"unable to parse 'garbage': missing fields", 7, 7},
		{"partial write: points beyond retention policy dropped=4", 9, 4},
		{"some other complaint", 3, 3},
	}
	for _, tt := range tests {
		if got := rejectedPoints(tt.msg, tt.points); got != tt.want {
			t.Errorf("rejectedPoints(%q, %d) = %d, want %d", tt.msg, tt.points, got, tt.want)
		}
	}
}

func TestPermanent(t *testing.T) {
	for status, want := range map[int]bool{
		0: false, 400: true, 401: false, 403: false, 404: false, 408: false, 413: true, 422: true,
		429: false, 500: false, 502: false, 503: false, 504: false,
	} {
		if got := permanent(status); got != want {
			t.Errorf("permanent(%d) = %v, want %v", status, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	w := &Writer{cfg: WriterConfig{RetryInterval: yamlconf.Duration(100 * time.Millisecond), MaxRetryInterval: yamlconf.Duration(time.Second)}}
	for attempt, full := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		full *= time.Millisecond
		for range 50 {
			d := w.backoff(attempt)
			if d < full/2 || d > full {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", attempt, d, full/2, full)
			}
		}
	}
	if d := w.backoff(1000); d > time.Second {
		t.Fatalf("backoff(1000) = %v, above the cap", d)
	}
}

func TestNewWriterChecksConfig(t *testing.T) {
	for _, cfg := range []WriterConfig{
		{Bucket: "db/rp"},
		{URL: "127.0.0.1:8086", Bucket: "db/rp"},
		{URL: "http://127.0.0.1:8086"},
	} {
		if _, err := NewWriter(cfg, prometheus.NewRegistry(), nil); err == nil {
			t.Errorf("NewWriter(%+v) accepted a bad config", cfg)
		}
	}
}

func TestAddDoesNotAllocate(t *testing.T) {
	w, err := NewWriter(WriterConfig{URL: "http://127.0.0.1:1", Bucket: "db/rp", BatchSize: 1 << 20}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, readings := testCity(t)
	line := NewEncoder("gw").Append(nil, readings[0])
	ctx := context.Background()
	if err := w.Add(ctx, line); err != nil { // the first Add makes the batch buffer
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := w.Add(ctx, line); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Add allocated %v times per call, want 0", allocs)
	}
	if got := w.Stats().Queued; got != 1002 {
		t.Errorf("queued %d, want 1002", got)
	}
}

// TestAddBlocksAtBound checks the backpressure: with MaxPendingBatches full
// batches waiting and nobody draining, Add waits until its context ends.
func TestAddBlocksAtBound(t *testing.T) {
	w, err := NewWriter(WriterConfig{URL: "http://127.0.0.1:1", Bucket: "db/rp", BatchSize: 2, MaxPendingBatches: 3}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 6 {
		if err := w.Add(ctx, []byte(fmt.Sprintf("m f=%di %d", i, i))); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := w.Add(short, []byte("m f=7i 7")); err != context.DeadlineExceeded {
		t.Fatalf("Add at the bound returned %v, want %v", err, context.DeadlineExceeded)
	}
	// Taking one batch makes room again.
	b, err := w.queue.Next(ctx, true)
	if err != nil || b == nil || b.Points != 2 || string(b.Lines) != "m f=0i 0\nm f=1i 1\n" {
		t.Fatalf("Next = %+v, %v", b, err)
	}
	if err := w.Add(ctx, []byte("m f=7i 7\n")); err != nil {
		t.Fatalf("Add after a batch was taken: %v", err)
	}
}

// startWriter runs a writer against url until the test ends.
func startWriter(t *testing.T, cfg WriterConfig) (*Writer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := NewWriter(cfg, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		w.Close()
	})
	return w, reg
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func flush(t *testing.T, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := w.Flush(ctx); err != nil {
		t.Fatalf("%v (stats %+v)", err, w.Stats())
	}
}

// TestWriterInfluxDB writes readings of all four shipped kinds to a real
// InfluxDB 1.8.10 and reads them back with InfluxQL and with Flux.
func TestWriterInfluxDB(t *testing.T) {
	db := testenv.StartInfluxDB(t)
	w, reg := startWriter(t, WriterConfig{URL: db.URL(), Bucket: db.Bucket(), BatchSize: 3, FlushInterval: yamlconf.Duration(50 * time.Millisecond)})
	inv, _ := testCity(t)
	enc := NewEncoder("gw-test")
	enc.Prepare(inv)

	// Three readings per asset, with different values each time.
	const perAsset = 3
	base := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	var sent []*devices.Reading
	var line []byte
	for n := range perAsset {
		for _, a := range inv.Assets {
			r := &devices.Reading{}
			r.Reset(a)
			r.Time = base.Add(time.Duration(n)*time.Minute + time.Duration(a.Seq)*time.Millisecond + 123456789)
			fillReading(r, n+1)
			sent = append(sent, r)
			line = enc.Append(line[:0], r)
			if err := w.Add(context.Background(), line); err != nil {
				t.Fatal(err)
			}
		}
	}
	flush(t, w)
	st := w.Stats()
	if st.Written != int64(len(sent)) || st.Rejected != 0 || st.Queued != 0 {
		t.Fatalf("stats %+v, want %d written, none rejected or queued", st, len(sent))
	}
	if got := testutil.ToFloat64(w.m.written); got != float64(len(sent)) {
		t.Errorf("citygw_influx_points_written_total = %v, want %d", got, len(sent))
	}
	if !w.Healthy() {
		t.Error("writer not healthy after successful writes")
	}
	if n, err := testutil.GatherAndCount(reg, "citygw_influx_write_duration_seconds", "citygw_influx_batch_points", "citygw_influx_up"); err != nil || n != 3 {
		t.Errorf("metrics gathered: %d, %v", n, err)
	}

	for _, kind := range inv.Kinds() {
		// Field types as InfluxDB stored them.
		series, err := db.Query(db.DB, "SHOW FIELD KEYS FROM "+testenv.QuoteIdent(kind))
		if err != nil {
			t.Fatal(err)
		}
		types := map[string]string{}
		for _, s := range series {
			for _, row := range s.Values {
				types[row[0].(string)] = row[1].(string)
			}
		}
		schema := inv.Assets[0].Schema
		for _, a := range inv.Assets {
			if a.Kind == kind {
				schema = a.Schema
			}
		}
		wantType := map[devices.Type]string{devices.Bool: "boolean", devices.Int: "integer", devices.Float: "float", devices.String: "string"}
		if len(types) != len(schema.Fields) {
			t.Errorf("%s: %d fields stored, schema has %d: %v", kind, len(types), len(schema.Fields), types)
		}
		for _, f := range schema.Fields {
			if types[f.Name] != wantType[f.Type] {
				t.Errorf("%s.%s stored as %q, want %q", kind, f.Name, types[f.Name], wantType[f.Type])
			}
		}
	}

	for _, a := range inv.Assets {
		var want []*devices.Reading
		for _, r := range sent {
			if r.Asset == a {
				want = append(want, r)
			}
		}
		checkInfluxQL(t, db, a, want)
		checkFlux(t, db, a, want)
	}
}

func wantTags(a *devices.Asset) map[string]string {
	m := map[string]string{TagAsset: a.ID, TagDistrict: a.District, TagGateway: "gw-test", TagGrid: a.Grid}
	if c := a.Attr(CircuitAttr); c != "" {
		m[TagCircuit] = c
	}
	return m
}

func checkInfluxQL(t *testing.T, db *testenv.InfluxDB, a *devices.Asset, want []*devices.Reading) {
	t.Helper()
	series, err := db.Query(db.DB, fmt.Sprintf("SELECT * FROM %s WHERE asset = '%s' ORDER BY time", testenv.QuoteIdent(a.Kind), a.ID))
	if err != nil {
		t.Fatal(err)
	}
	if len(series) != 1 {
		t.Fatalf("%s: %d series, want 1", a.ID, len(series))
	}
	rows := testenv.Rows(series[0])
	if len(rows) != len(want) {
		t.Fatalf("%s: %d rows, want %d", a.ID, len(rows), len(want))
	}
	for i, r := range want {
		row := rows[i]
		if got := row["time"].(json.Number).String(); got != strconv.FormatInt(r.Time.UnixNano(), 10) {
			t.Errorf("%s row %d: time %s, want %d", a.ID, i, got, r.Time.UnixNano())
		}
		for k, v := range wantTags(a) {
			if row[k] != v {
				t.Errorf("%s row %d: tag %s = %v, want %q", a.ID, i, k, row[k], v)
			}
		}
		if _, ok := wantTags(a)[TagCircuit]; !ok && row[TagCircuit] != nil {
			t.Errorf("%s: circuit tag %v on an asset without circuit", a.ID, row[TagCircuit])
		}
		for j, f := range a.Schema.Fields {
			v := r.Values[j]
			got := row[f.Name]
			ok := false
			switch v.Type {
			case devices.Bool:
				ok = got == (v.I != 0)
			case devices.Int:
				n, isNum := got.(json.Number)
				x, err := n.Int64()
				ok = isNum && err == nil && x == v.I
			case devices.Float:
				n, isNum := got.(json.Number)
				x, err := n.Float64()
				ok = isNum && err == nil && x == v.F
			case devices.String:
				ok = got == v.S
			}
			if !ok {
				t.Errorf("%s row %d: %s = %#v, want %v", a.ID, i, f.Name, got, v)
			}
		}
	}
}

func checkFlux(t *testing.T, db *testenv.InfluxDB, a *devices.Asset, want []*devices.Reading) {
	t.Helper()
	q := fmt.Sprintf(`from(bucket: %q)
  |> range(start: 2026-11-26T00:00:00Z, stop: 2026-11-27T00:00:00Z)
  |> filter(fn: (r) => r._measurement == %q and r.asset == %q)`, db.Bucket(), a.Kind, a.ID)
	rows, err := db.QueryFlux(q)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(want)*len(a.Schema.Fields) {
		t.Fatalf("%s: flux gave %d rows, want %d", a.ID, len(rows), len(want)*len(a.Schema.Fields))
	}
	byKey := map[string]map[string]string{}
	for _, row := range rows {
		byKey[row["_time"]+" "+row["_field"]] = row
	}
	for _, r := range want {
		for j, f := range a.Schema.Fields {
			key := r.Time.Format(time.RFC3339Nano) + " " + f.Name
			row, ok := byKey[key]
			if !ok {
				t.Errorf("%s: flux has no %s", a.ID, key)
				continue
			}
			for k, v := range wantTags(a) {
				if row[k] != v {
					t.Errorf("%s %s: flux tag %s = %q, want %q", a.ID, key, k, row[k], v)
				}
			}
			v, got := r.Values[j], row["_value"]
			ok = false
			switch v.Type {
			case devices.Bool:
				ok = got == strconv.FormatBool(v.I != 0)
			case devices.Int:
				ok = got == strconv.FormatInt(v.I, 10)
			case devices.Float:
				x, err := strconv.ParseFloat(got, 64)
				ok = err == nil && x == v.F
			case devices.String:
				ok = got == v.S
			}
			if !ok {
				t.Errorf("%s %s: flux value %q, want %v", a.ID, key, got, v)
			}
		}
	}
}

// TestWriterOutage stops InfluxDB in the middle of a stream of readings and
// starts it again: every reading must arrive, and the failures must show in
// the retry and error counters.
func TestWriterOutage(t *testing.T) {
	db := testenv.StartInfluxDB(t)
	w, _ := startWriter(t, WriterConfig{
		URL: db.URL(), Bucket: db.Bucket(), BatchSize: 10, MaxPendingBatches: 1000,
		FlushInterval: yamlconf.Duration(20 * time.Millisecond), Timeout: yamlconf.Duration(2 * time.Second),
		RetryInterval: yamlconf.Duration(50 * time.Millisecond), MaxRetryInterval: yamlconf.Duration(300 * time.Millisecond),
	})
	inv := testInventory(t)
	bin := inv.Lookup("bin-0042")
	enc := NewEncoder("gw-test")
	const total, stopAt, startAt = 600, 200, 400
	base := time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC)
	r := &devices.Reading{}
	var line []byte
	sawUnhealthy := false
	for n := range total {
		switch n {
		case stopAt:
			db.Stop()
		case startAt:
			db.Start()
		}
		r.Reset(bin)
		r.Time = base.Add(time.Duration(n) * time.Millisecond)
		fillReading(r, n)
		line = enc.Append(line[:0], r)
		if err := w.Add(context.Background(), line); err != nil {
			t.Fatal(err)
		}
		if n > stopAt && n < startAt && !w.Healthy() {
			sawUnhealthy = true
		}
		time.Sleep(2 * time.Millisecond)
	}
	flush(t, w)
	st := w.Stats()
	if st.Written != total || st.Rejected != 0 || st.Dropped != 0 || st.Queued != 0 {
		t.Errorf("stats %+v, want all %d written", st, total)
	}
	if st.Retries == 0 || st.Errors == 0 {
		t.Errorf("stats %+v: the outage caused no retries or errors", st)
	}
	if got := testutil.ToFloat64(w.m.retries); got != float64(st.Retries) {
		t.Errorf("citygw_influx_write_retries_total = %v, stats say %d", got, st.Retries)
	}
	if got := testutil.ToFloat64(w.m.errors.WithLabelValues("network")); got == 0 {
		t.Errorf(`citygw_influx_write_errors_total{code="network"} = 0 during an outage`)
	}
	if !sawUnhealthy {
		t.Error("writer never reported unhealthy while InfluxDB was down")
	}
	if !w.Healthy() {
		t.Error("writer unhealthy after InfluxDB came back")
	}
	for _, f := range bin.Schema.Fields {
		if n, err := db.Count(db.DB, "waste_bin", f.Name); err != nil || n != total {
			t.Errorf("InfluxDB holds %d values of %s (err %v), want %d", n, f.Name, err, total)
		}
	}
}

// TestWriterRejectedBatch sends a point whose field type conflicts with
// what InfluxDB already stores, and a batch that does not parse: they are
// counted as rejected (the pair is split so that only the bad point is) and
// the batches after them are written.
func TestWriterRejectedBatch(t *testing.T) {
	db := testenv.StartInfluxDB(t)
	w, _ := startWriter(t, WriterConfig{URL: db.URL(), Bucket: db.Bucket(), BatchSize: 100, FlushInterval: yamlconf.Duration(20 * time.Millisecond)})
	ctx := context.Background()
	add := func(lines ...string) {
		t.Helper()
		for _, l := range lines {
			if err := w.Add(ctx, []byte(l)); err != nil {
				t.Fatal(err)
			}
		}
		flush(t, w)
	}
	add("waste_bin,asset=bin-1 fill_pct=10.5 1000000000")
	// fill_pct is a float: the integer point is dropped, its neighbour is written.
	add("waste_bin,asset=bin-1 fill_pct=11i 2000000000", "waste_bin,asset=bin-1 fill_pct=12.5 3000000000")
	st := w.Stats()
	if st.Written != 2 || st.Rejected != 1 {
		t.Fatalf("after a type conflict: stats %+v, want 2 written, 1 rejected", st)
	}
	if !strings.Contains(st.LastError, "field type conflict") || !w.Healthy() {
		t.Errorf("a rejected point made the writer unhealthy: %+v", st)
	}
	add("this is not line protocol")
	add("waste_bin,asset=bin-1 fill_pct=13.5 4000000000")
	st = w.Stats()
	if st.Written != 3 || st.Rejected != 2 || st.Dropped != 0 || st.Queued != 0 {
		t.Fatalf("stats %+v, want 3 written, 2 rejected", st)
	}
	if got := testutil.ToFloat64(w.m.rejected); got != 2 {
		t.Errorf(`citygw_influx_points_failed_total{reason="rejected"} = %v, want 2`, got)
	}
	// The type conflict: the pair, then the bad point alone after the split;
	// the unparsable line once.
	if got := testutil.ToFloat64(w.m.errors.WithLabelValues("400")); got != 3 {
		t.Errorf(`citygw_influx_write_errors_total{code="400"} = %v, want 3`, got)
	}
	if got := testutil.ToFloat64(w.m.retries); got != 0 {
		t.Errorf("rejected batches were retried %v times", got)
	}
	if n, err := db.Count(db.DB, "waste_bin", "fill_pct"); err != nil || n != 3 {
		t.Errorf("InfluxDB holds %d fill_pct values (err %v), want 3", n, err)
	}
}

// TestWriterRetryAfter checks the HTTP conversation the client library
// produces: gzip bodies, the bucket, precision and token, and that a 503 with
// Retry-After delays the retry by the server's wish rather than the writer's
// much shorter backoff. No InfluxDB release answers 503 on demand, so a
// small HTTP server plays that part.
func TestWriterRetryAfter(t *testing.T) {
	var mu sync.Mutex
	var attempts []time.Time
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/ping" {
			rw.WriteHeader(http.StatusNoContent)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, time.Now())
		if req.URL.Path != "/api/v2/write" || req.URL.Query().Get("bucket") != "db/rp" || req.URL.Query().Get("precision") != "ns" ||
			req.Header.Get("Authorization") != "Token user:secret" || req.Header.Get("Content-Encoding") != "gzip" {
			t.Errorf("unexpected request %s %s %v", req.Method, req.URL, req.Header)
		}
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			t.Errorf("body is not gzip: %v", err)
			rw.WriteHeader(http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(zr)
		bodies = append(bodies, string(body))
		if len(attempts) == 1 {
			rw.Header().Set("Retry-After", "1")
			rw.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		rw.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	w, _ := startWriter(t, WriterConfig{URL: srv.URL, Bucket: "db/rp", Token: "user:secret",
		FlushInterval: yamlconf.Duration(10 * time.Millisecond), RetryInterval: yamlconf.Duration(10 * time.Millisecond)})
	if err := w.Add(context.Background(), []byte("m f=1i 1")); err != nil {
		t.Fatal(err)
	}
	flush(t, w)
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 2 {
		t.Fatalf("%d attempts, want 2", len(attempts))
	}
	if gap := attempts[1].Sub(attempts[0]); gap < 900*time.Millisecond {
		t.Errorf("retried after %v, before the server's Retry-After of 1s", gap)
	}
	if bodies[0] != "m f=1i 1\n" || bodies[1] != bodies[0] {
		t.Errorf("bodies %q", bodies)
	}
	if got := testutil.ToFloat64(w.m.errors.WithLabelValues("503")); got != 1 {
		t.Errorf(`citygw_influx_write_errors_total{code="503"} = %v, want 1`, got)
	}
	if st := w.Stats(); st.Written != 1 || st.Retries != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestRunShutdownFlushes checks that cancelling Run writes what is queued.
func TestRunShutdownFlushes(t *testing.T) {
	var mu sync.Mutex
	points := 0
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/api/v2/write" {
			zr, err := gzip.NewReader(req.Body)
			if err == nil {
				body, _ := io.ReadAll(zr)
				mu.Lock()
				points += strings.Count(string(body), "\n")
				mu.Unlock()
			}
		}
		rw.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	w, err := NewWriter(WriterConfig{URL: srv.URL, Bucket: "db", FlushInterval: yamlconf.Duration(time.Hour)}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for i := range 25 {
		if err := w.Add(ctx, []byte(fmt.Sprintf("m f=%di %d\n", i, i+1))); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if points != 25 {
		t.Errorf("server got %d points at shutdown, want 25", points)
	}
	if err := w.Add(context.Background(), []byte("m f=1i 1")); err != ErrClosed {
		t.Errorf("Add after Run returned %v, want ErrClosed", err)
	}
	if st := w.Stats(); st.Written != 25 || st.Queued != 0 || math.Abs(testutil.ToFloat64(w.m.queue)) != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestRunShutdownDrops checks that what cannot be written within the
// shutdown grace (nothing listens at the URL) is counted as dropped.
func TestRunShutdownDrops(t *testing.T) {
	url := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	w, err := NewWriter(WriterConfig{URL: url, Bucket: "db", FlushInterval: yamlconf.Duration(10 * time.Millisecond),
		RetryInterval: yamlconf.Duration(10 * time.Millisecond), ShutdownGrace: yamlconf.Duration(200 * time.Millisecond)},
		prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for i := range 5 {
		if err := w.Add(ctx, []byte(fmt.Sprintf("m f=%di %d", i, i+1))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // let it fail a few times
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its shutdown grace")
	}
	st := w.Stats()
	if st.Dropped != 5 || st.Written != 0 || st.Queued != 0 || st.Errors == 0 {
		t.Errorf("stats %+v, want 5 dropped after errors", st)
	}
	if got := testutil.ToFloat64(w.m.dropped); got != 5 {
		t.Errorf(`citygw_influx_points_failed_total{reason="dropped"} = %v, want 5`, got)
	}
	if w.Healthy() {
		t.Error("healthy with nothing listening")
	}
}

// sliceSource is a BatchSource over fixed batches, the shape issue 5's WAL
// reader takes: it records what the writer hands back.
type sliceSource struct {
	mu      sync.Mutex
	batches []*Batch
	done    []bool
	refs    []any
}

func (s *sliceSource) Next(ctx context.Context, flush bool) (*Batch, error) {
	s.mu.Lock()
	if len(s.batches) > 0 {
		b := s.batches[0]
		s.batches = s.batches[1:]
		s.mu.Unlock()
		return b, nil
	}
	s.mu.Unlock()
	if flush {
		return nil, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *sliceSource) Done(b *Batch, written bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = append(s.done, written)
	s.refs = append(s.refs, b.Ref)
}

// TestDrainSource writes batches from another source (as the WAL will) to a
// real InfluxDB: each comes back through Done in order, written.
func TestDrainSource(t *testing.T) {
	db := testenv.StartInfluxDB(t)
	w, err := NewWriter(WriterConfig{URL: db.URL(), Bucket: db.Bucket()}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	src := &sliceSource{}
	total := 0
	for i := range 5 {
		b := &Batch{Ref: i}
		for j := range 100 {
			b.Lines = fmt.Appendf(b.Lines, "drain,asset=a%d v=%di %d\n", j%7, i*100+j, int64(i*100+j+1)*int64(time.Millisecond))
			b.Points++
		}
		total += b.Points
		src.batches = append(src.batches, b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Drain(ctx, src) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		src.mu.Lock()
		n := len(src.done)
		src.mu.Unlock()
		if n == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 5 batches done: %+v", n, w.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if !src.done[i] || src.refs[i] != i {
			t.Errorf("batch %d: done %v ref %v, want written in order", i, src.done[i], src.refs[i])
		}
	}
	if st := w.Stats(); st.Written != int64(total) || st.Queued != 0 || st.Accepted != int64(total) {
		t.Errorf("stats %+v", st)
	}
	if got := testutil.ToFloat64(w.m.queue); got != 0 {
		t.Errorf("queue gauge %v after draining, want 0", got)
	}
	if n, err := db.Count(db.DB, "drain", "v"); err != nil || n != total {
		t.Errorf("InfluxDB holds %d points (err %v), want %d", n, err, total)
	}
}
