package wal

import (
	"context"
	"strings"
	"testing"
	"time"
)

// AppendBatch writes its lines in order, in one group, and they read back
// like Appends; it allocates nothing once warm.
func TestAppendBatch(t *testing.T) {
	for _, mode := range []SyncMode{SyncNone, SyncInterval, SyncAlways} {
		w, _ := open(t, Config{Dir: t.TempDir(), Sync: mode})
		ctx := context.Background()
		appendN(t, w, 0, 3)
		batch := [][]byte{line(3), line(4), line(5), line(6)}
		if err := w.AppendBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if err := w.AppendBatch(ctx, nil); err != nil {
			t.Fatalf("empty batch: %v", err)
		}
		appendN(t, w, 7, 9)
		wantLines(t, drainAll(t, w), seq(0, 9))
		if got := w.Stats().Appended; got != 9 {
			t.Errorf("sync %s: %d lines appended, want 9", mode, got)
		}
		allocs := testing.AllocsPerRun(500, func() {
			if err := w.AppendBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("sync %s: AppendBatch allocated %v times per call", mode, allocs)
		}
	}
}

// A batch bigger than the room left waits, with its first lines written,
// until the writer acknowledges, then completes: its own pending lines
// never hold it up.
func TestAppendBatchWaitsForRoom(t *testing.T) {
	cfg := Config{Dir: t.TempDir(), MaxBytes: 16 << 10, SegmentBytes: 4 << 10, Sync: SyncNone, OnFull: Block}
	w, _ := open(t, cfg)
	ctx := context.Background()
	var batch [][]byte
	for i := range 600 { // about 20 KiB: more than MaxBytes
		batch = append(batch, line(i))
	}
	done := make(chan error, 1)
	go func() { done <- w.AppendBatch(ctx, batch) }()
	var got []string
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < len(batch) && time.Now().Before(deadline) {
		b, err := w.Next(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		got = append(got, strings.SplitAfter(string(b.Lines), "\n")[:b.Points]...)
		w.Done(b, true)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wantLines(t, got, seq(0, len(batch)))
}

// A batch with a line over max_record_bytes is refused whole.
func TestAppendBatchTooLarge(t *testing.T) {
	w, _ := open(t, Config{Dir: t.TempDir(), MaxRecordBytes: 100})
	big := make([]byte, 101)
	if err := w.AppendBatch(context.Background(), [][]byte{line(0), big}); err == nil {
		t.Fatal("a batch with an oversized line was accepted")
	}
	if st := w.Stats(); st.Appended != 0 {
		t.Fatalf("%d lines appended from a refused batch", st.Appended)
	}
}
