package influx

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/gateway/testenv"
)

func TestLineOffset(t *testing.T) {
	lines := []byte("a 1\nbb 2\nccc 3\n")
	for n, want := range []int{0, 4, 9, 15, 15} {
		if got := lineOffset(lines, n); got != want {
			t.Errorf("lineOffset(%d) = %d, want %d", n, got, want)
		}
	}
}

// deadLetters reads the dead-letter file: its point lines and its comments.
func deadLetters(t *testing.T, path string) (points, comments []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if strings.HasPrefix(l, "# ") {
			comments = append(comments, l)
		} else if l != "" {
			points = append(points, l)
		}
	}
	return points, comments
}

// TestWriterSplitsRejectedBatch: a field type conflict among 1,000 good
// points, and a line that does not parse, in one batch. InfluxDB 1.8 answers
// 400; the writer bisects until exactly the bad points are dead-lettered
// with the server's message, and every good point is written.
func TestWriterSplitsRejectedBatch(t *testing.T) {
	db := testenv.StartInfluxDB(t)
	dl := filepath.Join(t.TempDir(), "dead_letter.lp")
	w, _ := startWriter(t, WriterConfig{URL: db.URL(), Bucket: db.Bucket(), BatchSize: 5000,
		FlushInterval: yamlconf.Duration(20 * time.Millisecond), DeadLetter: dl})
	ctx := context.Background()
	if err := w.Add(ctx, []byte("split,asset=a0 v=0.5 1")); err != nil { // v is a float from now on
		t.Fatal(err)
	}
	flush(t, w)
	bad := map[int]string{137: "split,asset=a7 v=%[1]di %[2]d", 700: "split,asset=a0 v=%[1]di %[2]d", 701: "split,asset=a1 v=\"%[1]d\" %[2]d", 999: "split asset=a9 v=%[1]d.5 %[2]d x"}
	var wantBad []string
	for i := 1; i <= 1003; i++ {
		format, isBad := bad[i]
		if !isBad {
			format = "split,asset=a%[3]d v=%[1]d.25 %[2]d"
		}
		l := fmt.Sprintf(format, i, int64(i+1)*int64(time.Millisecond), i%10)
		if isBad {
			wantBad = append(wantBad, l)
		}
		if err := w.Add(ctx, []byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, w)
	st := w.Stats()
	if st.Written != 1000 || st.Rejected != 4 || st.Dropped != 0 || st.Queued != 0 {
		t.Fatalf("stats %+v, want 1000 written and 4 rejected", st)
	}
	if got := testutil.ToFloat64(w.m.rejected); got != 4 {
		t.Errorf(`citygw_influx_points_failed_total{reason="rejected"} = %v, want 4`, got)
	}
	if got := testutil.ToFloat64(w.m.retries); got != 0 {
		t.Errorf("refused points were retried %v times", got)
	}
	if n, err := db.Count(db.DB, "split", "v"); err != nil || n != 1000 {
		t.Errorf("InfluxDB holds %d points (err %v), want 1000", n, err)
	}
	points, comments := deadLetters(t, dl)
	if strings.Join(points, "\n") != strings.Join(wantBad, "\n") {
		t.Errorf("dead letters\n%s\nwant\n%s", strings.Join(points, "\n"), strings.Join(wantBad, "\n"))
	}
	// One comment per refused piece: two bad points can end up in one piece
	// when the batches are cut differently (the flush timing varies).
	if len(comments) < 2 || len(comments) > 4 || !strings.Contains(comments[0], "HTTP 400") || !strings.Contains(comments[0], "field type conflict") ||
		!strings.Contains(comments[len(comments)-1], "unable to parse") {
		t.Errorf("dead-letter comments %q", comments)
	}
}

// TestWriterSplitsTooLarge: InfluxDB with a small max-body-size answers
// 413; batches are halved until they fit, and a single line larger than the
// limit is dead-lettered. influxd 1.8 checks the limit only on requests with
// a Content-Length, which the client sends when gzip is off.
func TestWriterSplitsTooLarge(t *testing.T) {
	db := testenv.StartInfluxDBWith(t, testenv.InfluxDBOptions{MaxBodySize: 20000})
	dl := filepath.Join(t.TempDir(), "dead_letter.lp")
	w, _ := startWriter(t, WriterConfig{URL: db.URL(), Bucket: db.Bucket(), BatchSize: 2000,
		FlushInterval: yamlconf.Duration(20 * time.Millisecond), DeadLetter: dl, DisableGzip: true})
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 4))
	random := func(n int) string {
		const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	huge := fmt.Sprintf("big,asset=x v=1i,s=%q 5", random(60000))
	for i := range 2000 { // ~90 bytes a line: ~180 kB, nine times the limit
		l := fmt.Sprintf("big,asset=a%d v=%di,pad=\"%s\" %d", i%10, i, random(50), i+10)
		if i == 1500 {
			l = huge
		}
		if err := w.Add(ctx, []byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, w)
	st := w.Stats()
	if st.Written != 1999 || st.Rejected != 1 {
		t.Fatalf("stats %+v, want 1999 written, 1 rejected", st)
	}
	if got := testutil.ToFloat64(w.m.errors.WithLabelValues("413")); got < 4 {
		t.Errorf(`citygw_influx_write_errors_total{code="413"} = %v, want several`, got)
	}
	if n, err := db.Count(db.DB, "big", "v"); err != nil || n != 1999 {
		t.Errorf("InfluxDB holds %d points (err %v), want 1999", n, err)
	}
	points, comments := deadLetters(t, dl)
	if len(points) != 1 || points[0] != huge || len(comments) != 1 || !strings.Contains(comments[0], "HTTP 413") {
		t.Errorf("dead letters: %d points, comments %q", len(points), comments)
	}
}

// TestDrainInFlightOrder: with MaxInFlight 3 batches are written at once,
// and handed back to their source in the order it gave them out even when a
// later one finishes first. A small HTTP server plays InfluxDB, because
// influxd cannot be told to answer one request slowly.
func TestDrainInFlightOrder(t *testing.T) {
	var mu sync.Mutex
	concurrent, most := 0, 0
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/api/v2/write" {
			rw.WriteHeader(http.StatusNoContent)
			return
		}
		zr, _ := gzip.NewReader(req.Body)
		body, _ := io.ReadAll(zr)
		mu.Lock()
		concurrent++
		most = max(most, concurrent)
		mu.Unlock()
		if strings.HasPrefix(string(body), "m v=0i") {
			time.Sleep(300 * time.Millisecond) // the first batch is the slowest
		} else {
			time.Sleep(50 * time.Millisecond)
		}
		mu.Lock()
		concurrent--
		mu.Unlock()
		rw.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	w, err := NewWriter(WriterConfig{URL: srv.URL, Bucket: "db", MaxInFlight: 3}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	src := &sliceSource{}
	for i := range 9 {
		src.batches = append(src.batches, &Batch{Lines: fmt.Appendf(nil, "m v=%di %d\n", i, i+1), Points: 1, Ref: i})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Drain(ctx, src) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		src.mu.Lock()
		n := len(src.done)
		src.mu.Unlock()
		if n == 9 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, ref := range src.refs {
		if ref != i || !src.done[i] {
			t.Fatalf("Done order %v (written %v), want 0..8 in order", src.refs, src.done)
		}
	}
	if len(src.refs) != 9 {
		t.Fatalf("%d batches done", len(src.refs))
	}
	if most < 2 || most > 3 {
		t.Errorf("at most %d requests at once, want 2 or 3", most)
	}
}
