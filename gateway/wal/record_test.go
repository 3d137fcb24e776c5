package wal

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, payload := range [][]byte{nil, []byte("x"), []byte("waste_bin,asset=bin-1 fill_pct=10.5 1000000000\n"), bytes.Repeat([]byte{0xC1}, 300)} {
		rec := appendRecord([]byte("junk"), 42, payload)[4:]
		got, ts, n, err := decodeRecord(rec, maxPayload)
		if err != nil || !bytes.Equal(got, payload) || ts != 42 || n != len(rec) {
			t.Fatalf("decode(%q) = %q, %d, %d, %v", payload, got, ts, n, err)
		}
		for cut := 0; cut < len(rec); cut++ {
			if _, _, _, err := decodeRecord(rec[:cut], maxPayload); err == nil {
				t.Fatalf("a record cut at %d of %d decoded", cut, len(rec))
			}
		}
		for i := range rec {
			bad := bytes.Clone(rec)
			bad[i] ^= 0x10
			if _, _, _, err := decodeRecord(bad, maxPayload); err == nil {
				t.Fatalf("a record with byte %d flipped decoded", i)
			}
		}
	}
}

func TestResync(t *testing.T) {
	var buf []byte
	buf = appendRecord(buf, 1, []byte("first"))
	second := len(buf)
	buf = appendRecord(buf, 2, []byte("second"))
	third := len(buf)
	buf = appendRecord(buf, 3, []byte("third"))
	buf[second+headerSize] ^= 0xff // damage the second payload
	if _, _, _, err := decodeRecord(buf[second:], maxPayload); err != errCorrupt {
		t.Fatalf("damaged record: %v", err)
	}
	if j := resync(buf[second:], maxPayload, true); j != third-second {
		t.Fatalf("resync = %d, want %d", j, third-second)
	}
	if j := resync(buf[third:len(buf)-1], maxPayload, true); j != -1 {
		t.Fatalf("resync in a torn tail = %d, want -1", j)
	}
}

// FuzzRecord feeds arbitrary bytes to the record decoder and the resync
// scan: they never panic, and whatever decodes re-encodes to the same bytes.
func FuzzRecord(f *testing.F) {
	f.Add(appendRecord(nil, 1, []byte("m f=1i 1\n")))
	f.Add(appendRecord(appendRecord(nil, 5, []byte("a")), 6, []byte("b"))[:30])
	f.Add([]byte{0xC1, 0x7E, 0x57, 0xA1, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		payload, ts, n, err := decodeRecord(data, 1<<20)
		if err == nil {
			if n > len(data) || len(payload) != n-headerSize {
				t.Fatalf("decoded size %d of %d bytes, payload %d", n, len(data), len(payload))
			}
			if again := appendRecord(nil, ts, payload); !bytes.Equal(again, data[:n]) {
				t.Fatalf("re-encoding differs")
			}
		}
		if j := resync(data, 1<<20, true); j == 0 || j > len(data) {
			t.Fatalf("resync = %d of %d", j, len(data))
		}
	})
}

// FuzzOpen opens a log whose only segment holds arbitrary bytes, as a disk
// might after a crash: Open never fails or panics on it, Next hands out
// exactly the backlog it reports, and a second Open finds nothing left to
// repair.
func FuzzOpen(f *testing.F) {
	var seed []byte
	for i := range 5 {
		seed = appendRecord(seed, int64(i), fmt.Appendf(nil, "m v=%di %d\n", i, i))
	}
	f.Add(seed)
	f.Add(seed[:len(seed)-3])
	damaged := bytes.Clone(seed)
	damaged[30] ^= 1
	f.Add(damaged)
	f.Add([]byte{0xC1, 0x7E, 0x57})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segmentName(0)), data, 0o640); err != nil {
			t.Fatal(err)
		}
		cfg := Config{Dir: dir, Sync: SyncNone}
		w, err := Open(cfg, nil, nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		backlog := w.Stats().Backlog
		points := 0
		for {
			b, err := w.Next(context.Background(), true)
			if err != nil {
				t.Fatal(err)
			}
			if b == nil {
				break
			}
			points += b.Points
			w.Done(b, true)
		}
		if int64(points) != backlog {
			t.Fatalf("backlog %d, drained %d", backlog, points)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		w, err = Open(cfg, nil, nil)
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		defer w.Close()
		if st := w.Stats(); st.Corrupt != 0 || st.Backlog != 0 {
			t.Fatalf("second Open: %+v", st)
		}
	})
}
