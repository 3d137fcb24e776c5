package wal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/citygw/citygw/gateway/testenv"
)

// The tests here fill a real file system: a small tmpfs mounted for the
// test. Mounting needs root; without it the test re-runs itself in a user
// and mount namespace (unshare -rm), where it is root of its own mounts
// (testenv.AsRoot).

// padded is line i with a payload of varying length, so that a record
// often straddles a page boundary and a write on a full tmpfs is partial.
func padded(i int) []byte {
	return fmt.Appendf(nil, "m,asset=a%d v=%di,pad=\"%s\" %d\n", i%13, i, strings.Repeat("x", 50+i*37%700), i+1)
}

// segmentBytesOnDisk sums the sizes of the segment files in dir.
func segmentBytesOnDisk(t *testing.T, dir string) int64 {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*"+segmentExt))
	var n int64
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

// TestDiskFullTmpfs appends to a log on a real file system until it is full
// (on_full: block): the Append that cannot be written reports the full disk
// and the file, the partial write is cut off (no torn record), the disk-full
// gauge, error counter, Stats and Ready say so, Appends wait (unacknowledged)
// instead of failing; once space is freed they go on without a reopen, and a
// reopen reads back exactly what was acknowledged.
func TestDiskFullTmpfs(t *testing.T) {
	if !testenv.AsRoot(t) {
		return
	}
	fs := testenv.MountTmpfs(t, "size=1m")
	cfg := Config{Dir: filepath.Join(fs, "wal"), SegmentBytes: 32 << 10, MaxBytes: 64 << 20, Sync: SyncAlways, OnFull: Block}
	w, reg := open(t, cfg)
	filler := testenv.FillDisk(t, fs, 80<<10) // ends inside the third segment: a write is partial

	// Sequential appends until one cannot be written.
	var acked []int
	var err error
	i := 0
	for ; i < 10000; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		err = w.Append(ctx, padded(i))
		cancel()
		if err != nil {
			break
		}
		acked = append(acked, i)
	}
	failed := i
	if err == nil {
		t.Fatalf("%d appends on an 80 KiB remainder never filled the disk", i)
	}
	if len(acked) < 50 {
		t.Fatalf("only %d appends before the disk was full", len(acked))
	}
	t.Logf("append %d after %d acknowledged: %v", failed, len(acked), err)
	for _, want := range []error{ErrDiskFull, syscall.ENOSPC, context.DeadlineExceeded} {
		if !errors.Is(err, want) {
			t.Errorf("the error does not wrap %v", want)
		}
	}
	if !strings.Contains(err.Error(), cfg.Dir+"/") || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("the error %q does not say the disk is full and which file", err)
	}
	st := w.Stats()
	if !st.DiskFull || st.DiskFullErrors == 0 || st.Appended != int64(len(acked)) {
		t.Errorf("stats on a full disk: %+v", st)
	}
	if got := gaugeValue(t, reg, "citygw_wal_disk_full"); got != 1 {
		t.Errorf("citygw_wal_disk_full = %v", got)
	}
	if got := testutil.ToFloat64(w.m.fullErrors); got == 0 {
		t.Error("citygw_wal_disk_full_errors_total is 0")
	}
	if got := testutil.ToFloat64(w.m.appendErrors); got != 1 {
		t.Errorf("citygw_wal_append_errors_total = %v, want 1", got)
	}
	if err := w.Ready(); err == nil || !strings.Contains(err.Error(), "full") || !strings.Contains(err.Error(), cfg.Dir) {
		t.Errorf("Ready on a full disk: %v", err)
	}
	// The failed write was cut off: the files hold whole records only.
	if on := segmentBytesOnDisk(t, cfg.Dir); on != st.Bytes {
		t.Errorf("segment files hold %d bytes, the log accounts for %d: a partial write was left", on, st.Bytes)
	}

	// Appends from several goroutines (as the sources make them, without a
	// deadline) wait while the disk is full; nothing of theirs is written.
	const G, per = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, G*per)
	for g := range G {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range per {
				if err := w.Append(context.Background(), padded(100000+g*per+k)); err != nil {
					errs <- err
				}
			}
		}()
	}
	// (A short line may still fit in the last page of the segment, so a few
	// may be written before all four wait.)
	waitUntil(t, 10*time.Second, "4 Appends waiting", func() bool { return w.Stats().Waiting == G })
	before := w.Stats().Appended
	time.Sleep(1500 * time.Millisecond) // at least one retry of the write
	if st := w.Stats(); st.Appended != before || !st.DiskFull || st.Waiting != G {
		t.Fatalf("while full: %+v, %d appended before", st, before)
	}
	if got := gaugeValue(t, reg, "citygw_wal_appends_waiting"); got != G {
		t.Errorf("citygw_wal_appends_waiting = %v", got)
	}

	// Space freed: the waiting Appends go on, without a reopen.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("Appends still waiting 20s after space was freed: %+v", w.Stats())
	}
	close(errs)
	for err := range errs {
		t.Errorf("a waiting Append failed: %v", err)
	}
	if err := w.Ready(); err != nil {
		t.Errorf("not ready after space was freed: %v", err)
	}
	if st := w.Stats(); st.DiskFull || st.Waiting != 0 || st.Appended != int64(len(acked)+G*per) {
		t.Errorf("after space was freed: %+v", st)
	}
	if got := gaugeValue(t, reg, "citygw_wal_disk_full"); got != 0 {
		t.Errorf("citygw_wal_disk_full = %v after space was freed", got)
	}
	for k := range 20 {
		if err := w.Append(context.Background(), padded(200000+k)); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, 200000+k)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// A reopen reads back what was acknowledged, each once, and no more;
	// nothing needed repair.
	w2, err := Open(cfg, prometheus.NewRegistry(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if st := w2.Stats(); st.Corrupt != 0 {
		t.Errorf("reopened: %d corrupt regions", st.Corrupt)
	}
	got := drainAll(t, w2)
	seen := map[string]int{}
	for _, l := range got {
		seen[l]++
	}
	want := map[string]bool{}
	for _, i := range acked {
		want[string(padded(i))] = true
	}
	for g := range G * per {
		want[string(padded(100000+g))] = true
	}
	for l, n := range seen {
		if !want[l] {
			t.Errorf("line not acknowledged came back: %.60q", l)
		}
		if n != 1 {
			t.Errorf("line came back %d times: %.60q", n, l)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("%d distinct lines came back, %d were acknowledged", len(seen), len(want))
	}
	if seen[string(padded(failed))] != 0 {
		t.Errorf("the line whose Append failed was written")
	}
	// The sequential lines are back in their order.
	seqSet := map[string]bool{}
	for _, i := range acked {
		seqSet[string(padded(i))] = true
	}
	var order []string
	for _, l := range got {
		if seqSet[l] {
			order = append(order, l)
		}
	}
	for k, i := range acked {
		if k >= len(order) || order[k] != string(padded(i)) {
			t.Fatalf("acknowledged line %d (append %d) is not back in its place", k, i)
		}
	}
}

// TestDiskFullDropOldest: with on_full: drop_oldest a full disk drops the
// oldest segment and the appends go on; every dropped point is counted.
func TestDiskFullDropOldest(t *testing.T) {
	if !testenv.AsRoot(t) {
		return
	}
	fs := testenv.MountTmpfs(t, "size=1m")
	cfg := Config{Dir: filepath.Join(fs, "wal"), SegmentBytes: 16 << 10, MaxBytes: 64 << 20, Sync: SyncInterval, OnFull: DropOldest}
	w, _ := open(t, cfg)
	testenv.FillDisk(t, fs, 96<<10)
	const total = 2000
	for i := range total {
		if err := w.Append(context.Background(), padded(i)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	st := w.Stats()
	if st.Dropped == 0 || st.DiskFullErrors == 0 {
		t.Fatalf("2000 appends on a 96 KiB remainder: %+v", st)
	}
	got := drainAll(t, w)
	if int64(len(got))+st.Dropped != total {
		t.Fatalf("%d left + %d dropped != %d appended", len(got), st.Dropped, total)
	}
	for k, l := range got {
		if want := string(padded(total - len(got) + k)); l != want {
			t.Fatalf("line %d = %.40q, want %.40q (the newest, in order)", k, l, want)
		}
	}
}

// TestDiskFullNoInodes: a new segment that cannot be created (no inode
// left) is a full disk too: the current segment is kept and written on
// after space is freed.
func TestDiskFullNoInodes(t *testing.T) {
	if !testenv.AsRoot(t) {
		return
	}
	fs := testenv.MountTmpfs(t, "size=4m,nr_inodes=64")
	cfg := Config{Dir: filepath.Join(fs, "wal"), SegmentBytes: 4 << 10, MaxBytes: 64 << 20, Sync: SyncNone}
	w, _ := open(t, cfg)
	var fillers []string
	for k := 0; ; k++ {
		p := filepath.Join(fs, fmt.Sprintf("inode%d", k))
		f, err := os.Create(p)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil || k > 100 {
			t.Fatalf("filling the inodes: %v", err)
		}
		f.Close()
		fillers = append(fillers, p)
	}
	var acked []int
	var err error
	for i := 0; i < 1000; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
		err = w.Append(ctx, padded(i))
		cancel()
		if err != nil {
			break
		}
		acked = append(acked, i)
	}
	if !errors.Is(err, ErrDiskFull) || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "creating WAL segment") {
		t.Fatalf("append with no inode for a new segment: %v", err)
	}
	if st := w.Stats(); !st.DiskFull || st.Segments != 1 || st.Appended != int64(len(acked)) {
		t.Fatalf("after a failed segment creation: %+v", st)
	}
	os.Remove(fillers[0])
	if err := w.Append(context.Background(), padded(5000)); err != nil {
		t.Fatal(err)
	}
	acked = append(acked, 5000)
	var want []string
	for _, i := range acked {
		want = append(want, string(padded(i)))
	}
	if got := drainAll(t, w); strings.Join(got, "") != strings.Join(want, "") {
		t.Fatalf("got %d lines back, want the %d acknowledged in order", len(got), len(want))
	}
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
