package modbuspoll

import (
	"context"
	"fmt"
	"io"
	"log"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/testenv"
	mbserver "github.com/simonvetter/modbus"
)

// unitState is what one unit id behind a test server serves and how it
// behaves.
type unitState struct {
	coils, discrete [256]bool
	holding, input  [256]uint16
	requests        int                    // requests received
	clients         map[string]bool        // client addresses seen: one per connection
	silent          bool                   // never reply (the server drops the link after a while)
	delay           time.Duration          // reply this late
	refuse          map[devices.Table]bool // answer reads of these tables with an exception
}

// testServer is a real Modbus TCP server (github.com/simonvetter/modbus,
// in-process, on a loopback port) with several unit ids behind one port, as
// a serial-to-Ethernet converter has.
type testServer struct {
	t    testing.TB
	addr string
	srv  *mbserver.ModbusServer

	mu    sync.Mutex
	units map[uint8]*unitState
}

func newTestServer(t testing.TB) *testServer {
	t.Helper()
	s := &testServer{t: t, addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), units: map[uint8]*unitState{}}
	s.start()
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *testServer) start() {
	s.t.Helper()
	srv, err := mbserver.NewServer(&mbserver.ServerConfiguration{URL: "tcp://" + s.addr, MaxClients: 100, Timeout: time.Minute,
		Logger: log.New(io.Discard, "", 0)}, s)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
}

func (s *testServer) stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

func (s *testServer) unit(id uint8) *unitState {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.units[id]
	if u == nil {
		u = &unitState{}
		s.units[id] = u
	}
	return u
}

// set changes a unit under the server's lock.
func (s *testServer) set(id uint8, f func(u *unitState)) {
	u := s.unit(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	f(u)
}

func (s *testServer) connections(id uint8) int {
	u := s.unit(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(u.clients)
}

func (s *testServer) requests(id uint8) int {
	u := s.unit(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	return u.requests
}

// begin counts a request to unit id and applies its behaviour. It returns
// the unit, locked, or an error to answer with.
func (s *testServer) begin(id uint8, table devices.Table, client string) (*unitState, error) {
	s.mu.Lock()
	u := s.units[id]
	if u == nil {
		s.mu.Unlock()
		return nil, mbserver.ErrGWTargetFailedToRespond
	}
	u.requests++
	if u.clients == nil {
		u.clients = map[string]bool{}
	}
	u.clients[client] = true
	silent, delay, refuse := u.silent, u.delay, u.refuse[table]
	s.mu.Unlock()
	if silent {
		// No reply; a protocol error makes the server drop the link
		// without answering.
		time.Sleep(2 * time.Second)
		return nil, mbserver.ErrProtocolError
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	if refuse {
		return nil, mbserver.ErrIllegalDataAddress
	}
	s.mu.Lock()
	return u, nil
}

func bitsOf(src *[256]bool, addr, n uint16) ([]bool, error) {
	if int(addr)+int(n) > len(src) {
		return nil, mbserver.ErrIllegalDataAddress
	}
	return append([]bool(nil), src[addr:addr+n]...), nil
}

func regsOf(src *[256]uint16, addr, n uint16) ([]uint16, error) {
	if int(addr)+int(n) > len(src) {
		return nil, mbserver.ErrIllegalDataAddress
	}
	return append([]uint16(nil), src[addr:addr+n]...), nil
}

func (s *testServer) HandleCoils(req *mbserver.CoilsRequest) ([]bool, error) {
	if req.IsWrite {
		return nil, mbserver.ErrIllegalFunction
	}
	u, err := s.begin(req.UnitId, devices.Coil, req.ClientAddr)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	return bitsOf(&u.coils, req.Addr, req.Quantity)
}

func (s *testServer) HandleDiscreteInputs(req *mbserver.DiscreteInputsRequest) ([]bool, error) {
	u, err := s.begin(req.UnitId, devices.Discrete, req.ClientAddr)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	return bitsOf(&u.discrete, req.Addr, req.Quantity)
}

func (s *testServer) HandleHoldingRegisters(req *mbserver.HoldingRegistersRequest) ([]uint16, error) {
	if req.IsWrite {
		return nil, mbserver.ErrIllegalFunction
	}
	u, err := s.begin(req.UnitId, devices.Holding, req.ClientAddr)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	return regsOf(&u.holding, req.Addr, req.Quantity)
}

func (s *testServer) HandleInputRegisters(req *mbserver.InputRegistersRequest) ([]uint16, error) {
	u, err := s.begin(req.UnitId, devices.Input, req.ClientAddr)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	return regsOf(&u.input, req.Addr, req.Quantity)
}

// sampleValues chooses a value for every field of p that encodes exactly,
// varied by seed, with the device clock at clock.
func sampleValues(t testing.TB, p *devices.Profile, seed int, clock time.Time) []devices.Value {
	t.Helper()
	vals := make([]devices.Value, len(p.Fields))
	for i := range p.Fields {
		f := &p.Fields[i]
		k := seed*31 + i
		switch {
		case i == p.TimestampIndex:
			vals[i] = devices.IntValue(clock.Unix())
		case f.Enum != nil:
			keys := make([]int64, 0, len(f.Enum))
			for key := range f.Enum {
				keys = append(keys, key)
			}
			sort.Slice(keys, func(a, b int) bool { return keys[a] < keys[b] })
			vals[i] = devices.StringValue(f.Enum[keys[k%len(keys)]])
		case f.Out == devices.Bool:
			vals[i] = devices.BoolValue(k%3 != 0)
		case f.Out == devices.String:
			str := fmt.Sprintf("FW%d.%d", seed, i)
			vals[i] = devices.StringValue(str[:min(len(str), 2*f.Registers)])
		case f.Out == devices.Int:
			x := int64(1000*seed + 7*i + 1)
			if f.Min != nil && f.Max != nil {
				x = int64(*f.Min) + x%int64(*f.Max-*f.Min+1)
			}
			vals[i] = devices.IntValue(x)
		case f.Type == devices.RawFloat32 || f.Type == devices.RawFloat64:
			lo, hi := 0.0, 500.0
			if f.Min != nil {
				lo = *f.Min
			}
			if f.Max != nil {
				hi = *f.Max
			}
			vals[i] = devices.FloatValue(lo + (hi-lo)*float64(k%17+1)/19)
		default: // a scaled integer register
			raw := float64(100 + (k*37)%900)
			scale := 1.0
			if f.Scale != nil {
				scale = *f.Scale
			}
			vals[i] = devices.FloatValue(raw*scale + f.Offset)
		}
	}
	return vals
}

// serve encodes vals (by profile field) into unit id's tables and returns
// what the gateway should decode for each field: the value decoded from the
// encoded registers on their own (scales make 230.1 come back as
// 230.10000000000002), checked close to what was chosen.
func (s *testServer) serve(t testing.TB, id uint8, p *devices.Profile, vals []devices.Value) []devices.Value {
	t.Helper()
	u := s.unit(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	return encodeUnit(t, u, p, vals)
}

// encodeUnit writes vals into u's tables (see serve).
func encodeUnit(t testing.TB, u *unitState, p *devices.Profile, vals []devices.Value) []devices.Value {
	t.Helper()
	want := make([]devices.Value, len(p.Fields))
	for i := range p.Fields {
		f, v := &p.Fields[i], vals[i]
		switch {
		case f.Table == devices.Coil:
			u.coils[f.Address] = v.Bool()
			want[i] = v
			continue
		case f.Table == devices.Discrete:
			u.discrete[f.Address] = v.Bool()
			want[i] = v
			continue
		}
		regs := &u.holding
		if f.Table == devices.Input {
			regs = &u.input
		}
		if f.Type == devices.RawBit {
			regs[f.Address] = f.EncodeBit(regs[f.Address], v.Bool())
			want[i] = v
			continue
		}
		words, err := f.EncodeModbus(v)
		if err != nil {
			t.Fatalf("encoding %s=%v: %v", f.Name, v, err)
		}
		copy(regs[f.Address:], words)
		raw := make([]byte, 2*len(words))
		for j, w := range words {
			raw[2*j], raw[2*j+1] = byte(w>>8), byte(w)
		}
		got, err := f.DecodeModbus(raw, f.Address)
		if err != nil {
			t.Fatalf("decoding %s=%v back: %v", f.Name, v, err)
		}
		if v.Type == devices.Float && math.Abs(got.F-v.F) > 1e-3*math.Max(1, math.Abs(v.F)) ||
			v.Type != devices.Float && !got.Equal(v) {
			t.Fatalf("%s: served %v decodes as %v", f.Name, v, got)
		}
		want[i] = got
	}
	return want
}

// collector is a Handler that keeps copies of the readings it is given.
type collector struct {
	mu   sync.Mutex
	byID map[string][]devices.Reading
}

func newCollector() *collector { return &collector{byID: map[string][]devices.Reading{}} }

func (c *collector) Handle(_ context.Context, r *devices.Reading) error {
	cp := *r
	cp.Values = append([]devices.Value(nil), r.Values...)
	c.mu.Lock()
	c.byID[r.Asset.ID] = append(c.byID[r.Asset.ID], cp)
	c.mu.Unlock()
	return nil
}

func (c *collector) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byID[id])
}

func (c *collector) last(id string) (devices.Reading, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rs := c.byID[id]
	if len(rs) == 0 {
		return devices.Reading{}, false
	}
	return rs[len(rs)-1], true
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
