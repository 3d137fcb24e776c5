package sim

import (
	"sync"
	"time"

	"github.com/citygw/citygw/firmware-sim/city"
	"github.com/citygw/citygw/firmware-sim/faults"
)

// BinDevice is a simulated waste-bin sensor publishing over MQTT and the
// messages it published lately.
type BinDevice struct {
	Bin   *city.Bin
	Topic string

	mu   sync.Mutex
	msgs []message // ring of published messages
	next int
	n    int
}

type message struct {
	ts      int64 // unix ms, the payload's ts
	silent  bool
	payload []byte
}

func (b *BinDevice) record(ts int64, payload []byte) {
	b.mu.Lock()
	m := &b.msgs[b.next]
	m.ts = ts
	m.payload = append(m.payload[:0], payload...)
	b.next = (b.next + 1) % len(b.msgs)
	if b.n < len(b.msgs) {
		b.n++
	}
	b.mu.Unlock()
}

func (b *BinDevice) each(fn func(m *message)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	start := (b.next - b.n + len(b.msgs)) % len(b.msgs)
	for k := 0; k < b.n; k++ {
		fn(&b.msgs[(start+k)%len(b.msgs)])
	}
}

// Len implements mqttpub.Source.
func (e *Engine) Len() int { return len(e.bins) }

// Topic implements mqttpub.Source.
func (e *Engine) Topic(i int) string { return e.bins[i].Topic }

// Message implements mqttpub.Source: bin i's message at wall time now,
// appended to buf, or false when the bin is silent. It is called from one
// goroutine.
func (e *Engine) Message(i int, now time.Time, buf []byte) ([]byte, bool) {
	b := e.bins[i]
	eff := e.faults.Effects(b.Bin.Asset.ID, now)
	if eff.Has(faults.Silent) {
		return buf, false
	}
	sim := e.SimAt(now)
	env := e.city.Env(sim, now, 0, sim.Sub(e.simStart).Seconds(), now.Sub(e.wallStart).Seconds())
	buf = b.Bin.Payload(&env, &eff, buf)
	b.record(now.UnixMilli(), buf)
	return buf, true
}
