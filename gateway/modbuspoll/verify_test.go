package modbuspoll

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/goburrow/modbus"
)

// tcpRequest encodes a read of qty holding registers at 100 for unit 7 as
// goburrow sends it (transaction id 1).
func tcpRequest(t testing.TB, qty uint16) (tcpLink, []byte) {
	t.Helper()
	l := tcpLink{modbus.NewTCPClientHandler("127.0.0.1:1")}
	l.SlaveId = 7
	req, err := l.Encode(&modbus.ProtocolDataUnit{FunctionCode: modbus.FuncCodeReadHoldingRegisters,
		Data: []byte{0, 100, byte(qty >> 8), byte(qty)}})
	if err != nil {
		t.Fatal(err)
	}
	return l, req
}

// mbap frames pdu as a Modbus TCP reply.
func mbap(tid, proto uint16, unit byte, pdu ...byte) []byte {
	b := make([]byte, 7, 7+len(pdu))
	binary.BigEndian.PutUint16(b, tid)
	binary.BigEndian.PutUint16(b[2:], proto)
	binary.BigEndian.PutUint16(b[4:], uint16(1+len(pdu)))
	b[6] = unit
	return append(b, pdu...)
}

func TestVerifyTCP(t *testing.T) {
	l, req := tcpRequest(t, 2)
	for _, tc := range []struct {
		name   string
		resp   []byte
		reason string // "" accepted
	}{
		{"reply", mbap(1, 0, 7, 3, 4, 0, 1, 0, 2), ""},
		{"exception", mbap(1, 0, 7, 0x83, 2), ""},
		{"transaction id", mbap(2, 0, 7, 3, 4, 0, 1, 0, 2), reasonTransactionID},
		{"protocol id", mbap(1, 1, 7, 3, 4, 0, 1, 0, 2), reasonProtocolID},
		{"unit id", mbap(1, 0, 8, 3, 4, 0, 1, 0, 2), reasonUnitID},
		{"function code", mbap(1, 0, 7, 4, 4, 0, 1, 0, 2), reasonFunctionCode},
		{"other exception function", mbap(1, 0, 7, 0x84, 2), reasonFunctionCode},
		{"byte count over data", mbap(1, 0, 7, 3, 5, 0, 1, 0, 2), reasonByteCount},
		{"byte count under data", mbap(1, 0, 7, 3, 3, 0, 1, 0, 2), reasonByteCount},
		{"one register short", mbap(1, 0, 7, 3, 2, 0, 1), reasonLength},
		{"one register long", mbap(1, 0, 7, 3, 6, 0, 1, 0, 2, 0, 3), reasonLength},
		{"no byte count", mbap(1, 0, 7, 3), reasonMalformed},
		{"no function code", mbap(1, 0, 7), reasonMalformed},
		{"exception without code", mbap(1, 0, 7, 0x83), reasonMalformed},
		{"exception with extra bytes", mbap(1, 0, 7, 0x83, 2, 0), reasonMalformed},
		{"short header", []byte{0, 1, 0}, reasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := l.Verify(req, tc.resp)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want reason %s", tc.reason)
			}
			if got := reasonOf(err); got != tc.reason {
				t.Errorf("reason %s (%v), want %s", got, err, tc.reason)
			}
		})
	}
}

// rtuFrame appends the CRC to unit and pdu.
func rtuFrame(unit byte, pdu ...byte) []byte {
	b := append([]byte{unit}, pdu...)
	c := crc16(b)
	return append(b, byte(c), byte(c>>8))
}

func TestCRC16(t *testing.T) {
	// The well-known example frame: unit 0x11 reads 3 holding registers
	// at 0x006B, CRC 0x8776 (sent low byte first).
	l := newRTULink(modbus.NewRTUClientHandler("/dev/null"))
	l.SlaveId = 0x11
	adu, err := l.Encode(&modbus.ProtocolDataUnit{FunctionCode: 3, Data: []byte{0, 0x6b, 0, 3}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x11, 3, 0, 0x6b, 0, 3, 0x76, 0x87}; !bytes.Equal(adu, want) {
		t.Fatalf("goburrow encodes % x, the spec's example is % x", adu, want)
	}
	if !bytes.Equal(rtuFrame(0x11, 3, 0, 0x6b, 0, 3), adu) {
		t.Errorf("crc16 disagrees with goburrow: % x vs % x", rtuFrame(0x11, 3, 0, 0x6b, 0, 3), adu)
	}
}

func TestFindRTUFrame(t *testing.T) {
	reply := rtuFrame(5, 3, 4, 0, 1, 0, 2)
	exc := rtuFrame(5, 0x83, 2)
	other := rtuFrame(6, 3, 4, 9, 9, 9, 9)
	corrupt := append([]byte(nil), reply...)
	corrupt[4] ^= 0xff
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name    string
		b       []byte
		frame   []byte
		skipped int
		broken  []byte
	}{
		{"reply", reply, reply, 0, nil},
		{"exception", exc, exc, 0, nil},
		{"another unit's late reply first", cat(other, reply), reply, len(other), nil},
		{"noise first", cat([]byte{5, 3, 0xff, 1}, reply), reply, 4, nil},
		{"reply then noise", cat(reply, []byte{1, 2}), reply, 0, nil},
		{"another unit only", other, nil, 0, nil},
		{"incomplete", reply[:6], nil, 0, nil},
		{"bad crc", corrupt, nil, 0, corrupt},
		{"bad crc then the reply", cat(corrupt, reply), reply, len(corrupt), nil},
		{"noise then bad crc", cat([]byte{9}, corrupt), nil, 0, nil},
		{"empty", nil, nil, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame, skipped, broken := findRTUFrame(tc.b, 5, 3)
			if !bytes.Equal(frame, tc.frame) || skipped != tc.skipped || !bytes.Equal(broken, tc.broken) {
				t.Errorf("findRTUFrame(% x) = % x, %d, % x; want % x, %d, % x", tc.b, frame, skipped, broken, tc.frame, tc.skipped, tc.broken)
			}
		})
	}
}

func TestWireTime(t *testing.T) {
	l := newRTULink(modbus.NewRTUClientHandler("/dev/null"))
	for _, tc := range []struct {
		baud, chars int
		want        time.Duration
	}{
		// 11 bits a character at 9600 baud is 1.146ms; goburrow allows
		// 1.5 character times of 10 bits (1.5625ms) and a 3.5 character gap.
		{9600, 263, 263*1562*time.Microsecond + 3645*time.Microsecond},
		{19200, 8, 8*781*time.Microsecond + 1822*time.Microsecond},
		{115200, 8, 8*750*time.Microsecond + 1750*time.Microsecond},
	} {
		l.BaudRate = tc.baud
		if got := l.wireTime(tc.chars); got != tc.want {
			t.Errorf("%d characters at %d baud: %v, want %v", tc.chars, tc.baud, got, tc.want)
		}
	}
}

func TestVerifyRTU(t *testing.T) {
	l := newRTULink(modbus.NewRTUClientHandler("/dev/null"))
	l.SlaveId = 5
	req, err := l.Encode(&modbus.ProtocolDataUnit{FunctionCode: 3, Data: []byte{0, 100, 0, 2}})
	if err != nil {
		t.Fatal(err)
	}
	corrupt := rtuFrame(5, 3, 4, 0, 1, 0, 2)
	corrupt[3] ^= 1
	for _, tc := range []struct {
		name   string
		resp   []byte
		reason string
	}{
		{"reply", rtuFrame(5, 3, 4, 0, 1, 0, 2), ""},
		{"exception", rtuFrame(5, 0x83, 4), ""},
		{"crc", corrupt, reasonCRC},
		{"unit id", rtuFrame(6, 3, 4, 0, 1, 0, 2), reasonUnitID},
		{"function code", rtuFrame(5, 4, 4, 0, 1, 0, 2), reasonFunctionCode},
		{"byte count", rtuFrame(5, 3, 4, 0, 1, 0), reasonByteCount},
		{"short", rtuFrame(5, 3, 2, 0, 1), reasonLength},
		{"too short for a frame", []byte{5, 3, 0}, reasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := l.Verify(req, tc.resp)
			switch {
			case tc.reason == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.reason != "" && err == nil:
				t.Fatalf("accepted, want reason %s", tc.reason)
			case tc.reason != "" && reasonOf(err) != tc.reason:
				t.Errorf("reason %s (%v), want %s", reasonOf(err), err, tc.reason)
			}
		})
	}
}

// FuzzVerify feeds arbitrary replies to the TCP and RTU checks and to the
// RTU frame search: nothing may panic, and a reply the checks accept must
// decode (through goburrow, as the poller reads it) to exactly the data the
// request asked for, or be an exception.
func FuzzVerify(f *testing.F) {
	f.Add(mbap(1, 0, 7, 3, 4, 0, 1, 0, 2), uint16(2))
	f.Add(mbap(1, 0, 7, 0x83, 2), uint16(2))
	f.Add(mbap(1, 0, 7, 3, 2, 0, 1), uint16(2))
	f.Add(rtuFrame(7, 3, 4, 0, 1, 0, 2), uint16(2))
	f.Add(append(rtuFrame(6, 3, 2, 1, 1), rtuFrame(7, 0x83, 2)...), uint16(1))
	f.Fuzz(func(t *testing.T, resp []byte, qty uint16) {
		qty = qty%125 + 1
		l, req := tcpRequest(t, qty)
		if l.Verify(req, resp) == nil {
			checkAccepted(t, l, resp, qty)
		}
		r := newRTULink(modbus.NewRTUClientHandler("/dev/null"))
		r.SlaveId = 7
		rreq, err := r.Encode(&modbus.ProtocolDataUnit{FunctionCode: 3, Data: []byte{0, 100, byte(qty >> 8), byte(qty)}})
		if err != nil {
			t.Fatal(err)
		}
		if r.Verify(rreq, resp) == nil {
			checkAccepted(t, r, resp, qty)
		}
		frame, skipped, broken := findRTUFrame(resp, 7, 3)
		if frame != nil {
			if frame[0] != 7 || skipped < 0 || skipped+len(frame) > len(resp) {
				t.Fatalf("frame % x at %d in % x", frame, skipped, resp)
			}
			if err := r.Verify(rreq, frame); err != nil && reasonOf(err) == reasonCRC {
				t.Fatalf("found a frame with a bad CRC: % x", frame)
			}
		}
		if broken != nil && frame != nil {
			t.Fatalf("broken and found")
		}
	})
}

// checkAccepted decodes an accepted reply as goburrow's client does.
func checkAccepted(t *testing.T, p modbus.Packager, resp []byte, qty uint16) {
	t.Helper()
	pdu, err := p.Decode(resp)
	if err != nil {
		return // goburrow refuses it itself (an RTU CRC, a TCP length)
	}
	switch pdu.FunctionCode {
	case 0x83:
		if len(pdu.Data) != 1 {
			t.Fatalf("accepted exception % x", resp)
		}
	case 3:
		if len(pdu.Data) != 1+2*int(qty) || int(pdu.Data[0]) != 2*int(qty) {
			t.Fatalf("accepted % x for %d registers", resp, qty)
		}
	default:
		t.Fatalf("accepted function %d: % x", pdu.FunctionCode, resp)
	}
}
