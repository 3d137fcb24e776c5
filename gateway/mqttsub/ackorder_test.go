package mqttsub

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// orderMsg is a message that records when it is acknowledged.
type orderMsg struct {
	inMsg
	id  int
	log *ackLog
}

func (m *orderMsg) Ack() { m.log.add(m.id) }

// ackLog is the order acknowledgements were sent in.
type ackLog struct {
	mu  sync.Mutex
	ids []int
}

func (l *ackLog) add(id int) {
	l.mu.Lock()
	l.ids = append(l.ids, id)
	l.mu.Unlock()
}

func (l *ackLog) get() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ids)
}

func TestAckQueueOrder(t *testing.T) {
	type step struct {
		finish int  // message index, in arrival order
		ack    bool // false: refused, held back or stale
		acked  []int
	}
	cases := []struct {
		name  string
		n     int
		steps []step
	}{
		{"in order", 3, []step{{0, true, []int{0}}, {1, true, []int{0, 1}}, {2, true, []int{0, 1, 2}}}},
		{"a later message waits for an older one", 3, []step{
			{2, true, nil}, {1, true, nil}, {0, true, []int{0, 1, 2}}}},
		{"an unacknowledged message lets the later ones go", 4, []step{
			{1, true, nil}, {0, false, []int{1}}, {3, true, []int{1}}, {2, true, []int{1, 2, 3}}}},
		{"only the finished prefix goes", 5, []step{
			{0, true, []int{0}}, {3, true, []int{0}}, {1, true, []int{0, 1}}, {4, false, []int{0, 1}}, {2, true, []int{0, 1, 2, 3}}}},
		{"none acknowledged", 2, []step{{1, false, nil}, {0, false, nil}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var q ackQueue
			log := &ackLog{}
			seqs := make([]uint64, c.n)
			for i := range c.n {
				seqs[i] = q.add(&orderMsg{id: i, log: log})
			}
			for k, st := range c.steps {
				q.done(seqs[st.finish], st.ack)
				if got := log.get(); !slices.Equal(got, st.acked) {
					t.Fatalf("after step %d (message %d finished, ack %v): acknowledged %v, want %v", k, st.finish, st.ack, got, st.acked)
				}
			}
			if q.n != 0 {
				t.Errorf("%d messages still registered after all finished", q.n)
			}
		})
	}
}

// Messages registered in order and finished by many goroutines in any order
// are acknowledged once each, in registration order, while the ring grows
// and wraps.
func TestAckQueueConcurrent(t *testing.T) {
	const total, workers = 20000, 8
	var q ackQueue
	log := &ackLog{}
	work := make([]chan uint64, workers)
	var wg sync.WaitGroup
	skip := func(seq uint64) bool { return seq%7 == 3 }
	for i := range work {
		work[i] = make(chan uint64, 16)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var batch []uint64
			for seq := range work[i] {
				if skip(seq) {
					q.done(seq, false)
					continue
				}
				// Sometimes finish a few together, as a worker's batch does.
				if batch = append(batch, seq); len(batch) >= 1+rand.IntN(4) {
					q.doneAll(batch)
					batch = batch[:0]
				}
			}
			q.doneAll(batch)
		}()
	}
	for i := range total {
		seq := q.add(&orderMsg{id: i, log: log})
		if seq != uint64(i) {
			t.Fatalf("message %d got sequence number %d", i, seq)
		}
		work[rand.IntN(workers)] <- seq
	}
	for _, ch := range work {
		close(ch)
	}
	wg.Wait()
	got := log.get()
	var want []int
	for i := range total {
		if !skip(uint64(i)) {
			want = append(want, i)
		}
	}
	if !slices.Equal(got, want) {
		for k := range min(len(got), len(want)) {
			if got[k] != want[k] {
				t.Fatalf("acknowledgement %d is of message %d, want %d (%d sent, want %d)", k, got[k], want[k], len(got), len(want))
			}
		}
		t.Fatalf("%d acknowledgements, want %d", len(got), len(want))
	}
}

func TestAckQueueFinishedTwicePanics(t *testing.T) {
	var q ackQueue
	log := &ackLog{}
	a := q.add(&orderMsg{id: 0, log: log})
	q.add(&orderMsg{id: 1, log: log})
	q.done(a, true)
	defer func() {
		if recover() == nil {
			t.Error("finishing a released message did not panic")
		}
	}()
	q.done(a, true)
}

// gaugeMsg checks, as it is acknowledged, that citygw_mqtt_unacked still
// counts it and every message behind it.
type gaugeMsg struct {
	inMsg
	t     *testing.T
	g     prometheus.Gauge
	least float64
}

func (m *gaugeMsg) Ack() {
	if got := testutil.ToFloat64(m.g); got < m.least {
		m.t.Errorf("citygw_mqtt_unacked = %v while acknowledging a message with %v unacknowledged", got, m.least)
	}
}

// The gauge falls only once the acknowledgements went to paho: a message
// finished early waits in it for the older ones.
func TestAckQueueGaugeNeverLow(t *testing.T) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "citygw_mqtt_unacked"})
	q := ackQueue{unacked: g}
	const n = 5
	seqs := make([]uint64, n)
	for i := range n {
		seqs[i] = q.add(&gaugeMsg{t: t, g: g, least: float64(n - i)})
	}
	for i := n - 1; i >= 0; i-- { // the oldest last: all five go at once
		q.done(seqs[i], true)
	}
	if got := testutil.ToFloat64(g); got != 0 {
		t.Errorf("citygw_mqtt_unacked = %v after every message was acknowledged", got)
	}
}
