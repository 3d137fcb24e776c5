package modbuspoll

import (
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
)

// rtuPeer is the devices on a Modbus RTU line for the poller's bad-input
// tests: it opens the far end of a pseudo-terminal pair (made by socat),
// reads request frames (CRC checked; bytes that do not start one are
// skipped) and answers for several unit ids, healthy or misbehaving (dead,
// exception, slow). A slow unit answers from its own goroutine, late, while
// the others go on answering at once: on a real multi-drop line each unit is
// a separate device, and a late reply lands on the line whatever the master
// is doing then (here whole frames; on RS-485 a collision would garble both).
type rtuPeer struct {
	t    testing.TB
	f    *os.File
	done chan struct{}
	wg   sync.WaitGroup

	wmu sync.Mutex // one frame written at a time

	mu    sync.Mutex
	units map[uint8]*peerUnit
}

func newRTUPeer(t testing.TB, path string) *rtuPeer {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := &rtuPeer{t: t, f: f, done: make(chan struct{}), units: map[uint8]*peerUnit{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		close(p.done)
		p.f.Close()
		p.wg.Wait()
	})
	return p
}

// unit adds unit id serving vals of profile pr; see badPeer.unit.
func (p *rtuPeer) unit(id uint8, pr *devices.Profile, vals []devices.Value, u peerUnit) []devices.Value {
	p.t.Helper()
	u.state = &unitState{}
	want := encodeUnit(p.t, u.state, pr, vals)
	p.mu.Lock()
	p.units[id] = &u
	p.mu.Unlock()
	return want
}

func (p *rtuPeer) serve() {
	defer p.wg.Done()
	var buf []byte
	tmp := make([]byte, 256)
	for {
		n, err := p.f.Read(tmp)
		if err != nil {
			return
		}
		buf = append(buf, tmp[:n]...)
		// A read request is 8 bytes: unit, function, start, quantity, CRC.
		for len(buf) >= 8 {
			if fc := buf[1]; fc < 1 || fc > 4 || crc16(buf[:6]) != uint16(buf[6])|uint16(buf[7])<<8 {
				buf = buf[1:]
				continue
			}
			p.answer(buf[0], buf[1], uint16(buf[2])<<8|uint16(buf[3]), uint16(buf[4])<<8|uint16(buf[5]))
			buf = buf[8:]
		}
	}
}

func (p *rtuPeer) answer(unit, fc byte, start, qty uint16) {
	p.mu.Lock()
	u := p.units[unit]
	if u == nil {
		p.mu.Unlock()
		return
	}
	u.reqs++
	how := u.how
	if u.only != "" && u.only != tableOf(fc) {
		how = healthy
	}
	data, exc := u.state.read(fc, start, qty)
	code, delay := u.code, u.delay
	p.mu.Unlock()
	pdu := append([]byte{fc, byte(len(data))}, data...)
	if exc != 0 {
		pdu = []byte{fc | 0x80, exc}
	}
	switch how {
	case dead:
		return
	case exception:
		pdu = []byte{fc | 0x80, code}
	case slow:
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			select {
			case <-time.After(delay):
				p.write(unit, pdu)
			case <-p.done:
			}
		}()
		return
	}
	p.write(unit, pdu)
}

func (p *rtuPeer) write(unit byte, pdu []byte) {
	frame := append([]byte{unit}, pdu...)
	crc := crc16(frame)
	frame = append(frame, byte(crc), byte(crc>>8))
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.f.Write(frame)
}
