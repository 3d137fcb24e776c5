// Package modbussrv serves simulated Modbus devices over real Modbus TCP
// (github.com/simonvetter/modbus), behaving like a serial-to-Ethernet
// converter in Modbus gateway mode: one TCP port, several unit ids behind it.
//
// A unit id with no device behind it, and a device that stays silent, get
// exception 0x0B (gateway target device failed to respond) after the
// converter's response timeout, as a real converter (Moxa MGate, USR-TCP232
// in gateway mode) reports a slave that does not answer on its RS-485 bus.
// The converter serves one request at a time per connection, so a slow or
// silent unit delays the requests queued behind it on that connection, as on
// a real bus. Writes are refused with exception 0x01 (illegal function): the
// simulated devices are read-only.
package modbussrv

import (
	"fmt"
	"log"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/simonvetter/modbus"

	"github.com/citygw/citygw/devices"
)

// Reply is how a unit answers a read.
type Reply struct {
	Silent    bool          // no answer from the unit: the converter reports 0x0B after its timeout
	Exception uint8         // non-zero: answer with this exception code
	Delay     time.Duration // answer only after this long
}

// Unit is one device behind the converter.
type Unit interface {
	// Read returns qty values of table from protocol address addr (bits as
	// 0/1) and how to answer. It must not keep words after returning.
	Read(t devices.Table, addr, qty uint16) (words []uint16, r Reply)
}

// Options configure a server.
type Options struct {
	// ConverterTimeout is how long the converter waits for a silent unit
	// before answering 0x0B; default 200ms.
	ConverterTimeout time.Duration
	// MaxClients is the number of concurrent TCP connections; default 32.
	MaxClients uint
	Log        *slog.Logger
}

// Server is one converter port.
type Server struct {
	addr  string
	units [256]Unit
	opts  Options
	ms    *modbus.ModbusServer

	requests   atomic.Int64
	exceptions atomic.Int64
	noReply    atomic.Int64
}

// New returns a server for addr (host:port) with the units by unit id.
func New(addr string, units map[uint8]Unit, opts Options) (*Server, error) {
	if opts.ConverterTimeout == 0 {
		opts.ConverterTimeout = 200 * time.Millisecond
	}
	if opts.MaxClients == 0 {
		opts.MaxClients = 32
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Server{addr: addr, opts: opts}
	for id, u := range units {
		s.units[id] = u
	}
	ms, err := modbus.NewServer(&modbus.ServerConfiguration{
		URL:        "tcp://" + addr,
		Timeout:    10 * time.Minute,
		MaxClients: opts.MaxClients,
		Logger:     log.New(slogWriter{opts.Log.With("port", addr)}, "", 0),
	}, handler{s})
	if err != nil {
		return nil, fmt.Errorf("modbus server on %s: %w", addr, err)
	}
	s.ms = ms
	return s, nil
}

// slogWriter sends the library's log lines to slog at debug level (it logs
// every client disconnect as a warning).
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("modbus server", "msg", string(p))
	return len(p), nil
}

// Start listens and serves in the background.
func (s *Server) Start() error {
	if err := s.ms.Start(); err != nil {
		return fmt.Errorf("listening for Modbus TCP on %s: %w", s.addr, err)
	}
	return nil
}

// Stop closes the listener and all connections.
func (s *Server) Stop() error { return s.ms.Stop() }

// Addr returns the listen address.
func (s *Server) Addr() string { return s.addr }

// Stats are a port's counters.
type Stats struct {
	Requests   int64 `json:"requests"`
	Exceptions int64 `json:"exceptions"`
	NoReply    int64 `json:"no_reply"` // answered 0x0B for a silent or absent unit
}

// Stats returns the port's counters.
func (s *Server) Stats() Stats {
	return Stats{Requests: s.requests.Load(), Exceptions: s.exceptions.Load(), NoReply: s.noReply.Load()}
}

// Listening reports whether something accepts connections on the address.
func (s *Server) Listening() bool {
	c, err := net.DialTimeout("tcp", s.addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

var exceptionErrors = map[uint8]error{
	1: modbus.ErrIllegalFunction, 2: modbus.ErrIllegalDataAddress, 3: modbus.ErrIllegalDataValue,
	4: modbus.ErrServerDeviceFailure, 5: modbus.ErrAcknowledge, 6: modbus.ErrServerDeviceBusy,
	8: modbus.ErrMemoryParityError, 0x0a: modbus.ErrGWPathUnavailable, 0x0b: modbus.ErrGWTargetFailedToRespond,
}

// ExceptionCodes are the exception codes a unit can answer with.
func ExceptionCodes() []uint8 { return []uint8{1, 2, 3, 4, 5, 6, 8, 0x0a, 0x0b} }

type handler struct{ s *Server }

func (h handler) read(unit uint8, t devices.Table, addr, qty uint16) ([]uint16, error) {
	s := h.s
	s.requests.Add(1)
	u := s.units[unit]
	if u == nil {
		time.Sleep(s.opts.ConverterTimeout)
		s.noReply.Add(1)
		return nil, modbus.ErrGWTargetFailedToRespond
	}
	words, r := u.Read(t, addr, qty)
	if r.Delay > 0 {
		time.Sleep(r.Delay)
	}
	switch {
	case r.Silent:
		time.Sleep(s.opts.ConverterTimeout)
		s.noReply.Add(1)
		return nil, modbus.ErrGWTargetFailedToRespond
	case r.Exception != 0:
		s.exceptions.Add(1)
		if err, ok := exceptionErrors[r.Exception]; ok {
			return nil, err
		}
		return nil, modbus.ErrServerDeviceFailure
	}
	return words, nil
}

func bits(words []uint16) []bool {
	out := make([]bool, len(words))
	for i, w := range words {
		out[i] = w != 0
	}
	return out
}

func (h handler) HandleCoils(req *modbus.CoilsRequest) ([]bool, error) {
	if req.IsWrite {
		h.s.requests.Add(1)
		h.s.exceptions.Add(1)
		return nil, modbus.ErrIllegalFunction
	}
	w, err := h.read(req.UnitId, devices.Coil, req.Addr, req.Quantity)
	if err != nil {
		return nil, err
	}
	return bits(w), nil
}

func (h handler) HandleDiscreteInputs(req *modbus.DiscreteInputsRequest) ([]bool, error) {
	w, err := h.read(req.UnitId, devices.Discrete, req.Addr, req.Quantity)
	if err != nil {
		return nil, err
	}
	return bits(w), nil
}

func (h handler) HandleHoldingRegisters(req *modbus.HoldingRegistersRequest) ([]uint16, error) {
	if req.IsWrite {
		h.s.requests.Add(1)
		h.s.exceptions.Add(1)
		return nil, modbus.ErrIllegalFunction
	}
	return h.read(req.UnitId, devices.Holding, req.Addr, req.Quantity)
}

func (h handler) HandleInputRegisters(req *modbus.InputRegistersRequest) ([]uint16, error) {
	return h.read(req.UnitId, devices.Input, req.Addr, req.Quantity)
}
