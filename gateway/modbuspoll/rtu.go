package modbuspoll

import (
	"errors"
	"fmt"
	"time"

	"github.com/goburrow/modbus"
	"github.com/goburrow/serial"
)

// rtuSlice is how long one read of the serial port waits: the reply
// timeout is measured across reads, so it can differ per device without
// reopening the port.
const rtuSlice = 10 * time.Millisecond

// rtuLink is a Modbus RTU line. goburrow's RTUClientHandler encodes and
// decodes the frames, but the link does its own transport: goburrow reads a
// fixed number of bytes after a fixed delay and takes whatever came first for
// the reply, so a reply that a slow unit sends after its timeout (it lands on
// the line whatever the master does next) would be taken for the next unit's
// answer, failing a healthy unit's poll. The link instead
//
//   - reads until a frame from the unit asked, with the function asked (or
//     its exception) and a valid CRC, has come, skipping any bytes before it;
//   - after a failed exchange, discards what is still arriving before the
//     next request;
//   - before asking a unit that timed out last time again, discards what
//     arrives for one timeout: RTU has no transaction id, and that unit's
//     late reply to its last request would match the new one;
//   - takes each device's timeout per request, without reopening the port.
type rtuLink struct {
	*modbus.RTUClientHandler
	st *rtuState
}

// rtuState is the open port and the receive buffer of an rtuLink.
type rtuState struct {
	port  serial.Port
	dirty bool      // the last exchange failed: input may still be arriving
	late  [256]bool // by unit: its last request timed out, its reply may still come
	buf   [1024]byte
	tmp   [256]byte
}

func newRTULink(h *modbus.RTUClientHandler) rtuLink { return rtuLink{h, &rtuState{}} }

func (l rtuLink) setUnit(u uint8)            { l.SlaveId = u }
func (l rtuLink) setTimeout(d time.Duration) { l.Timeout = d }

// Connect opens the serial port.
func (l rtuLink) Connect() error {
	if l.st.port != nil {
		return nil
	}
	c := l.Config
	c.Timeout = rtuSlice
	p, err := serial.Open(&c)
	if err != nil {
		return err
	}
	l.st.port, l.st.dirty = p, true
	return nil
}

// Close closes the serial port.
func (l rtuLink) Close() error {
	if l.st.port == nil {
		return nil
	}
	err := l.st.port.Close()
	l.st.port = nil
	return err
}

// Send writes a request and returns the reply frame to it (see rtuLink).
// The frame is valid until the next Send.
func (l rtuLink) Send(req []byte) ([]byte, error) {
	s := l.st
	if err := l.Connect(); err != nil {
		return nil, err
	}
	switch unit := req[0]; {
	case s.late[unit]:
		if err := s.settle(l.Timeout); err != nil {
			return nil, err
		}
		s.late[unit], s.dirty = false, false
	case s.dirty:
		if err := s.drain(); err != nil {
			return nil, err
		}
		s.dirty = false
	}
	if _, err := s.port.Write(req); err != nil {
		s.dirty = true
		return nil, err
	}
	// The timeout is the device's: the frames' time on the wire comes on
	// top, as it did with goburrow's transport (at 9600 baud a reply of 125
	// registers takes 0.27s).
	want := 5
	if len(req) == 8 {
		if n := responseBytes(req[1], uint16(req[4])<<8|uint16(req[5])); n > 0 {
			want += n
		}
	}
	deadline := time.Now().Add(l.wireTime(len(req)+want) + l.Timeout)
	b := s.buf[:0]
	for {
		frame, skipped, broken := findRTUFrame(b, req[0], req[1])
		if frame != nil {
			if skipped > 0 {
				// Part of a late reply to an earlier request may follow.
				s.dirty = true
			}
			return frame, nil
		}
		if !time.Now().Before(deadline) {
			s.dirty = true
			if broken != nil {
				return broken, nil // Verify names what is wrong with it
			}
			s.late[req[0]] = true
			if len(b) > 0 {
				return nil, fmt.Errorf("%w (%d bytes came, none of them the reply)", serial.ErrTimeout, len(b))
			}
			return nil, serial.ErrTimeout
		}
		n, err := s.port.Read(s.tmp[:])
		if errors.Is(err, serial.ErrTimeout) {
			continue
		}
		if err != nil {
			s.dirty = true
			return nil, err
		}
		if len(b)+n > len(s.buf) {
			// Noise: keep the last frame's worth.
			keep := copy(s.buf[:], b[len(b)-256:])
			b = s.buf[:keep]
		}
		b = append(b, s.tmp[:n]...)
	}
}

// wireTime is how long n characters take on the line, with the gap that
// ends a frame: goburrow's estimate (1.5 character times a character, 3.5
// for the gap; fixed above 19200 baud, as the specification has it).
func (l rtuLink) wireTime(n int) time.Duration {
	char, gap := 750*time.Microsecond, 1750*time.Microsecond
	if b := l.BaudRate; b > 0 && b <= 19200 {
		char, gap = time.Duration(15_000_000/b)*time.Microsecond, time.Duration(35_000_000/b)*time.Microsecond
	}
	return time.Duration(n)*char + gap
}

// drain discards input until the line has been quiet for one read slice.
func (s *rtuState) drain() error {
	for range 100 {
		_, err := s.port.Read(s.tmp[:])
		if errors.Is(err, serial.ErrTimeout) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// settle discards input for d.
func (s *rtuState) settle(d time.Duration) error {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		if _, err := s.port.Read(s.tmp[:]); err != nil && !errors.Is(err, serial.ErrTimeout) {
			return err
		}
	}
	return nil
}

// findRTUFrame looks in b for a reply frame from unit to function fc: the
// function's reply (its length given by its byte count) or its exception
// reply, with a valid CRC. It returns the frame and how many bytes before it
// were skipped; if there is none, broken is a damaged reply: a complete
// candidate at the start of b whose CRC did not match (nil if none).
func findRTUFrame(b []byte, unit, fc byte) (frame []byte, skipped int, broken []byte) {
	for i := 0; i+5 <= len(b); i++ {
		if b[i] != unit {
			continue
		}
		var n int
		switch b[i+1] {
		case fc | 0x80:
			n = 5
		case fc:
			n = 3 + int(b[i+2]) + 2
		default:
			continue
		}
		if i+n > len(b) {
			continue
		}
		f := b[i : i+n]
		if crc16(f[:n-2]) == uint16(f[n-2])|uint16(f[n-1])<<8 {
			return f, i, nil
		}
		if i == 0 {
			// The first bytes that came look like the reply but are
			// damaged. (Elsewhere in noise, the unit's and function's
			// bytes may be chance.)
			broken = f
		}
	}
	return nil, 0, broken
}
