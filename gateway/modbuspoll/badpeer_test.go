package modbuspoll

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
)

// misbehaviour is how a unit behind a badPeer answers the reads it
// misbehaves on.
type misbehaviour int

const (
	healthy        misbehaviour = iota
	dead                        // reads the request, never replies
	slow                        // the right reply, after the unit's delay
	exception                   // an exception reply with the unit's code
	wrongTID                    // the reply's transaction id is the request's + 1
	staleTID                    // a reply with the previous transaction id (a late answer left in the socket), then the right one
	wrongUnit                   // the reply carries unit id 1 instead of the unit's
	wrongProtocol               // protocol id 1
	wrongFunction               // function code + 1
	truncated                   // the MBAP length announces the whole reply, 3 bytes fewer come, the connection stays open
	truncatedClose              // as truncated, then the connection is closed
	byteCountOff                // the byte count field is one more than the data that follows
	short                       // a well-framed reply with one register (or bit byte) less than asked for
	long                        // one register (or bit byte) more
	zeroLength                  // MBAP length 0
	bareException               // an exception reply without its exception code
)

// peerUnit is one unit id behind a badPeer.
type peerUnit struct {
	state *unitState // the tables served (server_test.go)
	how   misbehaviour
	only  devices.Table // misbehave on reads of this table only ("" = all)
	code  byte          // exception code
	delay time.Duration // for slow
	reqs  int           // requests received
}

// badPeer is a Modbus TCP server written for the poller's bad-input tests:
// it speaks MBAP on a loopback port, serves registers for healthy unit ids
// and misbehaves per unit id on purpose. It counts the connections it
// accepted, so a test can see the poller resynchronise by reconnecting.
type badPeer struct {
	t    testing.TB
	addr string
	ln   net.Listener
	done chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	units    map[uint8]*peerUnit
	conns    map[net.Conn]bool
	accepted int
}

func newBadPeer(t testing.TB) *badPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &badPeer{t: t, addr: ln.Addr().String(), ln: ln, done: make(chan struct{}),
		units: map[uint8]*peerUnit{}, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.stop)
	return p
}

// unit adds (or replaces) unit id, serving vals of profile pr (by profile
// field), and returns what the poller should decode.
func (p *badPeer) unit(id uint8, pr *devices.Profile, vals []devices.Value, u peerUnit) []devices.Value {
	p.t.Helper()
	u.state = &unitState{}
	want := encodeUnit(p.t, u.state, pr, vals)
	p.mu.Lock()
	p.units[id] = &u
	p.mu.Unlock()
	return want
}

func (p *badPeer) requests(id uint8) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u := p.units[id]; u != nil {
		return u.reqs
	}
	return 0
}

func (p *badPeer) connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

func (p *badPeer) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	close(p.done)
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *badPeer) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[c] = true
		p.accepted++
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c)
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
			c.Close()
		}()
	}
}

// serve answers the requests of one connection in order.
func (p *badPeer) serve(c net.Conn) {
	var prevTID uint16
	for {
		var hdr [7]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		tid, n, unit := binary.BigEndian.Uint16(hdr[:]), int(binary.BigEndian.Uint16(hdr[4:])), hdr[6]
		if n < 2 || n > 254 {
			return
		}
		pdu := make([]byte, n-1)
		if _, err := io.ReadFull(c, pdu); err != nil {
			return
		}
		if len(pdu) != 5 {
			return // not a read request: the poller sends nothing else
		}
		fc, start, qty := pdu[0], binary.BigEndian.Uint16(pdu[1:]), binary.BigEndian.Uint16(pdu[3:])

		p.mu.Lock()
		u := p.units[unit]
		if u == nil {
			p.mu.Unlock()
			continue // no such unit: silence, as behind a serial converter
		}
		u.reqs++
		how := u.how
		if u.only != "" && u.only != tableOf(fc) {
			how = healthy
		}
		code, delay := u.code, u.delay
		data, exc := u.state.read(fc, start, qty)
		p.mu.Unlock()

		body := []byte{fc, byte(len(data))}
		body = append(body, data...)
		if exc != 0 {
			body = []byte{fc | 0x80, exc}
		}
		frame := func(tid uint16, proto uint16, unit byte, pdu []byte) []byte {
			b := make([]byte, 7, 7+len(pdu))
			binary.BigEndian.PutUint16(b, tid)
			binary.BigEndian.PutUint16(b[2:], proto)
			binary.BigEndian.PutUint16(b[4:], uint16(1+len(pdu)))
			b[6] = unit
			return append(b, pdu...)
		}
		var out []byte
		switch how {
		case healthy:
			out = frame(tid, 0, unit, body)
		case dead:
			prevTID = tid
			continue
		case slow:
			select {
			case <-time.After(delay):
			case <-p.done:
				return
			}
			out = frame(tid, 0, unit, body)
		case exception:
			out = frame(tid, 0, unit, []byte{fc | 0x80, code})
		case wrongTID:
			out = frame(tid+1, 0, unit, body)
		case staleTID:
			out = append(frame(prevTID, 0, unit, body), frame(tid, 0, unit, body)...)
		case wrongUnit:
			out = frame(tid, 0, 1, body)
		case wrongProtocol:
			out = frame(tid, 1, unit, body)
		case wrongFunction:
			body[0]++
			out = frame(tid, 0, unit, body)
		case truncated, truncatedClose:
			out = frame(tid, 0, unit, body)
			out = out[:len(out)-3]
		case byteCountOff:
			body[1]++
			out = frame(tid, 0, unit, body)
		case short:
			body = body[:len(body)-min(2, len(data))]
			body[1] = byte(len(body) - 2)
			out = frame(tid, 0, unit, body)
		case long:
			body = append(body, 0, 0)
			body[1] = byte(len(body) - 2)
			out = frame(tid, 0, unit, body)
		case zeroLength:
			out = frame(tid, 0, unit, body)
			out[4], out[5] = 0, 0
		case bareException:
			out = frame(tid, 0, unit, []byte{fc | 0x80})
		}
		prevTID = tid
		if _, err := c.Write(out); err != nil {
			return
		}
		if how == truncatedClose {
			return
		}
	}
}

// tableOf is the table a read function code reads.
func tableOf(fc byte) devices.Table {
	switch fc {
	case 1:
		return devices.Coil
	case 2:
		return devices.Discrete
	case 3:
		return devices.Holding
	case 4:
		return devices.Input
	}
	return ""
}

// read answers a read request from the unit's tables: the data bytes, or an
// exception code.
func (u *unitState) read(fc byte, start, qty uint16) ([]byte, byte) {
	end := int(start) + int(qty)
	switch fc {
	case 1, 2:
		if qty < 1 || qty > 2000 || end > len(u.coils) {
			return nil, 2
		}
		bits := u.coils[start:end]
		if fc == 2 {
			bits = u.discrete[start:end]
		}
		out := make([]byte, (len(bits)+7)/8)
		for i, b := range bits {
			if b {
				out[i/8] |= 1 << (i % 8)
			}
		}
		return out, 0
	case 3, 4:
		if qty < 1 || qty > 125 || end > len(u.holding) {
			return nil, 2
		}
		regs := u.holding[start:end]
		if fc == 4 {
			regs = u.input[start:end]
		}
		out := make([]byte, 2*len(regs))
		for i, r := range regs {
			binary.BigEndian.PutUint16(out[2*i:], r)
		}
		return out, 0
	}
	return nil, 1
}
