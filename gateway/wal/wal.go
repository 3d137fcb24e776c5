package wal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/gateway/influx"
)

// ErrClosed is returned by Append and Next once the log is closed.
var ErrClosed = errors.New("wal closed")

// ErrTooLarge is returned by Append for a line above MaxRecordBytes.
var ErrTooLarge = errors.New("wal: line too large")

// ErrDiskFull is wrapped by the error of an Append that gave up while the
// disk was full (its context ended, or the log closed). The error also wraps
// the write error (syscall.ENOSPC, with the file's path) and, when its
// context ended, the context's error.
var ErrDiskFull = errors.New("WAL disk full")

const (
	segmentExt = ".wal"
	ackFile    = "ack"
	lockFile   = "LOCK"
)

// span is a byte range of a segment file.
type span struct{ from, to int64 }

// segment is one segment file. Positions in the log are logical offsets:
// a segment's bytes occupy [base, base+size).
type segment struct {
	base    int64
	size    int64 // bytes in the file that are complete records or known bad spans
	records int   // valid records
	acked   int   // records acknowledged by the writer
	read    int   // records taken into batches
	bad     []span
	path    string
	gone    bool // deleted (acknowledged, or dropped)
}

func (s *segment) end() int64 { return s.base + s.size }

// Stats is a snapshot of the log's state.
type Stats struct {
	Bytes      int64         // bytes of segment files
	Segments   int           // segment files
	Backlog    int64         // points appended and not acknowledged
	BacklogAge time.Duration // age of the oldest unacknowledged point
	Appended   int64         // lines appended since Open
	Drained    int64         // points acknowledged since Open
	Dropped    int64         // points dropped (drop_oldest) since Open
	Corrupt    int64         // unreadable regions skipped since Open (at Open included)
	DiskFull   bool          // the last write failed for lack of space
	// DiskFullErrors counts writes, fsyncs and segment creations that
	// failed for lack of space since Open (each was retried).
	DiskFullErrors int64
	// FsyncErrors counts failed fsyncs since Open.
	FsyncErrors int64
	// Waiting is the number of Appends waiting for space (at MaxBytes, or
	// on a full disk): their lines are not written, so their sources have
	// not acknowledged them.
	Waiting  int
	InFlight int // batches handed to the writer and not yet Done
}

// WAL is the write-ahead log. Append is safe for concurrent use; Next and
// Done are called by one reader (the InfluxDB writer's drain loop).
type WAL struct {
	cfg Config
	log *slog.Logger
	m   metrics

	lock *os.File // flock'ed: one process per directory

	mu   sync.Mutex
	cond *sync.Cond // a group write finished, or the log closed

	segs      []*segment // in order; the last is the tail being written
	tailFile  *os.File
	diskBytes int64
	backlog   int64

	// Group commit.
	pending      []byte // records waiting to be written
	pendingN     int
	pendingFirst int64 // append time of the first pending record
	spare        []byte
	writing      int64  // bytes of the group being written
	flushing     bool   // a leader is writing a group
	gen          uint64 // generation of the pending group
	genDone      uint64 // last generation written (or failed)
	errs         [64]struct {
		gen uint64
		err error
	}
	rotate       bool // start a new segment before the next group
	dirty        bool // written since the last fsync
	closed       bool
	closing      bool
	diskFull     bool
	fullFromSync bool          // diskFull was set by a failed background fsync, not a write
	fullErr      error         // the last ENOSPC error (it names the file)
	waiting      int           // Appends waiting for space
	space        chan struct{} // closed when acknowledgements free space; nil when nobody waits

	// Reader.
	ack         int64 // logical position up to which everything is acknowledged
	rpos        int64 // logical position of the next record to read
	unreadSince int64 // append time of the oldest unread record when nothing is being batched
	building    *influx.Batch
	inflight    []*batchRef
	free        []*influx.Batch
	stalled     bool // the writer gave a batch back unwritten: stop handing out more
	rfile       *os.File
	rfileSeg    *segment
	rbuf        []byte
	wake        chan struct{} // cap 1: new data for Next
	ackFile     *os.File
	ackBuf      [20]byte
	ackDirty    bool

	// Counters and rate-limited logging.
	appended, drained, dropped, corruptN int64
	fullErrs, fsyncErrs                  int64
	dropLogged                           int64
	lastDropLog, lastFullLog             time.Time

	done chan struct{} // stops housekeeping
	wg   sync.WaitGroup
}

// batchRef is the WAL's handle on a batch it handed out.
type batchRef struct {
	first int64 // append time of its first record
	end   int64 // logical position after its last record
	parts []part
}

type part struct {
	seg *segment
	n   int
}

// Open opens (creating it if needed) the log in cfg.Dir and recovers what a
// crash or power cut left: a torn or corrupt tail is cut off, corrupt records
// inside a segment are skipped; both are counted and logged. Everything not
// acknowledged before is handed to Next again.
func Open(cfg Config, reg prometheus.Registerer, log *slog.Logger) (*WAL, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("wal config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating WAL directory: %w", err)
	}
	w := &WAL{
		cfg:  cfg,
		log:  log.With("wal", cfg.Dir),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
		rbuf: make([]byte, 1<<20),
		gen:  1,
	}
	w.cond = sync.NewCond(&w.mu)
	m, err := newMetrics(reg, w)
	if err != nil {
		return nil, err
	}
	w.m = m
	if err := w.lockDir(); err != nil {
		return nil, err
	}
	if err := w.recover(); err != nil {
		for _, f := range []*os.File{w.ackFile, w.tailFile, w.lock} {
			if f != nil {
				f.Close()
			}
		}
		return nil, err
	}
	w.wg.Add(1)
	go w.housekeeping()
	return w, nil
}

func (w *WAL) lockDir() error {
	f, err := os.OpenFile(filepath.Join(w.cfg.Dir, lockFile), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return fmt.Errorf("opening WAL lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("WAL directory %s is in use by another process: %w", w.cfg.Dir, err)
	}
	w.lock = f
	return nil
}

// recover loads the ack position and every segment, repairing what it must,
// and starts a new tail segment.
func (w *WAL) recover() error {
	dir := w.cfg.Dir
	af, err := os.OpenFile(filepath.Join(dir, ackFile), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return fmt.Errorf("opening WAL ack file: %w", err)
	}
	w.ackFile = af
	var ab [20]byte
	if n, _ := af.ReadAt(ab[:], 0); n == len(ab) {
		if pos, ok := decodeAck(ab[:]); ok {
			w.ack = pos
		} else {
			w.log.Warn("WAL ack file is corrupt; the whole log will be drained again")
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("listing WAL directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, segmentExt) {
			continue
		}
		base, err := strconv.ParseInt(strings.TrimSuffix(name, segmentExt), 10, 64)
		if err != nil || base < 0 {
			w.log.Warn("ignoring a file that is not a WAL segment", "file", name)
			continue
		}
		w.segs = append(w.segs, &segment{base: base, path: filepath.Join(dir, name)})
	}
	sort.Slice(w.segs, func(i, j int) bool { return w.segs[i].base < w.segs[j].base })
	repaired := false
	var buf []byte
	var firstUnacked int64
	for i, s := range w.segs {
		buf, err = readFile(s.path, buf)
		if err != nil {
			return fmt.Errorf("reading WAL segment: %w", err)
		}
		// A segment running into the next one holds the rest of a write that
		// failed (its Appends got the error): cut it off.
		if i+1 < len(w.segs) && int64(len(buf)) > w.segs[i+1].base-s.base {
			limit := w.segs[i+1].base - s.base
			w.log.Warn("WAL segment runs into the next one; cutting off the rest of a failed write",
				"segment", s.path, "offset", limit, "bytes_cut", int64(len(buf))-limit)
			if err := os.Truncate(s.path, limit); err != nil {
				return fmt.Errorf("cutting WAL segment %s: %w", s.path, err)
			}
			buf = buf[:limit]
			repaired = true
			w.corruptN++
			w.m.corrupt.Inc()
		}
		fixed, err := w.scan(s, buf, &firstUnacked)
		if err != nil {
			return err
		}
		repaired = repaired || fixed
		w.diskBytes += s.size
		w.backlog += int64(s.records - s.acked)
	}
	if repaired {
		w.m.recoveries.Inc()
	}
	w.unreadSince = firstUnacked
	// Acknowledged segments left by a crash between ack and delete.
	for len(w.segs) > 0 && w.segs[0].acked == w.segs[0].records && w.segs[0].end() <= w.ack {
		s := w.segs[0]
		if len(w.segs) == 1 && s.size == 0 {
			break // empty: it becomes the tail again
		}
		if err := os.Remove(s.path); err != nil {
			return fmt.Errorf("removing acknowledged WAL segment: %w", err)
		}
		w.diskBytes -= s.size
		w.segs = w.segs[1:]
	}
	// A new tail segment after everything, and after the ack position: a
	// power cut may have lost a tail that had been acknowledged, and new
	// records must never sit below the ack position.
	base := w.ack
	if n := len(w.segs); n > 0 {
		base = max(base, w.segs[n-1].end())
	}
	if n := len(w.segs); n > 0 && w.segs[n-1].size == 0 && w.segs[n-1].base == base {
		f, err := os.OpenFile(w.segs[n-1].path, os.O_WRONLY, 0o640)
		if err != nil {
			return fmt.Errorf("opening WAL tail segment: %w", err)
		}
		w.tailFile = f
	} else if err := w.newSegment(base); err != nil {
		return err
	}
	w.rpos = w.ack
	if w.backlog > 0 || repaired {
		w.log.Info("WAL opened with a backlog", "points", w.backlog, "segments", len(w.segs), "bytes", w.diskBytes, "corrupt_regions", w.corruptN)
	}
	return nil
}

// readFile reads a whole file into buf's storage.
func readFile(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return buf, err
	}
	if int64(cap(buf)) < st.Size() {
		buf = make([]byte, st.Size())
	}
	buf = buf[:st.Size()]
	n, err := io.ReadFull(f, buf)
	return buf[:n], err
}

// scan reads one segment's records, recording bad spans, and cuts off an
// unreadable tail. It reports whether anything was repaired.
func (w *WAL) scan(s *segment, data []byte, firstUnacked *int64) (bool, error) {
	off := 0
	repaired := false
	for off < len(data) {
		_, t, n, err := decodeRecord(data[off:], maxPayload)
		if err == nil {
			s.records++
			if s.base+int64(off) < w.ack {
				s.acked++
				s.read++
			} else if *firstUnacked == 0 {
				*firstUnacked = t
			}
			off += n
			continue
		}
		repaired = true
		w.corruptN++
		w.m.corrupt.Inc()
		j := resync(data[off:], maxPayload, true)
		if j < 0 {
			w.log.Warn("WAL segment ends in a torn or corrupt record; cutting it off",
				"segment", s.path, "offset", off, "bytes_cut", len(data)-off)
			if err := os.Truncate(s.path, int64(off)); err != nil {
				return repaired, fmt.Errorf("cutting the torn tail of WAL segment %s: %w", s.path, err)
			}
			break
		}
		w.log.Warn("WAL segment has a corrupt record; skipping it",
			"segment", s.path, "offset", off, "bytes_skipped", j)
		s.bad = append(s.bad, span{int64(off), int64(off + j)})
		off += j
	}
	s.size = int64(off)
	return repaired, nil
}

func segmentName(base int64) string { return fmt.Sprintf("%020d%s", base, segmentExt) }

// newSegment creates the tail segment at base (w.mu held or not yet shared).
func (w *WAL) newSegment(base int64) error {
	path := filepath.Join(w.cfg.Dir, segmentName(base))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("creating WAL segment: %w", err)
	}
	if w.cfg.Sync != SyncNone {
		syncDir(w.cfg.Dir)
	}
	w.segs = append(w.segs, &segment{base: base, path: path})
	w.tailFile = f
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func encodeAck(b []byte, pos int64) {
	binary.LittleEndian.PutUint64(b[0:8], uint64(pos))
	binary.LittleEndian.PutUint64(b[8:16], ^uint64(pos))
	binary.LittleEndian.PutUint32(b[16:20], crc32.Checksum(b[:16], castagnoli))
}

func decodeAck(b []byte) (int64, bool) {
	if crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:20]) {
		return 0, false
	}
	pos := binary.LittleEndian.Uint64(b[0:8])
	if pos != ^binary.LittleEndian.Uint64(b[8:16]) || int64(pos) < 0 {
		return 0, false
	}
	return int64(pos), true
}

// unackedLocked is the backlog in bytes: unacknowledged segment bytes plus
// what waits to be written.
func (w *WAL) unackedLocked() int64 {
	n := w.diskBytes + int64(len(w.pending)) + w.writing
	if len(w.segs) > 0 {
		h := w.segs[0]
		n -= min(max(w.ack-h.base, 0), h.size)
	}
	return n
}

// Append writes one line (copied) to the log. It returns once the line is
// written to the segment file (and fsynced with sync: always); concurrent
// Appends are written together (group commit). When the backlog is at
// MaxBytes, or the disk is full, on_full decides: block waits for space or
// ctx, drop_oldest drops the oldest segment (a full disk with nothing left to
// drop waits too). A write that fails for lack of space is cut off (no torn
// record stays in the segment) and retried every second, or as soon as
// acknowledgements free space, without a restart. An Append whose ctx ends
// while the disk is full returns an error wrapping ErrDiskFull, the ENOSPC
// error (naming the file) and ctx's error; its line was not acknowledged,
// but may still be written with its group (a duplicate if the caller sends
// it again: harmless, InfluxDB keeps one point per series and timestamp).
// Otherwise the wait for a group's write is not cancelled by ctx.
func (w *WAL) Append(ctx context.Context, line []byte) error {
	return w.AppendBatch(ctx, [][]byte{line})
}

// AppendBatch appends lines in order as Append appends one, in one group
// when they fit: one write (and one fsync with sync: always) for all of
// them, where separate Appends from one goroutine cost a write each. A nil
// error means every line is written; on an error some of them may be
// written (a duplicate if the caller sends them again, harmless as above).
func (w *WAL) AppendBatch(ctx context.Context, lines [][]byte) error {
	if len(lines) == 0 {
		return nil
	}
	start := time.Now()
	for _, line := range lines {
		if int64(len(line)) > int64(w.cfg.MaxRecordBytes) {
			return fmt.Errorf("%w: %d bytes, max_record_bytes is %d", ErrTooLarge, len(line), w.cfg.MaxRecordBytes)
		}
	}
	w.mu.Lock()
	first := w.gen
	now := start.UnixNano()
	for _, line := range lines {
		rec := recordSize(len(line))
		for {
			if w.closed || w.closing {
				w.mu.Unlock()
				return ErrClosed
			}
			if !w.flushing && w.pendingN > 0 && (w.diskFull || w.unackedLocked()+rec > int64(w.cfg.MaxBytes)) {
				// About to wait: write what is pending first (this batch's
				// earlier lines among it), or nobody would, and a full
				// disk would wait on this very group.
				w.writeGroup(ctx)
				continue
			}
			if w.diskFull && (w.flushing || w.pendingN > 0) {
				// Another Append's group is being retried: wait for it. When
				// nobody retries, this Append's write is the retry.
			} else if w.unackedLocked()+rec <= int64(w.cfg.MaxBytes) {
				break
			} else if w.cfg.OnFull == DropOldest && w.dropOldestLocked() {
				continue
			}
			if err := w.waitSpaceLocked(ctx); err != nil {
				err = w.gaveUpLocked(err)
				w.mu.Unlock()
				w.m.appendErrors.Inc()
				return err
			}
		}
		if w.pendingN == 0 {
			w.pendingFirst = now
		}
		w.pending = appendRecord(w.pending, now, line)
		w.pendingN++
	}
	my := w.gen
	var stop func() bool
	for w.genDone < my {
		if !w.flushing {
			w.writeGroup(ctx)
			continue
		}
		if w.diskFull {
			if err := ctx.Err(); err != nil {
				err = w.gaveUpLocked(err)
				w.mu.Unlock()
				if stop != nil {
					stop()
				}
				w.m.appendErrors.Inc()
				return err
			}
			if stop == nil && ctx.Done() != nil {
				// Wake this wait when ctx ends (only on a full disk: it
				// allocates).
				stop = context.AfterFunc(ctx, func() {
					w.mu.Lock()
					w.cond.Broadcast()
					w.mu.Unlock()
				})
			}
			w.waiting++
			w.cond.Wait()
			w.waiting--
			continue
		}
		w.cond.Wait()
	}
	// The lines went out in the groups first..my (more than one when a
	// wait for space let other groups be written in between).
	var err error
	lo := first
	if ring := uint64(len(w.errs)); my >= ring && my+1-ring > lo {
		lo = my + 1 - ring // older groups' outcomes are overwritten
	}
	for g := lo; g <= my && err == nil; g++ {
		if e := w.errs[g%uint64(len(w.errs))]; e.gen == g {
			err = e.err
		}
	}
	w.mu.Unlock()
	if stop != nil {
		stop()
	}
	if err != nil {
		w.m.appendErrors.Inc()
		if errors.Is(err, ErrDiskFull) && ctx.Err() != nil {
			return fmt.Errorf("%w; gave up waiting for space: %w", err, ctx.Err())
		}
		return err
	}
	w.m.appendDur.Observe(time.Since(start).Seconds())
	return nil
}

// gaveUpLocked is the error of an Append whose wait ended with err (its
// context's): on a full disk it says so and names the file.
func (w *WAL) gaveUpLocked(err error) error {
	if w.diskFull && w.fullErr != nil {
		return fmt.Errorf("%w (%w); gave up waiting for space: %w", ErrDiskFull, w.fullErr, err)
	}
	return fmt.Errorf("waiting for WAL space (backlog at max_bytes %d): %w", int64(w.cfg.MaxBytes), err)
}

// AddBatch is AppendBatch, for the pipeline's batches.
func (w *WAL) AddBatch(ctx context.Context, lines [][]byte) error { return w.AppendBatch(ctx, lines) }

// Add is Append, so that a *WAL is a pipeline.LineWriter like the InfluxDB
// writer's memory queue.
func (w *WAL) Add(ctx context.Context, line []byte) error { return w.Append(ctx, line) }

// writeGroup writes the pending group, with w.mu held (released during I/O).
// On a full disk it cuts the partial write off and retries: dropping the
// oldest segment under drop_oldest, else waiting for acknowledgements or a
// second, until it succeeds, the log closes or ctx (the leader's; nil:
// never) ends, which fails the group with ErrDiskFull. Other write errors
// fail the group's Appends.
func (w *WAL) writeGroup(ctx context.Context) {
	w.flushing = true
	buf, n, gen, first := w.pending, w.pendingN, w.gen, w.pendingFirst
	w.pending, w.spare = w.spare[:0], nil
	w.pendingN = 0
	w.gen++
	w.writing = int64(len(buf))
	var err error
	for {
		tail := w.segs[len(w.segs)-1]
		err = nil
		if tail.size > 0 && (w.rotate || tail.size+int64(len(buf)) > int64(w.cfg.SegmentBytes)) {
			err = w.rotateLocked()
			tail = w.segs[len(w.segs)-1]
		}
		if err == nil {
			err = w.writeAtLocked(buf, tail.size)
		}
		if err == nil {
			if w.diskFull {
				w.log.Info("WAL writes succeed again", "disk_full_errors", w.fullErrs)
				w.diskFull, w.fullFromSync, w.fullErr = false, false, nil
				w.wakeSpaceLocked()
			}
			break
		}
		if !errors.Is(err, syscall.ENOSPC) {
			w.log.Error("WAL write failed", "error", err, "lines", n)
			err = fmt.Errorf("writing to the WAL: %w", err)
			break
		}
		w.fullErrs++
		w.m.fullErrors.Inc()
		w.fullErr = err
		w.fullFromSync = false
		if !w.diskFull {
			w.diskFull = true
			w.cond.Broadcast() // waiting group members now honour their contexts
		}
		if now := time.Now(); now.Sub(w.lastFullLog) >= w.cfg.LogInterval.D() {
			w.lastFullLog = now
			w.log.Error("WAL disk is full; new lines wait, unacknowledged (or the oldest are dropped with on_full: drop_oldest)",
				"error", err, "backlog_points", w.backlog, "on_full", w.cfg.OnFull)
		}
		if w.closing {
			err = fmt.Errorf("%w (%w); the log is closing", ErrDiskFull, err)
			break
		}
		if w.cfg.OnFull == DropOldest && w.dropOldestLocked() {
			continue
		}
		if werr := w.waitSpaceLocked(ctx); werr != nil {
			err = fmt.Errorf("%w (%w)", ErrDiskFull, err)
			break
		}
	}
	if err == nil {
		tail := w.segs[len(w.segs)-1]
		tail.size += int64(len(buf))
		tail.records += n
		w.diskBytes += int64(len(buf))
		w.backlog += int64(n)
		w.appended += int64(n)
		w.m.appends.Add(float64(n))
		w.dirty = true
		if w.unreadSince == 0 && w.rpos >= tail.base+tail.size-int64(len(buf)) {
			w.unreadSince = first
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	w.errs[gen%uint64(len(w.errs))] = struct {
		gen uint64
		err error
	}{gen, err}
	w.writing = 0
	w.spare = buf[:0]
	w.genDone = gen
	w.flushing = false
	w.cond.Broadcast()
}

// writeAtLocked writes buf at off of the tail file (and fsyncs with sync:
// always), releasing w.mu meanwhile. A failed write is cut off again so that
// the file ends with whole records.
func (w *WAL) writeAtLocked(buf []byte, off int64) error {
	f := w.tailFile
	w.mu.Unlock()
	var syncDur time.Duration
	_, err := f.WriteAt(buf, off)
	if err == nil && w.cfg.Sync == SyncAlways {
		t := time.Now()
		err = f.Sync()
		syncDur = time.Since(t)
	}
	var terr error
	if err != nil {
		terr = f.Truncate(off)
	}
	w.mu.Lock()
	if syncDur > 0 {
		w.m.fsyncDur.Observe(syncDur.Seconds())
	}
	if terr != nil {
		w.log.Error("WAL could not cut off a failed write; starting a new segment", "error", terr)
		w.rotate = true
	}
	return err
}

// rotateLocked seals the tail segment and starts a new one.
func (w *WAL) rotateLocked() error {
	old := w.tailFile
	tail := w.segs[len(w.segs)-1]
	// Always fsynced (unless sync: none): the housekeeping fsync may have
	// taken the dirty flag and then found the file closed.
	if w.cfg.Sync != SyncNone {
		t := time.Now()
		if err := old.Sync(); err != nil {
			return fmt.Errorf("syncing WAL segment: %w", err)
		}
		w.m.fsyncDur.Observe(time.Since(t).Seconds())
		w.dirty = false
	}
	if err := w.newSegment(tail.end()); err != nil {
		return err
	}
	old.Close()
	w.rotate = false
	return nil
}

// dropOldestLocked deletes the oldest segment when it is not the tail,
// counting its unread points as dropped. It reports whether it freed space.
func (w *WAL) dropOldestLocked() bool {
	if len(w.segs) < 2 {
		return false
	}
	s := w.segs[0]
	if err := os.Remove(s.path); err != nil {
		w.log.Error("WAL could not drop its oldest segment", "segment", s.path, "error", err)
		return false
	}
	lost := int64(s.records - s.read)
	w.backlog -= int64(s.records - s.acked)
	w.diskBytes -= s.size
	s.gone = true
	w.segs = w.segs[1:]
	if next := w.segs[0].base; w.ack < next {
		w.ack = next
		w.ackDirty = true
	}
	if w.rpos < w.segs[0].base {
		w.rpos = w.segs[0].base
	}
	w.dropped += lost
	w.dropLogged += lost
	w.m.dropped.Add(float64(lost))
	w.logDropsLocked(false)
	return true
}

func (w *WAL) logDropsLocked(force bool) {
	if w.dropLogged == 0 {
		return
	}
	now := time.Now()
	if !force && now.Sub(w.lastDropLog) < w.cfg.LogInterval.D() {
		return
	}
	w.log.Warn("WAL full: dropped the oldest points (on_full: drop_oldest)",
		"dropped_points", w.dropLogged, "dropped_total", w.dropped, "max_bytes", int64(w.cfg.MaxBytes), "disk_full", w.diskFull)
	w.dropLogged = 0
	w.lastDropLog = now
}

// housekeeping fsyncs every SyncInterval (sync: interval), persists the ack
// position and logs pending drop counts.
func (w *WAL) housekeeping() {
	defer w.wg.Done()
	t := time.NewTicker(w.cfg.SyncInterval.D())
	defer t.Stop()
	for {
		select {
		case <-w.done:
			return
		case <-t.C:
		}
		w.mu.Lock()
		f := w.tailFile
		syncNow := w.cfg.Sync == SyncInterval && w.dirty
		if syncNow {
			w.dirty = false
		}
		if time.Since(w.lastDropLog) >= w.cfg.LogInterval.D() {
			w.logDropsLocked(true)
		}
		w.flushAckLocked()
		w.mu.Unlock()
		if syncNow {
			start := time.Now()
			err := f.Sync()
			w.m.fsyncDur.Observe(time.Since(start).Seconds())
			w.syncDone(f, err)
		}
	}
}

// syncDone records the outcome of a background fsync of f. A failed one is
// not ignored: it is logged, counted and retried at the next tick (the lines
// are in the page cache: a process crash loses nothing, a power cut may); a
// full disk is reported as such until a write or fsync succeeds.
func (w *WAL) syncDone(f *os.File, err error) {
	if errors.Is(err, os.ErrClosed) {
		return // rotated meanwhile: rotateLocked fsynced it
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		if w.fullFromSync && !w.flushing {
			w.log.Info("WAL fsync succeeds again")
			w.diskFull, w.fullFromSync, w.fullErr = false, false, nil
			w.wakeSpaceLocked()
		}
		return
	}
	w.fsyncErrs++
	w.m.fsyncErrors.Inc()
	if f == w.tailFile {
		w.dirty = true
	}
	w.log.Error("WAL fsync failed; retrying", "file", f.Name(), "error", err)
	if errors.Is(err, syscall.ENOSPC) {
		w.fullErrs++
		w.m.fullErrors.Inc()
		if !w.diskFull {
			w.fullFromSync = true
		}
		w.diskFull, w.fullErr = true, err
	}
}

// flushAckLocked writes the ack position when it changed. It is not
// fsynced: a stale ack position only means a replay InfluxDB deduplicates.
func (w *WAL) flushAckLocked() {
	if !w.ackDirty || w.ackFile == nil {
		return
	}
	encodeAck(w.ackBuf[:], w.ack)
	if _, err := w.ackFile.WriteAt(w.ackBuf[:], 0); err != nil {
		w.log.Warn("WAL could not record its acknowledged position", "error", err)
		return
	}
	w.ackDirty = false
}

// waitSpaceLocked waits (w.mu held, released meanwhile) until
// acknowledgements free space, the log closes, a second passes (to retry a
// full disk) or ctx ends (nil: never).
func (w *WAL) waitSpaceLocked(ctx context.Context) error {
	if w.space == nil {
		w.space = make(chan struct{})
	}
	space := w.space
	w.waiting++
	w.mu.Unlock()
	t := time.NewTimer(time.Second)
	var cancel <-chan struct{}
	if ctx != nil {
		cancel = ctx.Done()
	}
	var err error
	select {
	case <-space:
	case <-t.C:
	case <-cancel:
		err = fmt.Errorf("waiting for WAL space: %w", ctx.Err())
	}
	t.Stop()
	w.mu.Lock()
	w.waiting--
	return err
}

// wakeSpaceLocked wakes the Appends waiting for space.
func (w *WAL) wakeSpaceLocked() {
	if w.space != nil {
		close(w.space)
		w.space = nil
	}
}

// Stats returns a snapshot of the log's state.
func (w *WAL) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := Stats{
		Bytes:    w.diskBytes,
		Segments: len(w.segs),
		Backlog:  w.backlog,
		Appended: w.appended,
		Drained:  w.drained,
		Dropped:  w.dropped,
		Corrupt:  w.corruptN,
		DiskFull: w.diskFull,
		InFlight: len(w.inflight),

		DiskFullErrors: w.fullErrs,
		FsyncErrors:    w.fsyncErrs,
		Waiting:        w.waiting,
	}
	if s.Backlog > 0 {
		if t := w.oldestLocked(); t > 0 {
			s.BacklogAge = max(time.Since(time.Unix(0, t)), 0)
		}
	}
	return s
}

// oldestLocked is the append time of the oldest unacknowledged record, 0
// when unknown.
func (w *WAL) oldestLocked() int64 {
	if len(w.inflight) > 0 {
		return w.inflight[0].first
	}
	if w.building != nil && w.building.Points > 0 {
		return w.building.Ref.(*batchRef).first
	}
	return w.unreadSince
}

// Ready reports whether the log accepts lines without waiting: not closed,
// the disk not full, the backlog under MaxBytes. For the readiness probe.
func (w *WAL) Ready() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closed:
		return ErrClosed
	case w.diskFull:
		return fmt.Errorf("WAL disk is full (%v); appends wait for space, unacknowledged", w.fullErr)
	case w.cfg.OnFull == Block && w.unackedLocked() >= int64(w.cfg.MaxBytes)*95/100:
		return fmt.Errorf("WAL backlog at its bound (%d bytes)", int64(w.cfg.MaxBytes))
	}
	return nil
}

// Dir returns the log's directory.
func (w *WAL) Dir() string { return w.cfg.Dir }

// Close writes what is pending, fsyncs, and closes the files. Appends and
// Next calls after Close fail with ErrClosed.
func (w *WAL) Close() error {
	w.mu.Lock()
	if w.closed || w.closing {
		w.mu.Unlock()
		return ErrClosed
	}
	w.closing = true
	w.wakeSpaceLocked()
	for w.flushing {
		w.cond.Wait()
	}
	if w.pendingN > 0 {
		w.writeGroup(nil)
	}
	w.closed = true
	w.cond.Broadcast()
	w.wakeSpaceLocked()
	w.flushAckLocked()
	var errs []error
	if err := w.tailFile.Sync(); err != nil {
		errs = append(errs, fmt.Errorf("syncing WAL segment: %w", err))
	}
	errs = append(errs, w.tailFile.Close())
	if w.ackFile != nil {
		errs = append(errs, w.ackFile.Close())
		w.ackFile = nil
	}
	if w.rfile != nil {
		w.rfile.Close()
		w.rfile = nil
	}
	w.logDropsLocked(true)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	close(w.done)
	w.wg.Wait()
	errs = append(errs, w.lock.Close())
	return errors.Join(errs...)
}
