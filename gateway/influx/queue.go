package influx

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Batch is a run of encoded lines sent to InfluxDB in one request.
type Batch struct {
	Lines  []byte // line protocol, each line terminated by '\n'
	Points int    // number of lines in Lines
	// Ref is the source's own handle on the batch (a WAL position, say); the
	// Writer never looks at it.
	Ref any
}

// BatchSource supplies the batches a Writer drains, in order. The Writer's
// in-memory queue is one; issue 5's write-ahead log reader is another.
type BatchSource interface {
	// Next returns the next batch to write. Unless flush is set it waits
	// until a batch is due (full, or its oldest line FlushInterval old) and
	// returns ctx's error if ctx ends first. With flush set it returns what
	// is pending at once, a partial batch included, or nil when nothing is.
	Next(ctx context.Context, flush bool) (*Batch, error)
	// Done hands back a batch the Writer has finished with: InfluxDB accepted
	// it (wholly or partly, the rest rejected for good) or the Writer gave up
	// on it during shutdown (see Writer.Drain). The source may reuse it.
	Done(b *Batch, written bool)
}

// ErrClosed is returned by Add once the writer has shut down.
var ErrClosed = errors.New("influx writer closed")

// memQueue is the Writer's bounded in-memory BatchSource: lines are appended
// to the current batch, which is sealed when full or FlushInterval old.
// Sealed batches wait in a FIFO of at most maxPending; when it is full, Add
// blocks (backpressure) until the writer takes a batch.
type memQueue struct {
	batchSize  int
	interval   time.Duration
	maxPending int

	mu       sync.Mutex
	cur      *Batch
	curStart time.Time
	full     []*Batch
	free     []*Batch
	seal     bool          // Flush asked for the current batch now
	closed   bool          // no more Adds
	space    chan struct{} // closed and replaced when a sealed batch is taken
	wake     chan struct{} // cap 1: something for Next to look at
	timer    *time.Timer   // Next's, reused
}

func newMemQueue(batchSize, maxPending int, interval time.Duration) *memQueue {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &memQueue{
		batchSize:  batchSize,
		interval:   interval,
		maxPending: maxPending,
		space:      make(chan struct{}),
		wake:       make(chan struct{}, 1),
		timer:      t,
		full:       make([]*Batch, 0, maxPending),
	}
}

func (q *memQueue) notify() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// add copies line into the current batch, blocking while the queue is at its
// bound. It reports whether it had to wait.
func (q *memQueue) add(ctx context.Context, line []byte) (waited bool, err error) {
	q.mu.Lock()
	for {
		if q.closed {
			q.mu.Unlock()
			return waited, ErrClosed
		}
		if q.cur != nil || len(q.full) < q.maxPending {
			break
		}
		space := q.space
		q.mu.Unlock()
		waited = true
		select {
		case <-space:
		case <-ctx.Done():
			return waited, ctx.Err()
		}
		q.mu.Lock()
	}
	if q.cur == nil {
		if n := len(q.free); n > 0 {
			q.cur = q.free[n-1]
			q.free = q.free[:n-1]
		} else {
			q.cur = &Batch{Lines: make([]byte, 0, q.batchSize*128)}
		}
		q.curStart = time.Now()
		q.notify()
	}
	b := q.cur
	b.Lines = append(b.Lines, line...)
	if len(line) == 0 || line[len(line)-1] != '\n' {
		b.Lines = append(b.Lines, '\n')
	}
	b.Points++
	if b.Points >= q.batchSize {
		q.full = append(q.full, b)
		q.cur = nil
		q.notify()
	}
	q.mu.Unlock()
	return waited, nil
}

// Next implements BatchSource.
func (q *memQueue) Next(ctx context.Context, flush bool) (*Batch, error) {
	for {
		q.mu.Lock()
		if len(q.full) > 0 {
			b := q.full[0]
			n := copy(q.full, q.full[1:])
			q.full[n] = nil
			q.full = q.full[:n]
			close(q.space)
			q.space = make(chan struct{})
			q.mu.Unlock()
			return b, nil
		}
		var wait time.Duration = -1
		if b := q.cur; b != nil && b.Points > 0 {
			age := time.Since(q.curStart)
			if flush || q.seal || q.closed || age >= q.interval {
				q.cur = nil
				q.seal = false
				close(q.space)
				q.space = make(chan struct{})
				q.mu.Unlock()
				return b, nil
			}
			wait = q.interval - age
		}
		q.seal = false
		q.mu.Unlock()
		if flush {
			return nil, nil
		}
		var tc <-chan time.Time
		if wait >= 0 {
			q.timer.Reset(wait)
			tc = q.timer.C
		}
		select {
		case <-q.wake:
		case <-tc:
		case <-ctx.Done():
			q.timer.Stop()
			return nil, ctx.Err()
		}
		q.timer.Stop()
	}
}

// Done implements BatchSource: the batch's buffer is kept for reuse.
func (q *memQueue) Done(b *Batch, _ bool) {
	b.Lines = b.Lines[:0]
	b.Points = 0
	b.Ref = nil
	q.mu.Lock()
	if len(q.free) < 2 {
		q.free = append(q.free, b)
	}
	q.mu.Unlock()
}

// sealNow asks Next to hand out the current batch without waiting.
func (q *memQueue) sealNow() {
	q.mu.Lock()
	q.seal = true
	q.mu.Unlock()
	q.notify()
}

// close refuses further lines and wakes blocked Adds.
func (q *memQueue) close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.space)
		q.space = make(chan struct{})
	}
	q.mu.Unlock()
	q.notify()
}
