package sim

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/firmware-sim/faults"
	"github.com/citygw/citygw/firmware-sim/modbussrv"
)

// tables in the order of a device's packed register image.
var tables = [4]devices.Table{devices.Coil, devices.Discrete, devices.Input, devices.Holding}

func tableIndex(t devices.Table) int {
	switch t {
	case devices.Coil:
		return 0
	case devices.Discrete:
		return 1
	case devices.Input:
		return 2
	}
	return 3
}

// Device is one simulated Modbus device: its register image, what it does
// with requests, and the history of images it served.
type Device struct {
	Asset   *devices.Asset
	Profile *devices.Profile

	off  [5]int // start of each table in words; off[4] is the image size
	vals []devices.Value
	last []devices.Value // the values last encoded, to skip unchanged fields
	enc  []bool          // last[i] is encoded

	mu      sync.RWMutex
	words   []uint16 // coils and discrete inputs as 0/1, then input and holding registers
	devTime int64    // unix seconds of the tick the image is from
	reply   modbussrv.Reply
	hist    ring

	requests   atomic.Int64
	exceptions atomic.Int64
	silent     atomic.Int64
}

func newDevice(a *devices.Asset, histLen int) *Device {
	d := &Device{Asset: a, Profile: a.Profile}
	var size [4]int
	for i := range d.Profile.Fields {
		f := &d.Profile.Fields[i]
		ti := tableIndex(f.Table)
		if end := int(f.Address) + f.Registers; end > size[ti] {
			size[ti] = end
		}
	}
	for i := range size {
		d.off[i+1] = d.off[i] + size[i]
	}
	n := len(d.Profile.Fields)
	d.vals, d.last, d.enc = make([]devices.Value, n), make([]devices.Value, n), make([]bool, n)
	d.words = make([]uint16, d.off[4])
	d.hist = newRing(histLen, d.off[4])
	return d
}

// replyFor turns the faults in effect into the device's serving behaviour.
func replyFor(eff *faults.Effects) modbussrv.Reply {
	switch {
	case eff.Has(faults.Silent) || eff.Has(faults.CircuitDead):
		return modbussrv.Reply{Silent: true}
	case eff.Has(faults.ModbusException):
		return modbussrv.Reply{Exception: uint8(eff.Get(faults.ModbusException).Number("code", 4))}
	case eff.Has(faults.SlowReply):
		return modbussrv.Reply{Delay: eff.Get(faults.SlowReply).Duration("delay", 3*time.Second)}
	}
	return modbussrv.Reply{}
}

// commit encodes d.vals into the image atomically (readers see the whole
// previous or the whole new image) and records it in the history.
func (d *Device) commit(wall int64, eff *faults.Effects) []error {
	var errs []error
	d.mu.Lock()
	for i := range d.vals {
		v := d.vals[i]
		if d.enc[i] && v.Equal(d.last[i]) {
			continue
		}
		f := &d.Profile.Fields[i]
		base := d.off[tableIndex(f.Table)] + int(f.Address)
		switch {
		case f.Table.IsBit():
			d.words[base] = 0
			if v.Bool() {
				d.words[base] = 1
			}
		case f.Type == devices.RawBit:
			d.words[base] = f.EncodeBit(d.words[base], v.Bool())
		default:
			// Encode in place: no allocation per field per tick.
			if _, err := f.AppendModbus(d.words[base:base], v); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		d.last[i], d.enc[i] = v, true
	}
	d.devTime = wall
	d.reply = replyFor(eff)
	d.hist.add(wall, !d.reply.Silent && d.reply.Exception == 0, d.words)
	d.mu.Unlock()
	return errs
}

// setReply changes how the device answers without a new image.
func (d *Device) setReply(r modbussrv.Reply) {
	d.mu.Lock()
	d.reply = r
	d.mu.Unlock()
}

// Read implements modbussrv.Unit.
func (d *Device) Read(t devices.Table, addr, qty uint16) ([]uint16, modbussrv.Reply) {
	ti := tableIndex(t)
	d.mu.RLock()
	r := d.reply
	if r.Silent || r.Exception != 0 {
		d.mu.RUnlock()
		if r.Silent {
			d.silent.Add(1)
		} else {
			d.exceptions.Add(1)
		}
		return nil, r
	}
	lo, hi := d.off[ti]+int(addr), d.off[ti]+int(addr)+int(qty)
	if hi > d.off[ti+1] {
		d.mu.RUnlock()
		d.exceptions.Add(1)
		return nil, modbussrv.Reply{Exception: 2, Delay: r.Delay} // illegal data address
	}
	out := make([]uint16, qty)
	copy(out, d.words[lo:hi])
	d.mu.RUnlock()
	d.requests.Add(1)
	return out, r
}

// decode returns the field values an image decodes to, through the
// profile's decoder (exactly what a client reading the registers gets).
func (d *Device) decode(words []uint16) (map[string]any, map[string]string) {
	vals := make(map[string]any, len(d.Profile.Fields))
	var errs map[string]string
	var buf [2 * devices.MaxReadRegisters]byte
	for i := range d.Profile.Fields {
		f := &d.Profile.Fields[i]
		base := d.off[tableIndex(f.Table)] + int(f.Address)
		var data []byte
		if f.Table.IsBit() {
			data = buf[:1]
			data[0] = byte(words[base] & 1)
		} else {
			data = buf[:2*f.Registers]
			for j := 0; j < f.Registers; j++ {
				binary.BigEndian.PutUint16(data[2*j:], words[base+j])
			}
		}
		v, err := f.DecodeModbus(data, f.Address)
		if err != nil {
			if errs == nil {
				errs = map[string]string{}
			}
			errs[f.Name] = err.Error()
			continue
		}
		vals[f.Name] = v.Any()
	}
	return vals, errs
}

// ring is a bounded history of register images, one per tick.
type ring struct {
	width     int
	times     []int64
	answering []bool
	words     []uint16
	next, n   int
}

func newRing(n, width int) ring {
	if n < 1 {
		n = 1
	}
	return ring{width: width, times: make([]int64, n), answering: make([]bool, n), words: make([]uint16, n*width)}
}

func (r *ring) add(t int64, answering bool, words []uint16) {
	i := r.next
	r.times[i], r.answering[i] = t, answering
	copy(r.words[i*r.width:(i+1)*r.width], words)
	r.next = (i + 1) % len(r.times)
	if r.n < len(r.times) {
		r.n++
	}
}

// each calls fn for the entries from oldest to newest.
func (r *ring) each(fn func(t int64, answering bool, words []uint16)) {
	start := (r.next - r.n + len(r.times)) % len(r.times)
	for k := 0; k < r.n; k++ {
		i := (start + k) % len(r.times)
		fn(r.times[i], r.answering[i], r.words[i*r.width:(i+1)*r.width])
	}
}
