package modbuspoll

import (
	"fmt"
	"sort"

	"github.com/citygw/citygw/devices"
)

// PlanOptions bound the read requests Plan makes for one device.
type PlanOptions struct {
	// MaxRegisters is the most registers one read of a register table may ask
	// for (1..125; 0 or more than 125 means the protocol maximum, 125).
	MaxRegisters int `yaml:"max_registers,omitempty"`
	// MaxBits is the most coils or discrete inputs one read may ask for
	// (1..2000; 0 or more than 2000 means 2000).
	MaxBits int `yaml:"max_bits,omitempty"`
	// MaxGap is how many unused registers a request may span to merge two
	// blocks of fields into one read. For coils and discrete inputs the
	// allowance is MaxGap*16 bits: the same number of response bytes.
	MaxGap int `yaml:"max_gap,omitempty"`
	// OnePerField reads every field with its own request, for devices that
	// answer a read touching an unmapped register with an exception.
	OnePerField bool `yaml:"one_request_per_field,omitempty"`
}

// ProfilePlanOptions returns the profile's planning defaults.
func ProfilePlanOptions(p *devices.Profile) PlanOptions {
	return PlanOptions{
		MaxRegisters: p.Modbus.MaxRegisters,
		MaxBits:      p.Modbus.MaxBits,
		MaxGap:       p.Modbus.MaxGap,
		OnePerField:  p.Modbus.OnePerField,
	}
}

// PlanOverride changes some of a profile's PlanOptions; nil fields keep the
// profile's value. The gateway config keys overrides by profile model.
type PlanOverride struct {
	MaxRegisters *int  `yaml:"max_registers,omitempty"`
	MaxBits      *int  `yaml:"max_bits,omitempty"`
	MaxGap       *int  `yaml:"max_gap,omitempty"`
	OnePerField  *bool `yaml:"one_request_per_field,omitempty"`
}

// Apply returns o with the override's set fields replacing o's.
func (ov PlanOverride) Apply(o PlanOptions) PlanOptions {
	if ov.MaxRegisters != nil {
		o.MaxRegisters = *ov.MaxRegisters
	}
	if ov.MaxBits != nil {
		o.MaxBits = *ov.MaxBits
	}
	if ov.MaxGap != nil {
		o.MaxGap = *ov.MaxGap
	}
	if ov.OnePerField != nil {
		o.OnePerField = *ov.OnePerField
	}
	return o
}

// Request is one read: Count registers or bits of Table from Start, covering
// the profile fields Fields (indexes into Profile.Fields, in address order).
type Request struct {
	Table        devices.Table
	Start, Count uint16
	Fields       []int
}

// String names the request's span: "holding registers 100-109" (first and
// last address), "coil 0".
func (r Request) String() string {
	var what string
	switch r.Table {
	case devices.Coil:
		what = "coils"
	case devices.Discrete:
		what = "discrete inputs"
	case devices.Holding:
		what = "holding registers"
	case devices.Input:
		what = "input registers"
	default:
		return fmt.Sprintf("%s %d+%d", r.Table, r.Start, r.Count)
	}
	if r.Count == 1 {
		return fmt.Sprintf("%s %d", what[:len(what)-1], r.Start)
	}
	return fmt.Sprintf("%s %d-%d", what, r.Start, int(r.Start)+int(r.Count)-1)
}

// tableOrder is the order requests are issued in: by function code.
var tableOrder = [...]devices.Table{devices.Coil, devices.Discrete, devices.Holding, devices.Input}

// Plan computes the read requests for the profile's Modbus fields: per table,
// fields sorted by address are merged greedily into one request while the
// request stays within the cap and the unused stretch between the request so
// far and the next field is at most the gap allowance. A field is never split
// across requests; fields that overlap (bit fields of one register) share a
// request. For fields that do not overlap, greedy merging in address order
// gives the fewest requests: each request reaches as far as any request that
// starts at its first field could. A field longer than the cap gets a request
// of its own length (New rejects such a configuration). Fields of non-Modbus
// tables are ignored.
func Plan(p *devices.Profile, o PlanOptions) []Request {
	maxRegs := o.MaxRegisters
	if maxRegs <= 0 || maxRegs > devices.MaxReadRegisters {
		maxRegs = devices.MaxReadRegisters
	}
	maxBits := o.MaxBits
	if maxBits <= 0 || maxBits > devices.MaxReadBits {
		maxBits = devices.MaxReadBits
	}
	gap := max(o.MaxGap, 0)
	var reqs []Request
	idx := make([]int, 0, len(p.Fields))
	for _, t := range tableOrder {
		idx = idx[:0]
		for i := range p.Fields {
			if p.Fields[i].Table == t {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			continue
		}
		sort.SliceStable(idx, func(a, b int) bool {
			fa, fb := &p.Fields[idx[a]], &p.Fields[idx[b]]
			if fa.Address != fb.Address {
				return fa.Address < fb.Address
			}
			return fieldLen(fa) < fieldLen(fb)
		})
		limit, allow := maxRegs, gap
		if t.IsBit() {
			limit, allow = maxBits, gap*16
		}
		var cur *Request
		var end int // one past the last register/bit of cur
		for _, i := range idx {
			f := &p.Fields[i]
			fs, fe := int(f.Address), int(f.Address)+fieldLen(f)
			if cur != nil && !o.OnePerField && fs-end <= allow && max(end, fe)-int(cur.Start) <= limit {
				end = max(end, fe)
				cur.Count = uint16(end - int(cur.Start))
				cur.Fields = append(cur.Fields, i)
				continue
			}
			reqs = append(reqs, Request{Table: t, Start: f.Address, Count: uint16(fe - fs), Fields: []int{i}})
			cur, end = &reqs[len(reqs)-1], fe
		}
	}
	return reqs
}

// fieldLen is how many registers (or bits) a field occupies.
func fieldLen(f *devices.Field) int {
	if f.Table.IsBit() || f.Registers < 1 {
		return 1
	}
	return f.Registers
}
