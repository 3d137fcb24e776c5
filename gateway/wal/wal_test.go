package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/citygw/citygw/devices/yamlconf"
)

type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// open opens a WAL in dir with cfg; it is closed at the end of the test
// unless the test closed it.
func open(t testing.TB, cfg Config) (*WAL, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	w, err := Open(cfg, reg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, reg
}

func line(i int) []byte { return fmt.Appendf(nil, "m,asset=a%d v=%di %d\n", i%13, i, i+1) }

func appendN(t testing.TB, w *WAL, from, to int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < to; i++ {
		if err := w.Append(ctx, line(i)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

// drainAll takes every batch there is (flush) and acknowledges it; it
// returns the lines in order.
func drainAll(t testing.TB, w *WAL) []string {
	t.Helper()
	var out []string
	for {
		b, err := w.Next(context.Background(), true)
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			return out
		}
		if n := bytes.Count(b.Lines, []byte("\n")); n != b.Points {
			t.Fatalf("batch of %d points holds %d lines", b.Points, n)
		}
		out = append(out, strings.SplitAfter(string(b.Lines), "\n")[:b.Points]...)
		w.Done(b, true)
	}
}

func wantLines(t testing.TB, got []string, idx []int) {
	t.Helper()
	if len(got) != len(idx) {
		t.Fatalf("got %d lines, want %d", len(got), len(idx))
	}
	for k, i := range idx {
		if got[k] != string(line(i)) {
			t.Fatalf("line %d = %q, want %q", k, got[k], line(i))
		}
	}
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func TestConfig(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		err  string
	}{
		{"dir: /x\nmax_bytes: 64MiB\nsegment_bytes: 1MiB\nsync: always\non_full: drop_oldest\nsync_interval: 50ms\n", ""},
		{"dir: /x\nenabled: false\n", ""},
		{"enabled: false\nsync: sometimes\n", ""}, // off: not checked
		{"dir: /x\nmax_bytes: lots\n", "invalid size"},
		{"dir: /x\nsync: sometimes\n", "wal.sync"},
		{"dir: /x\non_full: panic\n", "wal.on_full"},
		{"dir: /x\nmax_bytes: 1MiB\nsegment_bytes: 1MiB\n", "segment_bytes"},
		{"max_bytes: 1GiB\n", "wal.dir is required"},
		{"dir: /x\nsegmnet_bytes: 1\n", "unknown"},
	} {
		var c Config
		_, err := yamlconf.Decode("gw.yaml", []byte(tt.yaml), &c)
		if err == nil {
			err = c.Validate()
		}
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%q: error %v, want %q", tt.yaml, err, tt.err)
		}
	}
	var c Config
	if _, err := yamlconf.Decode("gw.yaml", []byte("dir: d\nmax_bytes: 64MiB\n"), &c); err != nil {
		t.Fatal(err)
	}
	c.setDefaults()
	if !c.On() || c.MaxBytes != 64<<20 || c.SegmentBytes != 16<<20 || c.Sync != SyncInterval || c.OnFull != Block || c.DeadLetterPath() != "d/dead_letter.lp" {
		t.Errorf("defaults: %+v", c)
	}
	if off := false; (Config{Enabled: &off}).On() {
		t.Error("enabled: false is on")
	}
}

// TestAppendNextDone: lines come back in order, in batches, and segments
// are deleted once acknowledged, so disk use shrinks.
func TestAppendNextDone(t *testing.T) {
	dir := t.TempDir()
	w, reg := open(t, Config{Dir: dir, SegmentBytes: 4 << 10, MaxBytes: 1 << 20, BatchSize: 100, MaxBatchLines: 5000, Sync: SyncNone})
	appendN(t, w, 0, 1000)
	st := w.Stats()
	if st.Backlog != 1000 || st.Segments < 5 || st.Appended != 1000 {
		t.Fatalf("after 1000 appends: %+v", st)
	}
	// Not flushing: a full batch of BatchSize is due at once, and more
	// (up to MaxBatchLines) because everything is there.
	b, err := w.Next(context.Background(), false)
	if err != nil || b.Points != 1000 {
		t.Fatalf("Next = %v points, %v; want the 1000-line backlog in one batch", b.Points, err)
	}
	if got := strings.SplitAfter(string(b.Lines), "\n")[:3]; got[0] != string(line(0)) || got[2] != string(line(2)) {
		t.Fatalf("first lines %q", got)
	}
	w.Done(b, true)
	st = w.Stats()
	if st.Backlog != 0 || st.Segments != 1 || st.Drained != 1000 || st.Bytes > 4<<10 {
		t.Fatalf("after Done: %+v", st)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	if len(files) != 1 {
		t.Fatalf("segment files %v, want the tail only", files)
	}
	if got := testutil.ToFloat64(w.m.drained); got != 1000 {
		t.Errorf("citygw_wal_drain_points_total = %v", got)
	}
	if n, err := testutil.GatherAndCount(reg, "citygw_wal_bytes", "citygw_wal_backlog_points", "citygw_wal_backlog_age_seconds", "citygw_wal_segments", "citygw_wal_disk_full"); err != nil || n != 5 {
		t.Errorf("gauges: %d, %v", n, err)
	}
	// Next without flush waits for FlushInterval when a batch is not full.
	appendN(t, w, 1000, 1010)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	b, err = w.Next(ctx, false)
	if err != nil || b.Points != 10 {
		t.Fatalf("partial batch: %v, %v", b, err)
	}
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Errorf("a partial batch was handed out after %v, before the 1s flush interval", waited)
	}
	w.Done(b, true)
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := w.Next(short, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next on an empty log returned %v", err)
	}
}

// TestReopenReplaysUnacknowledged: after a restart exactly the lines not
// acknowledged come back, and acknowledged ones do not.
func TestReopenReplaysUnacknowledged(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, SegmentBytes: 8 << 10, MaxBytes: 1 << 20, BatchSize: 100, MaxBatchLines: 300, Sync: SyncNone}
	w, _ := open(t, cfg)
	appendN(t, w, 0, 1000)
	b, _ := w.Next(context.Background(), false)
	if b.Points != 300 {
		t.Fatalf("batch of %d, want MaxBatchLines 300", b.Points)
	}
	w.Done(b, true)
	b2, _ := w.Next(context.Background(), false) // taken, never acknowledged
	if b2.Points != 300 {
		t.Fatalf("second batch %d", b2.Points)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(context.Background(), true); err != ErrClosed {
		t.Errorf("Next after Close: %v", err)
	}
	if err := w.Append(context.Background(), line(1)); err != ErrClosed {
		t.Errorf("Append after Close: %v", err)
	}
	w, _ = open(t, cfg)
	if st := w.Stats(); st.Backlog != 700 || st.Corrupt != 0 {
		t.Fatalf("reopened: %+v, want a backlog of 700", st)
	}
	appendN(t, w, 1000, 1100)
	wantLines(t, drainAll(t, w), seq(300, 1100))
	w.Close()
	w, _ = open(t, cfg)
	if got := drainAll(t, w); len(got) != 0 {
		t.Fatalf("after everything was acknowledged, %d lines came back", len(got))
	}
}

// TestOpenTwice: one process per directory.
func TestOpenTwice(t *testing.T) {
	dir := t.TempDir()
	open(t, Config{Dir: dir})
	if _, err := Open(Config{Dir: dir}, prometheus.NewRegistry(), nil); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open: %v", err)
	}
}

// lastSegment returns the newest segment file holding data.
func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	sort.Strings(files)
	for i := len(files) - 1; i >= 0; i-- {
		if st, err := os.Stat(files[i]); err == nil && st.Size() > 0 {
			return files[i]
		}
	}
	t.Fatal("no segment with data")
	return ""
}

// TestTornTail cuts the last segment at random offsets, as a power cut does
// with sync: none or interval: every record wholly before the cut comes
// back once, the torn one is reported and cut off, and appending goes on.
func TestTornTail(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 12 {
		dir := t.TempDir()
		cfg := Config{Dir: dir, SegmentBytes: 16 << 10, MaxBytes: 1 << 20, Sync: SyncNone}
		w, _ := open(t, cfg)
		appendN(t, w, 0, 500)
		w.Close()
		seg := lastSegment(t, dir)
		data, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		cut := r.IntN(len(data))
		if round == 0 {
			cut = len(data) - 1
		}
		if err := os.Truncate(seg, int64(cut)); err != nil {
			t.Fatal(err)
		}
		// Which records survive: those wholly before the cut.
		whole, off, torn := 0, 0, false
		for off < cut {
			_, _, n, err := decodeRecord(data[off:cut], maxPayload)
			if err != nil {
				torn = true
				break
			}
			whole++
			off += n
		}
		before := 0
		files, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
		sort.Strings(files)
		for _, f := range files {
			if f == seg {
				break
			}
			b, _ := os.ReadFile(f)
			for o := 0; o < len(b); {
				_, _, n, err := decodeRecord(b[o:], maxPayload)
				if err != nil {
					t.Fatal(err)
				}
				before++
				o += n
			}
		}
		w, reg := open(t, cfg)
		st := w.Stats()
		wantCorrupt := int64(0)
		if torn {
			wantCorrupt = 1
		}
		if st.Corrupt != wantCorrupt {
			t.Fatalf("round %d (cut %d of %d): corrupt %d, want %d", round, cut, len(data), st.Corrupt, wantCorrupt)
		}
		if got := testutil.ToFloat64(w.m.recoveries); got != float64(wantCorrupt) {
			t.Errorf("citygw_wal_recoveries_total = %v", got)
		}
		if n, _ := testutil.GatherAndCount(reg, "citygw_wal_corrupt_records_total"); n != 1 {
			t.Errorf("corrupt metric not gathered")
		}
		appendN(t, w, 500, 510) // appending after a repair
		wantLines(t, drainAll(t, w), append(seq(0, before+whole), seq(500, 510)...))
		w.Close()
		// Reopening again finds nothing more to repair.
		w, _ = open(t, cfg)
		if st := w.Stats(); st.Corrupt != 0 || st.Backlog != 0 {
			t.Fatalf("second reopen: %+v", st)
		}
		w.Close()
	}
}

// TestCorruptMiddle flips bytes inside records of a sealed segment and of
// the tail: only the damaged records are lost, each is counted once.
func TestCorruptMiddle(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, SegmentBytes: 4 << 10, MaxBytes: 1 << 20, Sync: SyncNone}
	w, _ := open(t, cfg)
	appendN(t, w, 0, 300)
	w.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	sort.Strings(files)
	if len(files) < 3 {
		t.Fatalf("want several segments, have %v", files)
	}
	// Damage record 10 of the first segment (its payload) and record 3 of
	// the last segment with data (its length field).
	damage := func(file string, rec int, at func(off int) int) int {
		data, _ := os.ReadFile(file)
		off := 0
		for range rec {
			_, _, n, err := decodeRecord(data[off:], maxPayload)
			if err != nil {
				t.Fatal(err)
			}
			off += n
		}
		data[at(off)] ^= 0x5a
		if err := os.WriteFile(file, data, 0o640); err != nil {
			t.Fatal(err)
		}
		return off
	}
	damage(files[0], 10, func(off int) int { return off + headerSize + 7 })
	last := lastSegment(t, dir)
	damage(last, 3, func(off int) int { return off + 5 })
	firstInLast := 0
	for _, f := range files {
		if f == last {
			break
		}
		b, _ := os.ReadFile(f)
		for o := 0; o < len(b); firstInLast++ {
			_, _, n, err := decodeRecord(b[o:], maxPayload)
			if err != nil {
				o++ // the damaged record: resync byte by byte, counted below
				for o < len(b) {
					if _, _, n, err = decodeRecord(b[o:], maxPayload); err == nil {
						break
					}
					o++
				}
				firstInLast-- // not a record
				continue
			}
			o += n
		}
	}
	firstInLast++ // the damaged record 10 counted as one
	w, _ = open(t, cfg)
	if st := w.Stats(); st.Corrupt != 2 || st.Backlog != 298 {
		t.Fatalf("reopened: %+v, want 2 corrupt regions and 298 records", st)
	}
	var want []int
	for i := range 300 {
		if i != 10 && i != firstInLast+3 {
			want = append(want, i)
		}
	}
	wantLines(t, drainAll(t, w), want)
	if st := w.Stats(); st.Backlog != 0 || st.Segments != 1 {
		t.Fatalf("after draining: %+v", st)
	}
}

// TestConcurrentAppend: many appenders, group commit; every line comes back
// exactly once and each appender's lines in its order.
func TestConcurrentAppend(t *testing.T) {
	for _, mode := range []SyncMode{SyncNone, SyncInterval, SyncAlways} {
		t.Run(string(mode), func(t *testing.T) {
			w, _ := open(t, Config{Dir: t.TempDir(), Sync: mode, SegmentBytes: 64 << 10, MaxBytes: 64 << 20})
			const goroutines, per = 8, 400
			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range per {
						if err := w.Append(context.Background(), fmt.Appendf(nil, "g%d %d", g, i)); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			// Drain concurrently with the appenders.
			var got []string
			deadline := time.Now().Add(30 * time.Second)
			for len(got) < goroutines*per && time.Now().Before(deadline) {
				got = append(got, drainAll(t, w)...)
				time.Sleep(time.Millisecond)
			}
			wg.Wait()
			next := make([]int, goroutines)
			for _, l := range got {
				var g, i int
				if _, err := fmt.Sscanf(l, "g%d %d\n", &g, &i); err != nil {
					t.Fatalf("line %q: %v", l, err)
				}
				if i != next[g] {
					t.Fatalf("appender %d: line %d after %d", g, i, next[g]-1)
				}
				next[g]++
			}
			if len(got) != goroutines*per {
				t.Fatalf("%d lines, want %d", len(got), goroutines*per)
			}
		})
	}
}

func TestAppendDoesNotAllocate(t *testing.T) {
	for _, mode := range []SyncMode{SyncNone, SyncInterval} {
		w, _ := open(t, Config{Dir: t.TempDir(), Sync: mode, SegmentBytes: 64 << 20})
		l := line(12345)
		ctx := context.Background()
		appendN(t, w, 0, 100)
		allocs := testing.AllocsPerRun(2000, func() {
			if err := w.Append(ctx, l); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("sync %s: Append allocated %v times per call", mode, allocs)
		}
	}
}

func TestAppendTooLarge(t *testing.T) {
	w, _ := open(t, Config{Dir: t.TempDir(), MaxRecordBytes: 100})
	if err := w.Append(context.Background(), bytes.Repeat([]byte("x"), 101)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of 101 bytes: %v", err)
	}
}

// TestOnFullBlock: at MaxBytes, Append waits until the writer acknowledges.
func TestOnFullBlock(t *testing.T) {
	cfg := Config{Dir: t.TempDir(), MaxBytes: 64 << 10, SegmentBytes: 16 << 10, Sync: SyncNone, OnFull: Block}
	w, _ := open(t, cfg)
	ctx := context.Background()
	n := 0
	for ; ; n++ {
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err := w.Append(short, line(n))
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n > 10000 {
			t.Fatal("Append never blocked")
		}
	}
	if err := w.Ready(); err == nil {
		t.Error("Ready with a full log")
	}
	if st := w.Stats(); st.Bytes > 64<<10 || st.Dropped != 0 || st.Backlog != int64(n) {
		t.Fatalf("at the bound: %+v after %d appends", st, n)
	}
	// A blocked Append goes on once a batch is acknowledged.
	done := make(chan error, 1)
	go func() { done <- w.Append(ctx, line(n)) }()
	select {
	case err := <-done:
		t.Fatalf("Append did not block: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	b, err := w.Next(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	w.Done(b, true)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Append still blocked after the backlog was acknowledged")
	}
	if err := w.Ready(); err != nil {
		t.Errorf("not ready after draining: %v", err)
	}
	wantLines(t, drainAll(t, w), []int{n})
}

// TestOnFullDropOldest: at MaxBytes the oldest segment goes; every dropped
// point is counted, and what is left is the newest lines, in order.
func TestOnFullDropOldest(t *testing.T) {
	cfg := Config{Dir: t.TempDir(), MaxBytes: 64 << 10, SegmentBytes: 16 << 10, Sync: SyncNone, OnFull: DropOldest}
	w, _ := open(t, cfg)
	const total = 5000
	appendN(t, w, 0, total)
	st := w.Stats()
	if st.Dropped == 0 || st.Bytes > 64<<10+16<<10 {
		t.Fatalf("stats %+v", st)
	}
	if got := testutil.ToFloat64(w.m.dropped); got != float64(st.Dropped) {
		t.Errorf("citygw_wal_dropped_points_total = %v, want %d", got, st.Dropped)
	}
	got := drainAll(t, w)
	if int64(len(got))+st.Dropped != total {
		t.Fatalf("%d lines left + %d dropped != %d appended", len(got), st.Dropped, total)
	}
	wantLines(t, got, seq(total-len(got), total))
	// Dropping while the writer holds a batch: the batch still counts as
	// taken, not dropped.
	appendN(t, w, 0, 200)
	b, _ := w.Next(context.Background(), true)
	taken := b.Points
	appendN(t, w, 200, total)
	w.Done(b, true)
	st2 := w.Stats()
	rest := drainAll(t, w)
	if int64(taken+len(rest))+st2.Dropped-st.Dropped != total || taken != 200 {
		t.Fatalf("batch %d + %d left + %d dropped != %d", taken, len(rest), st2.Dropped-st.Dropped, total)
	}
	if w.Stats().Backlog != 0 {
		t.Fatalf("backlog %+v", w.Stats())
	}
}

// TestDoneUnwrittenStalls: a batch given back unwritten (the writer's
// shutdown) is not acknowledged and comes back after a restart.
func TestDoneUnwrittenStalls(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, Sync: SyncNone, BatchSize: 10}
	w, _ := open(t, cfg)
	appendN(t, w, 0, 30)
	b, _ := w.Next(context.Background(), true)
	w.Done(b, false)
	if b, err := w.Next(context.Background(), true); b != nil || err != nil {
		t.Fatalf("Next after an unwritten batch: %v, %v", b, err)
	}
	w.Close()
	w, _ = open(t, cfg)
	wantLines(t, drainAll(t, w), seq(0, 30))
}

// TestAckFileCorrupt: a damaged ack file means a full replay, not a failure.
func TestAckFileCorrupt(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, Sync: SyncNone}
	w, _ := open(t, cfg)
	appendN(t, w, 0, 20)
	drainAll(t, w)
	appendN(t, w, 20, 25)
	w.Close()
	if err := os.WriteFile(filepath.Join(dir, ackFile), []byte("garbage garbage garb"), 0o640); err != nil {
		t.Fatal(err)
	}
	w, _ = open(t, cfg)
	if got := drainAll(t, w); len(got) != 5 && len(got) != 25 {
		t.Fatalf("%d lines after a corrupt ack file", len(got))
	}
}

// TestDiskFull: writes failing with ENOSPC (the tail segment is the kernel's
// /dev/full, whose writes always fail so) are reported, not a crash: Append
// waits as at the bound (on_full: block) until its context ends, the
// disk-full gauge and Ready say so, and Close does not hang.
func TestDiskFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	dir := t.TempDir()
	if err := os.Symlink("/dev/full", filepath.Join(dir, segmentName(0))); err != nil {
		t.Fatal(err)
	}
	w, reg := open(t, Config{Dir: dir, Sync: SyncNone})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- w.Append(context.Background(), line(1)) }() // the group's writer: retries
	deadline := time.Now().Add(5 * time.Second)
	for !w.Stats().DiskFull && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !w.Stats().DiskFull {
		t.Fatal("a write failing with ENOSPC was not reported")
	}
	if err := w.Append(ctx, line(2)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Append on a full disk: %v, want it to wait until its context ends", err)
	}
	if got := gaugeValue(t, reg, "citygw_wal_disk_full"); got != 1 {
		t.Errorf("citygw_wal_disk_full = %v", got)
	}
	if err := w.Ready(); err == nil || !strings.Contains(err.Error(), "full") {
		t.Errorf("Ready on a full disk: %v", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung on a full disk")
	}
	if err := <-errc; err == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("the waiting Append returned %v after Close, want the ENOSPC error", err)
	}
}

// TestSegmentOverrun: a segment holding more than fits before the next one
// (the rest of a group whose write failed, then a new segment was started)
// is cut back at Open instead of failing it.
func TestSegmentOverrun(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, SegmentBytes: 4 << 10, Sync: SyncNone}
	w, _ := open(t, cfg)
	appendN(t, w, 0, 200)
	w.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	sort.Strings(files)
	f, err := os.OpenFile(files[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(appendRecord(nil, 1, []byte("stray 1\n")))
	f.Close()
	w, _ = open(t, cfg)
	if st := w.Stats(); st.Corrupt != 1 || st.Backlog != 200 {
		t.Fatalf("reopened: %+v", st)
	}
	wantLines(t, drainAll(t, w), seq(0, 200))
}
