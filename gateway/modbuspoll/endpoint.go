package modbuspoll

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/goburrow/modbus"
	"github.com/prometheus/client_golang/prometheus"
)

// link is a goburrow client handler whose unit id and timeout are set per
// request.
type link interface {
	modbus.ClientHandler
	Connect() error
	Close() error
	setUnit(u uint8)
	// setTimeout sets the reply (and connect) timeout of the next requests.
	setTimeout(d time.Duration)
}

type tcpLink struct{ *modbus.TCPClientHandler }

func (l tcpLink) setUnit(u uint8)            { l.SlaveId = u }
func (l tcpLink) setTimeout(d time.Duration) { l.Timeout = d }

// endpoint is one connection (TCP host:port or serial line) and the devices
// behind it, polled in turn by one goroutine.
type endpoint struct {
	name string
	cfg  *Config
	m    *metrics
	h    Handler
	log  *slog.Logger
	devs []*device

	link      link
	line      string // serial line settings, for conflict checks
	client    modbus.Client
	connected bool
	served    int // requests answered on the current connection
	backoff   time.Duration
	retryAt   time.Time // next connection attempt while disconnected

	reqOK, reqTimeout, reqException, reqError prometheus.Counter
	pollOK, pollPartial, pollFailed           prometheus.Counter
	duration                                  prometheus.Observer
}

func (e *endpoint) init(a *devices.ModbusAddr) error {
	if a.Serial != "" {
		h := modbus.NewRTUClientHandler(a.Serial)
		h.BaudRate, h.DataBits, h.Parity, h.StopBits = e.cfg.RTU.Baud, e.cfg.RTU.DataBits, e.cfg.RTU.Parity, e.cfg.RTU.StopBits
		if a.Baud > 0 {
			h.BaudRate = a.Baud
		}
		if a.DataBits > 0 {
			h.DataBits = a.DataBits
		}
		if a.Parity != "" {
			h.Parity = a.Parity
		}
		if a.StopBits > 0 {
			h.StopBits = a.StopBits
		}
		h.IdleTimeout = 0 // the poller decides when to close
		h.Timeout = e.cfg.DefaultTimeout
		e.link = newRTULink(h)
		e.line = fmt.Sprintf("%d baud %d%s%d", h.BaudRate, h.DataBits, h.Parity, h.StopBits)
	} else {
		if _, _, err := net.SplitHostPort(a.Host); err != nil {
			return fmt.Errorf("modbus endpoint %s: %w", e.name, err)
		}
		h := modbus.NewTCPClientHandler(a.Host)
		h.IdleTimeout = 0
		h.Timeout = e.cfg.DefaultTimeout
		e.link = tcpLink{h}
	}
	e.client = modbus.NewClient(e.link)
	e.reqOK = e.m.requests.WithLabelValues(e.name, resultOK)
	e.reqTimeout = e.m.requests.WithLabelValues(e.name, resultTimeout)
	e.reqException = e.m.requests.WithLabelValues(e.name, resultException)
	e.reqError = e.m.requests.WithLabelValues(e.name, resultError)
	e.duration = e.m.duration.WithLabelValues(e.name)
	e.pollOK = e.m.polls.WithLabelValues(pollOK)
	e.pollPartial = e.m.polls.WithLabelValues(pollPartial)
	e.pollFailed = e.m.polls.WithLabelValues(pollFailed)
	return nil
}

// lineOf returns the serial settings asset address a asks for on e's line.
func (e *endpoint) lineOf(a *devices.ModbusAddr) string {
	s := e.cfg.RTU
	if a.Baud > 0 {
		s.Baud = a.Baud
	}
	if a.DataBits > 0 {
		s.DataBits = a.DataBits
	}
	if a.Parity != "" {
		s.Parity = a.Parity
	}
	if a.StopBits > 0 {
		s.StopBits = a.StopBits
	}
	return fmt.Sprintf("%d baud %d%s%d", s.Baud, s.DataBits, s.Parity, s.StopBits)
}

// run polls the endpoint's devices until ctx is done.
func (e *endpoint) run(ctx context.Context) {
	defer e.close()
	now := time.Now()
	for _, d := range e.devs {
		d.next = now
		d.mu.Lock()
		d.nextPub = now
		d.mu.Unlock()
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		d := e.devs[0]
		for _, x := range e.devs[1:] {
			if x.next.Before(d.next) {
				d = x
			}
		}
		wake := d.next
		if !e.connected && e.retryAt.After(wake) {
			wake = e.retryAt
		}
		if wait := time.Until(wake); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if !e.connected {
			if err := e.connect(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				e.connectFailed(err)
				continue
			}
		}
		e.poll(ctx, d)
		if e.cfg.CloseAfterPoll {
			e.close()
		}
	}
}

func (e *endpoint) connect(ctx context.Context) error {
	e.link.setTimeout(e.devs[0].timeout)
	if err := e.link.Connect(); err != nil {
		e.link.Close()
		return err
	}
	if e.backoff > 0 {
		e.log.Info("modbus endpoint reconnected")
		// Devices overdue while the endpoint was down start a fresh schedule.
		now := time.Now()
		for _, d := range e.devs {
			if d.next.Before(now) {
				d.next = now
			}
		}
	}
	e.connected, e.served, e.backoff = true, 0, 0
	return sleep(ctx, e.cfg.PauseAfterConnect)
}

func (e *endpoint) connectFailed(err error) {
	now := time.Now()
	e.backoff = nextBackoff(e.backoff, e.cfg.ReconnectMin, e.cfg.ReconnectMax)
	e.retryAt = now.Add(jitter(e.backoff))
	e.log.Warn("modbus endpoint unreachable", "err", err, "retry_in", e.retryAt.Sub(now).Round(time.Millisecond))
	cerr := fmt.Errorf("connecting %s: %w", e.name, err)
	for _, d := range e.devs {
		d.failed(now, cerr, false, e.cfg, e.log, e.m)
		e.pollFailed.Inc()
	}
}

func (e *endpoint) close() {
	if e.connected {
		e.link.Close()
		e.connected = false
	}
}

// read issues one request.
func (e *endpoint) read(r *Request) ([]byte, error) {
	switch r.Table {
	case devices.Coil:
		return e.client.ReadCoils(r.Start, r.Count)
	case devices.Discrete:
		return e.client.ReadDiscreteInputs(r.Start, r.Count)
	case devices.Holding:
		return e.client.ReadHoldingRegisters(r.Start, r.Count)
	case devices.Input:
		return e.client.ReadInputRegisters(r.Start, r.Count)
	}
	return nil, fmt.Errorf("table %q cannot be read", r.Table)
}

// poll reads one device and hands its reading on.
func (e *endpoint) poll(ctx context.Context, d *device) {
	start := time.Now()
	e.m.lag.Observe(start.Sub(d.next).Seconds())
	d.reading.Reset(d.asset)
	e.link.setUnit(d.unit)
	e.link.setTimeout(d.timeout)
	answered, issued := 0, 0
	var lastErr error
	retried := false
	for i := 0; i < len(d.reqs); i++ {
		if i > 0 && e.cfg.PauseBetweenRequests > 0 {
			if sleep(ctx, e.cfg.PauseBetweenRequests) != nil {
				return
			}
		}
		r := &d.reqs[i]
		t0 := time.Now()
		data, err := e.read(r)
		now := time.Now()
		e.duration.Observe(now.Sub(t0).Seconds())
		issued++
		if err == nil {
			e.reqOK.Inc()
			e.served++
			answered++
			d.decode(i, data, now, e.log)
			continue
		}
		reason := reasonOf(err)
		exception := strings.HasPrefix(reason, reasonExceptionPrefix)
		e.m.requestErrors.WithLabelValues(e.name, reason).Inc()
		switch {
		case exception:
			e.reqException.Inc()
		case reason == reasonTimeout:
			e.reqTimeout.Inc()
			err = fmt.Errorf("no reply within %v: %w", d.timeout, err)
		default:
			e.reqError.Inc()
		}
		if !exception {
			// A late reply or a broken frame would desynchronise the
			// next request: start over on a fresh connection.
			stale := e.served > 0
			e.close()
			if reason == reasonConnection && stale && !retried {
				// The connection was probably closed while idle:
				// reconnect and retry the request once.
				retried = true
				if cerr := e.connect(ctx); cerr == nil {
					i--
					issued--
					continue
				}
			}
		}
		lastErr = fmt.Errorf("asset %s unit %d: reading %s: %w", d.asset.ID, d.unit, r, err)
		d.logRequest(now, e.log, r, reason, err)
		if exception {
			// The device answered: its other requests may succeed.
			continue
		}
		break
	}
	recv := time.Now()
	d.perPoll.Set(float64(issued))
	if answered == 0 {
		e.pollFailed.Inc()
		if lastErr == nil {
			lastErr = errors.New("no request answered")
		}
		d.failed(recv, lastErr, true, e.cfg, e.log, e.m)
		return
	}
	if answered == len(d.reqs) {
		e.pollOK.Inc()
	} else {
		e.pollPartial.Inc()
	}
	d.reading.Received = recv
	d.reading.Time = recv
	if ti := d.prof.TimestampIndex; ti >= 0 {
		if v := d.reading.Values[d.prof.Fields[ti].Index]; v.Type == devices.Int {
			if t := time.Unix(v.I, 0); devices.PlausibleTime(t, recv, e.cfg.MaxClockSkew, e.cfg.MaxClockAge) {
				d.reading.Time = t
			}
		}
	}
	d.succeeded(recv, lastErr, e.log, e.m)
	if err := e.h.Handle(ctx, &d.reading); err != nil {
		d.hErrs.Inc()
		if n, ok := d.logs.allow(recv); ok {
			e.log.Warn("modbus reading not handled", "asset", d.asset.ID, "err", err, "suppressed", n)
		}
		return
	}
	d.reads.Inc()
}

// connectionLost reports whether err means the peer closed or reset the
// connection.
func connectionLost(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}
