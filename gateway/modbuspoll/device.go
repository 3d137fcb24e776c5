package modbuspoll

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/prometheus/client_golang/prometheus"
)

// device is one polled unit. Everything but the fields under mu belongs to
// its endpoint's goroutine.
type device struct {
	asset    *devices.Asset
	prof     *devices.Profile
	endpoint string
	unit     uint8
	reqs     []Request
	interval time.Duration
	timeout  time.Duration

	next    time.Time // when the next poll is due
	backoff time.Duration
	reading devices.Reading
	strRaw  [][]byte        // by profile field: the raw bytes of the last decoded string
	strVal  []devices.Value // by profile field: the value decoded from strRaw
	logs    rateLimiter     // decode errors, exceptions, handler errors
	decErrs prometheus.Counter
	reads   prometheus.Counter
	hErrs   prometheus.Counter
	upGauge prometheus.Gauge
	perPoll prometheus.Gauge

	mu       sync.Mutex
	up       bool
	lastOK   time.Time
	lastErr  string
	failures int
	nextPub  time.Time
}

func newDevice(cfg *Config, a *devices.Asset, m *metrics) (*device, error) {
	p := a.Profile
	if p == nil || p.Transport != devices.Modbus {
		return nil, fmt.Errorf("asset %s: profile %q is not a Modbus profile", a.ID, a.Model)
	}
	if a.Schema == nil {
		return nil, fmt.Errorf("asset %s: no kind schema (load assets through devices.LoadInventory)", a.ID)
	}
	o := ProfilePlanOptions(p)
	if ov, ok := cfg.Plans[p.Model]; ok {
		o = ov.Apply(o)
	}
	if o.MaxRegisters < 0 || o.MaxRegisters > devices.MaxReadRegisters || o.MaxBits < 0 || o.MaxBits > devices.MaxReadBits || o.MaxGap < 0 {
		return nil, fmt.Errorf("asset %s: plan options for profile %s out of range: max_registers 1..%d, max_bits 1..%d, max_gap >= 0; got %+v",
			a.ID, p.Model, devices.MaxReadRegisters, devices.MaxReadBits, o)
	}
	reqs := Plan(p, o)
	if len(reqs) == 0 {
		return nil, fmt.Errorf("asset %s: profile %s has no Modbus fields", a.ID, p.Model)
	}
	for _, r := range reqs {
		if !r.Table.IsBit() && o.MaxRegisters > 0 && int(r.Count) > o.MaxRegisters {
			return nil, fmt.Errorf("asset %s: field %s of profile %s spans %d registers, more than max_registers %d",
				a.ID, p.Fields[r.Fields[0]].Name, p.Model, r.Count, o.MaxRegisters)
		}
	}
	d := &device{
		asset:    a,
		prof:     p,
		unit:     a.Modbus.Unit,
		reqs:     reqs,
		interval: cfg.DefaultInterval,
		timeout:  cfg.DefaultTimeout,
		strRaw:   make([][]byte, len(p.Fields)),
		strVal:   make([]devices.Value, len(p.Fields)),
		logs:     rateLimiter{every: cfg.LogEvery},
		decErrs:  m.decodeErrors.WithLabelValues("modbus", a.Kind),
		reads:    m.readings.WithLabelValues("modbus", a.Kind),
		hErrs:    m.handlerErrors.WithLabelValues(a.Kind),
		upGauge:  m.deviceUp.WithLabelValues(a.ID),
		perPoll:  m.perPoll.WithLabelValues(a.ID),
	}
	if iv := a.Modbus.Interval.D(); iv > 0 {
		d.interval = iv
	}
	if to := a.Modbus.Timeout.D(); to > 0 {
		d.timeout = to
	}
	for i := range p.Fields {
		if p.Fields[i].Type == devices.RawString {
			d.strRaw[i] = make([]byte, 0, 2*p.Fields[i].Registers)
		}
	}
	d.reading.Reset(a)
	return d, nil
}

// decode decodes the fields of request ri from its response into d.reading,
// counting and logging the fields that fail. It does not allocate unless a
// field fails or a string field changes.
func (d *device) decode(ri int, data []byte, now time.Time, log *slog.Logger) {
	r := &d.reqs[ri]
	for _, fi := range r.Fields {
		f := &d.prof.Fields[fi]
		if f.Type == devices.RawString {
			if v, ok := d.cachedString(fi, f, data, r.Start); ok {
				d.reading.Values[f.Index] = v
				continue
			}
		}
		v, err := f.DecodeModbus(data, r.Start)
		if err != nil {
			d.decErrs.Inc()
			d.logDecode(now, log, f, err)
			continue
		}
		if f.Type == devices.RawString {
			d.strRaw[fi] = append(d.strRaw[fi][:0], stringBytes(f, data, r.Start)...)
			d.strVal[fi] = v
		}
		d.reading.Values[f.Index] = v
	}
}

// stringBytes returns a string field's raw bytes in data, or nil if the
// response is too short (DecodeModbus then reports the error).
func stringBytes(f *devices.Field, data []byte, start uint16) []byte {
	lo := 2 * int(f.Address-start)
	hi := lo + 2*f.Registers
	if f.Address < start || hi > len(data) {
		return nil
	}
	return data[lo:hi]
}

// cachedString returns the string decoded last time if the field's bytes have
// not changed: strings (firmware versions, serial numbers) rarely do, and this
// keeps a steady poll free of allocations.
func (d *device) cachedString(fi int, f *devices.Field, data []byte, start uint16) (devices.Value, bool) {
	b := stringBytes(f, data, start)
	if b == nil || !d.strVal[fi].Valid() || !bytes.Equal(b, d.strRaw[fi]) {
		return devices.Value{}, false
	}
	return d.strVal[fi], true
}

func (d *device) logDecode(now time.Time, log *slog.Logger, f *devices.Field, err error) {
	if n, ok := d.logs.allow(now); ok {
		var de *devices.DecodeError
		reg := int(f.Address)
		if errors.As(err, &de) {
			reg = int(de.Address)
		}
		log.Warn("modbus field not decoded", "asset", d.asset.ID, "unit", d.unit, "table", string(f.Table),
			"register", reg, "field", f.Name, "err", err, "suppressed", n)
	}
}

// logRequest logs a failed request: an exception reply, a reply that was
// refused, a timeout or a lost connection.
func (d *device) logRequest(now time.Time, log *slog.Logger, r *Request, reason string, err error) {
	if n, ok := d.logs.allow(now); ok {
		log.Warn("modbus request failed", "asset", d.asset.ID, "unit", d.unit, "table", string(r.Table),
			"register", int(r.Start), "count", int(r.Count), "reason", reason, "err", err, "suppressed", n)
	}
}

// succeeded records a poll with at least one answer and schedules the next
// poll on the device's interval grid.
func (d *device) succeeded(now time.Time, lastErr error, log *slog.Logger, m *metrics) {
	d.backoff = 0
	d.next = d.next.Add(d.interval)
	if !d.next.After(now) {
		// Missed slots are skipped, keeping the phase.
		late := now.Sub(d.next)
		d.next = d.next.Add((late/d.interval + 1) * d.interval)
	}
	d.mu.Lock()
	was := d.up
	d.up, d.lastOK, d.failures, d.nextPub = true, now, 0, d.next
	if lastErr != nil {
		d.lastErr = lastErr.Error()
	}
	d.mu.Unlock()
	if !was {
		d.upGauge.Set(1)
		m.devicesUp.Inc()
		log.Info("modbus device up", "asset", d.asset.ID, "unit", d.unit)
	}
}

// failed records a poll without any answer. With reschedule the device backs
// off; without, the endpoint's reconnect backoff governs when it is tried
// again.
func (d *device) failed(now time.Time, err error, reschedule bool, cfg *Config, log *slog.Logger, m *metrics) {
	if reschedule {
		d.backoff = nextBackoff(d.backoff, cfg.BackoffMin, cfg.BackoffMax)
		d.next = now.Add(max(jitter(d.backoff), d.interval))
	}
	d.mu.Lock()
	was := d.up
	d.failures++
	d.lastErr = err.Error()
	d.nextPub = d.next
	down := was && d.failures >= cfg.OfflineAfter
	if down {
		d.up = false
	}
	failures := d.failures
	d.mu.Unlock()
	if down {
		d.upGauge.Set(0)
		m.devicesUp.Dec()
		log.Warn("modbus device offline", "asset", d.asset.ID, "unit", d.unit, "failures", failures,
			"err", err, "retry_in", d.next.Sub(now).Round(time.Millisecond))
	}
}

// rateLimiter lets one log line through per period and counts the rest.
type rateLimiter struct {
	every      time.Duration
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many lines were suppressed since
// the last one that was logged.
func (l *rateLimiter) allow(now time.Time) (int, bool) {
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return 0, false
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return n, true
}
