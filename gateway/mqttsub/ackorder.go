package mqttsub

import (
	"sync"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
)

// ackQueue sends the acknowledgements of one subscriber in the order its
// messages arrived, whatever order the workers finish them in.
//
// MQTT 3.1.1 (4.6.0-2) says a client MUST send PUBACKs in the order the
// PUBLISHes were received, and Mosquitto 2.0.11 (Debian's) relies on it: with
// acks out of order it sometimes sends a newly published message at once,
// ahead of the older messages it had queued for the client, so one asset's
// readings arrive out of order. Seen in TestPerAssetOrderWithWorkers under
// load, and in Mosquitto's own log ("Received PUBLISH m237", then at once
// "Sending PUBLISH m237" while m211..m236 were still queued); in 300 runs of
// a probe that acked shuffled batches, 4 runs saw readings out of order, in
// 300 runs acking in order none did.
//
// The router registers each message with add as it routes it; a worker
// reports it finished with done (ack or not: refused, held back and stale
// messages are not acknowledged). The finished prefix is then acknowledged,
// skipping the messages not to be acknowledged, by one goroutine at a time
// (the one that finished the oldest message), outside the lock: paho's Ack
// may block while its connection is busy, and the other workers only mark
// theirs finished and carry on.
type ackQueue struct {
	mu       sync.Mutex
	ring     []ackSlot // circular, len a power of two (or 0)
	head     int       // index in ring of the oldest message not yet released
	n        int       // messages registered and not yet released
	first    uint64    // sequence number of ring[head]
	draining bool      // a goroutine is acknowledging the finished prefix
	out      []mqtt.Message
	// unacked, if set, follows n (citygw_mqtt_unacked).
	unacked prometheus.Gauge
}

// ackSlot is one registered message.
type ackSlot struct {
	msg   mqtt.Message
	state ackState
}

type ackState uint8

const (
	ackPending ackState = iota // not finished yet
	ackSend                    // finished, to be acknowledged
	ackSkip                    // finished, not to be acknowledged
)

// add registers msg, the latest message to arrive, and returns its sequence
// number for done. Only paho's router goroutine calls it, in arrival order.
func (q *ackQueue) add(msg mqtt.Message) uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == len(q.ring) {
		q.grow()
	}
	q.ring[(q.head+q.n)&(len(q.ring)-1)] = ackSlot{msg: msg}
	q.n++
	if q.unacked != nil {
		q.unacked.Inc()
	}
	return q.first + uint64(q.n-1)
}

// grow doubles the ring, keeping the registered messages in order.
func (q *ackQueue) grow() {
	ring := make([]ackSlot, max(64, 2*len(q.ring)))
	for i := range q.n {
		ring[i] = q.ring[(q.head+i)&(len(q.ring)-1)]
	}
	q.ring, q.head = ring, 0
}

// done marks message seq finished: to be acknowledged when ack is true.
func (q *ackQueue) done(seq uint64, ack bool) {
	q.mu.Lock()
	q.mark(seq, ack)
	q.release()
}

// doneAll marks messages finished and to be acknowledged.
func (q *ackQueue) doneAll(seqs []uint64) {
	q.mu.Lock()
	for _, seq := range seqs {
		q.mark(seq, true)
	}
	q.release()
}

// mark records seq's outcome; q.mu is held.
func (q *ackQueue) mark(seq uint64, ack bool) {
	i := seq - q.first
	if seq < q.first || i >= uint64(q.n) {
		panic("mqttsub: acknowledgement of a message not registered or already released")
	}
	s := &q.ring[(q.head+int(i))&(len(q.ring)-1)]
	if s.state != ackPending {
		panic("mqttsub: message finished twice")
	}
	s.state = ackSkip
	if ack {
		s.state = ackSend
	}
}

// release acknowledges the finished prefix unless another goroutine is
// already doing so (it will see what was marked meanwhile). q.mu is held on
// entry and released on return.
func (q *ackQueue) release() {
	if q.draining {
		q.mu.Unlock()
		return
	}
	q.draining = true
	for {
		out := q.out[:0]
		n := q.n
		for q.n > 0 {
			s := &q.ring[q.head]
			if s.state == ackPending {
				break
			}
			if s.state == ackSend {
				out = append(out, s.msg)
			}
			*s = ackSlot{}
			q.head = (q.head + 1) & (len(q.ring) - 1)
			q.n--
			q.first++
		}
		released := n - q.n
		if len(out) == 0 {
			q.draining = false
			q.out = out
			q.mu.Unlock()
			q.lower(released)
			return
		}
		q.mu.Unlock() // q.out is the drainer's: no one else touches it meanwhile
		for k, m := range out {
			m.Ack()
			out[k] = nil
		}
		q.lower(released) // after the acks went to paho: the gauge does not read low
		q.mu.Lock()
		q.out = out
	}
}

// lower takes released messages off citygw_mqtt_unacked.
func (q *ackQueue) lower(released int) {
	if q.unacked != nil && released > 0 {
		q.unacked.Sub(float64(released))
	}
}
