package wal

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"time"

	"github.com/citygw/citygw/gateway/influx"
)

var _ influx.BatchSource = (*WAL)(nil)

// Next implements influx.BatchSource: the next batch of lines from the
// oldest unread position. Unless flush is set it waits until a batch is due:
// BatchSize lines (up to MaxBatchLines or MaxBatchBytes when a backlog is
// there to read at once), or its oldest line FlushInterval old. With flush it
// returns what there is, or nil. After a batch was given back unwritten (the
// writer's shutdown), it hands out nothing more: the rest is drained after
// the next Open.
func (w *WAL) Next(ctx context.Context, flush bool) (*influx.Batch, error) {
	w.mu.Lock()
	for {
		if w.closed {
			w.mu.Unlock()
			return nil, ErrClosed
		}
		if w.stalled {
			w.mu.Unlock()
			if flush {
				return nil, nil
			}
			<-ctx.Done()
			return nil, ctx.Err()
		}
		if w.building == nil {
			w.building = w.newBatchLocked()
		}
		b := w.building
		full, err := w.fillLocked(b)
		if err != nil {
			w.mu.Unlock()
			return nil, err
		}
		if w.building != b { // the log closed meanwhile
			continue
		}
		ref := b.Ref.(*batchRef)
		var wait time.Duration = -1
		if b.Points > 0 {
			age := time.Since(time.Unix(0, ref.first))
			if full || flush || b.Points >= w.cfg.BatchSize || age >= w.cfg.FlushInterval.D() {
				w.building = nil
				ref.end = w.rpos
				w.inflight = append(w.inflight, ref)
				w.mu.Unlock()
				return b, nil
			}
			wait = min(max(w.cfg.FlushInterval.D()-age, time.Millisecond), w.cfg.FlushInterval.D())
		}
		w.mu.Unlock()
		if flush {
			return nil, nil
		}
		var tc <-chan time.Time
		var t *time.Timer
		if wait > 0 {
			t = time.NewTimer(wait)
			tc = t.C
		}
		select {
		case <-w.wake:
		case <-tc:
		case <-ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		w.mu.Lock()
	}
}

func (w *WAL) newBatchLocked() *influx.Batch {
	if n := len(w.free); n > 0 {
		b := w.free[n-1]
		w.free = w.free[:n-1]
		return b
	}
	return &influx.Batch{Lines: make([]byte, 0, 64<<10), Ref: &batchRef{}}
}

// segmentAtLocked returns the segment holding the log position rpos, moving
// rpos over gaps between segments; nil when rpos is at the end of the log.
func (w *WAL) segmentAtLocked() *segment {
	for i, s := range w.segs {
		if w.rpos < s.base {
			w.rpos = s.base
		}
		if w.rpos < s.end() || i == len(w.segs)-1 {
			return s
		}
	}
	return nil
}

// fillLocked reads records after rpos into b until a limit is reached (it
// then reports full) or everything written is read. w.mu is released during
// file reads.
func (w *WAL) fillLocked(b *influx.Batch) (full bool, err error) {
	ref := b.Ref.(*batchRef)
	maxLines, maxBytes := w.cfg.MaxBatchLines, int(w.cfg.MaxBatchBytes)
	var last int64 // append time of the last record read
	for {
		if b.Points >= maxLines {
			full = true
			break
		}
		s := w.segmentAtLocked()
		if s == nil || w.closed {
			break
		}
		off := w.rpos - s.base
		avail := s.size - off
		if avail <= 0 {
			break // the tail, all read
		}
		if sp, ok := s.badAt(off); ok {
			w.rpos = s.base + sp.to
			continue
		}
		f, err := w.readerFileLocked(s)
		if err != nil {
			return false, err
		}
		chunk := min(avail, int64(len(w.rbuf)))
		buf := w.rbuf[:chunk]
		w.mu.Unlock()
		n, rerr := f.ReadAt(buf, off)
		w.mu.Lock()
		if s.gone || w.closed || w.rpos != s.base+off {
			continue // dropped meanwhile
		}
		if rerr != nil && n < len(buf) {
			return false, fmt.Errorf("reading WAL segment %s: %w", s.path, rerr)
		}
		consumed, k := 0, 0
		var derr error
		for consumed < n {
			payload, t, rn, e := decodeRecord(buf[consumed:n], maxPayload)
			if e != nil {
				derr = e
				break
			}
			need := len(payload)
			if need == 0 || payload[need-1] != '\n' {
				need++
			}
			if b.Points > 0 && len(b.Lines)+need > maxBytes {
				full = true
				break
			}
			if b.Points == 0 {
				ref.first = t
			}
			last = t
			b.Lines = append(b.Lines, payload...)
			if need > len(payload) {
				b.Lines = append(b.Lines, '\n')
			}
			b.Points++
			k++
			consumed += rn
			if b.Points >= maxLines {
				full = true
				break
			}
		}
		w.rpos += int64(consumed)
		if k > 0 {
			s.read += k
			if np := len(ref.parts); np > 0 && ref.parts[np-1].seg == s {
				ref.parts[np-1].n += k
			} else {
				ref.parts = append(ref.parts, part{s, k})
			}
		}
		if full {
			break
		}
		if derr == nil {
			continue
		}
		if derr == errShort && consumed == 0 {
			// A record larger than the read buffer, or a length that runs
			// past what was written (corruption).
			if len(buf) >= headerSize {
				size := int64(headerSize) + int64(binary.LittleEndian.Uint32(buf[4:8]))
				if size > int64(len(buf)) && size <= avail {
					w.rbuf = make([]byte, size)
					continue
				}
			}
		} else if derr == errShort {
			continue // the next chunk starts at that record
		}
		if err := w.skipCorruptLocked(s, f, off+int64(consumed)); err != nil {
			return false, err
		}
	}
	// Caught up, or stopped short: what is unread is at least as young as
	// the last record read.
	if s := w.segmentAtLocked(); s == nil || w.rpos >= s.end() && s == w.segs[len(w.segs)-1] {
		w.unreadSince = 0
	} else if last > 0 {
		w.unreadSince = last
	}
	return full, nil
}

// skipCorruptLocked handles an unreadable record at segment offset off that
// the scan at Open did not know of (damage while running): it is skipped up
// to the next valid record of what was written, counted and logged.
func (w *WAL) skipCorruptLocked(s *segment, f *os.File, off int64) error {
	rest := make([]byte, s.size-off)
	w.mu.Unlock()
	n, err := f.ReadAt(rest, off)
	w.mu.Lock()
	if err != nil && n < len(rest) {
		return fmt.Errorf("reading WAL segment %s: %w", s.path, err)
	}
	j := resync(rest, maxPayload, true)
	if j < 0 {
		j = len(rest)
	}
	if s.gone || w.rpos != s.base+off {
		return nil
	}
	s.bad = append(s.bad, span{off, off + int64(j)})
	w.corruptN++
	w.m.corrupt.Inc()
	w.log.Warn("WAL segment has a corrupt record; skipping it", "segment", s.path, "offset", off, "bytes_skipped", j)
	w.rpos += int64(j)
	return nil
}

func (s *segment) badAt(off int64) (span, bool) {
	for _, sp := range s.bad {
		if sp.from == off {
			return sp, true
		}
	}
	return span{}, false
}

// readerFileLocked returns the reader's file handle on s.
func (w *WAL) readerFileLocked(s *segment) (*os.File, error) {
	if w.rfileSeg == s && w.rfile != nil {
		return w.rfile, nil
	}
	if w.rfile != nil {
		w.rfile.Close()
		w.rfile = nil
	}
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("opening WAL segment for reading: %w", err)
	}
	w.rfile, w.rfileSeg = f, s
	return f, nil
}

// Done implements influx.BatchSource. A written batch is acknowledged: the
// ack position moves past it and segments wholly acknowledged are deleted.
// A batch given back unwritten (the writer's shutdown) stops the reader; its
// lines are drained again after the next Open.
func (w *WAL) Done(b *influx.Batch, written bool) {
	ref := b.Ref.(*batchRef)
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, r := range w.inflight {
		if r == ref {
			copy(w.inflight[i:], w.inflight[i+1:])
			w.inflight[len(w.inflight)-1] = nil
			w.inflight = w.inflight[:len(w.inflight)-1]
			break
		}
	}
	if !written || w.stalled {
		if !w.stalled {
			w.log.Warn("InfluxDB writer gave a WAL batch back unwritten; the rest is drained after a restart", "points", b.Points)
		}
		w.stalled = true
	} else {
		for _, p := range ref.parts {
			if !p.seg.gone {
				p.seg.acked += p.n
				w.backlog -= int64(p.n)
			}
		}
		if ref.end > w.ack {
			w.ack = ref.end
			w.ackDirty = true
		}
		w.drained += int64(b.Points)
		w.m.drained.Add(float64(b.Points))
		w.truncateLocked()
		w.flushAckLocked()
		w.wakeSpaceLocked()
	}
	b.Lines = b.Lines[:0]
	b.Points = 0
	ref.parts = ref.parts[:0]
	ref.first, ref.end = 0, 0
	if len(w.free) < 2 && cap(b.Lines) <= int(w.cfg.MaxBatchBytes)+int(w.cfg.MaxRecordBytes)+1 {
		w.free = append(w.free, b)
	}
}

// truncateLocked deletes the oldest segments while they are wholly read and
// acknowledged; the tail stays.
func (w *WAL) truncateLocked() {
	for len(w.segs) > 1 {
		s := w.segs[0]
		if s.acked < s.records || w.rpos < s.end() {
			return
		}
		if err := os.Remove(s.path); err != nil {
			w.log.Error("WAL could not delete an acknowledged segment", "segment", s.path, "error", err)
			return
		}
		if w.rfileSeg == s && w.rfile != nil {
			w.rfile.Close()
			w.rfile, w.rfileSeg = nil, nil
		}
		s.gone = true
		w.diskBytes -= s.size
		w.segs = w.segs[1:]
	}
}
