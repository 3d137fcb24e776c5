package modbuspoll

import (
	"fmt"
	"testing"

	"github.com/citygw/citygw/devices"
)

// builtin loads the shipped catalog once per test.
func builtin(t testing.TB) *devices.Catalog {
	t.Helper()
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

// span is a request written compactly for table tests.
type span struct {
	table        devices.Table
	start, count uint16
	fields       []string
}

func (s span) String() string {
	return fmt.Sprintf("%s %d+%d %v", s.table, s.start, s.count, s.fields)
}

func spans(p *devices.Profile, reqs []Request) []span {
	out := make([]span, len(reqs))
	for i, r := range reqs {
		out[i] = span{table: r.Table, start: r.Start, count: r.Count}
		for _, fi := range r.Fields {
			out[i].fields = append(out[i].fields, p.Fields[fi].Name)
		}
	}
	return out
}

func sameSpans(a, b []span) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].String() != b[i].String() {
			return false
		}
	}
	return true
}

// TestPlanBuiltinMinimal states, for each shipped Modbus profile, the fewest
// requests that can read it, counted by hand from the register maps in
// devices/profiles, and checks Plan finds exactly those requests.
func TestPlanBuiltinMinimal(t *testing.T) {
	cat := builtin(t)
	tests := []struct {
		model string
		// want is the hand-computed minimum:
		want []span
	}{
		{
			// citylight-slc200, max_gap 10:
			//   coil 0                       -> 1 request
			//   discrete 0                   -> 1 request
			//   holding 0 and 10..13: gap 1..9 is 9 <= 10 -> 1 request 0+14
			//   input 0..13, then 20..21: gap 14..19 is 6 <= 10 -> 1 request 0+22
			// = 4 requests.
			model: "citylight-slc200",
			want: []span{
				{devices.Coil, 0, 1, []string{"relay_on"}},
				{devices.Discrete, 0, 1, []string{"tilt_alarm"}},
				{devices.Holding, 0, 14, []string{"dim_level", "firmware"}},
				{devices.Input, 0, 22, []string{"voltage_v", "current_a", "power_w", "energy_kwh", "lamp_hours", "ambient_lux", "tilt_deg", "fault", "temperature_c", "power_factor", "device_time"}},
			},
		},
		{
			// citylight-ccu300, max_gap 8:
			//   discrete 0..1                          -> 1 request
			//   holding 0 (4 bits of one register) and 100..101: gap 1..99 is
			//   99 > 8                                 -> 2 requests
			//   input 0..6, 8..9 (gap 7 is 1), 10..14  -> 1 request 0+15
			// = 4 requests.
			model: "citylight-ccu300",
			want: []span{
				{devices.Discrete, 0, 2, []string{"door_open", "mains_ok"}},
				{devices.Holding, 0, 1, []string{"c1_on", "c2_on", "c3_on", "c4_on"}},
				{devices.Holding, 100, 2, []string{"device_time"}},
				{devices.Input, 0, 15, []string{"va_v", "vb_v", "vc_v", "ia_a", "ib_a", "ic_a", "leakage_ma", "energy_kwh", "frequency_hz", "c1_a", "c2_a", "c3_a", "c4_a"}},
			},
		},
		{
			// gasreg-rtu500, max_gap 8:
			//   discrete 0                                     -> 1 request
			//   holding 0..11, 20 (gap 12..19 is 8 <= 8), 21, 22,
			//   24..27 (gap 23 is 1), 28..29                   -> 1 request 0+30
			// = 2 requests.
			model: "gasreg-rtu500",
			want: []span{
				{devices.Discrete, 0, 1, []string{"door_open"}},
				{devices.Holding, 0, 30, []string{"inlet_pressure_kpa", "outlet_pressure_kpa", "flow_m3h", "temperature_c", "methane_lel_pct", "volume_m3", "valve_closed", "mains_ok", "on_battery", "battery_v", "alarm", "uptime_s", "device_time"}},
			},
		},
		{
			// binsense-ws3 is an MQTT profile: nothing to read over Modbus.
			model: "binsense-ws3",
			want:  []span{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			p := cat.Profile(tc.model)
			if p == nil {
				t.Fatalf("profile %s not shipped", tc.model)
			}
			got := spans(p, Plan(p, ProfilePlanOptions(p)))
			if !sameSpans(got, tc.want) {
				t.Errorf("Plan(%s):\n got %v\nwant %v", tc.model, got, tc.want)
			}
			checkPlan(t, p, ProfilePlanOptions(p), Plan(p, ProfilePlanOptions(p)))
		})
	}
}

// TestPlanBuiltinOptions checks how the gateway's overrides change the plans
// of the shipped profiles; counts are again by hand.
func TestPlanBuiltinOptions(t *testing.T) {
	cat := builtin(t)
	intp := func(i int) *int { return &i }
	boolp := func(b bool) *bool { return &b }
	tests := []struct {
		model string
		ov    PlanOverride
		want  int
		why   string
	}{
		{"citylight-slc200", PlanOverride{MaxGap: intp(0)}, 7,
			"coil 1 + discrete 1 + holding 2 (0, 10..13) + input 3 (0..10, 12..13: register 11 is unused, 20..21)"},
		{"citylight-slc200", PlanOverride{MaxGap: intp(5)}, 6,
			"input gap 11 (1) is spanned, holding gap 1..9 (9) and input gap 14..19 (6) are not: 1+1+2+2"},
		{"citylight-slc200", PlanOverride{MaxGap: intp(6)}, 5,
			"input gap 6 is spanned, holding gap 9 is not"},
		{"citylight-slc200", PlanOverride{MaxRegisters: intp(10)}, 7,
			"holding 0 and 10..13 span 14 > 10 -> 2; input 0..9 (10), then 10..13, then 20..21 (10..21 spans 12 > 10) -> 3; + coil 1 + discrete 1"},
		{"citylight-slc200", PlanOverride{OnePerField: boolp(true)}, 15, "one per field, 15 fields"},
		{"citylight-ccu300", PlanOverride{OnePerField: boolp(true)}, 20, "one per field, 20 fields, the 4 bits of holding 0 read 4 times"},
		{"gasreg-rtu500", PlanOverride{MaxGap: intp(7)}, 3, "holding gap 12..19 is 8 > 7: 0..11, 20..29"},
		{"gasreg-rtu500", PlanOverride{MaxRegisters: intp(12)}, 3, "holding 0..11 is exactly 12, then 20..29 spans 10; + discrete 1"},
	}
	for _, tc := range tests {
		t.Run(tc.model, func(t *testing.T) {
			p := cat.Profile(tc.model)
			o := tc.ov.Apply(ProfilePlanOptions(p))
			reqs := Plan(p, o)
			checkPlan(t, p, o, reqs)
			if len(reqs) != tc.want {
				t.Errorf("%s with %+v: %d requests %v, want %d (%s)", tc.model, o, len(reqs), spans(p, reqs), tc.want, tc.why)
			}
		})
	}
}

// fld is a synthetic field: table, address and length in registers.
type fld struct {
	name  string
	table devices.Table
	addr  uint16
	regs  int
}

func synth(fields ...fld) *devices.Profile {
	p := &devices.Profile{Model: "synthetic", Kind: "k", Transport: devices.Modbus}
	for _, f := range fields {
		p.Fields = append(p.Fields, devices.Field{Name: f.name, Table: f.table, Address: f.addr, Registers: f.regs, Type: devices.RawUint16})
	}
	return p
}

func TestPlanSynthetic(t *testing.T) {
	H, I, C, D := devices.Holding, devices.Input, devices.Coil, devices.Discrete
	tests := []struct {
		name   string
		fields []fld
		o      PlanOptions
		want   []span
	}{
		{
			name:   "contiguous fields make one request",
			fields: []fld{{"a", H, 0, 1}, {"b", H, 1, 2}, {"c", H, 3, 4}},
			want:   []span{{H, 0, 7, []string{"a", "b", "c"}}},
		},
		{
			name:   "fields are sorted by address whatever the profile order",
			fields: []fld{{"c", H, 3, 1}, {"a", H, 0, 1}, {"b", H, 1, 2}},
			want:   []span{{H, 0, 4, []string{"a", "b", "c"}}},
		},
		{
			name:   "a gap within max_gap is spanned",
			fields: []fld{{"a", H, 0, 1}, {"b", H, 4, 1}},
			o:      PlanOptions{MaxGap: 3},
			want:   []span{{H, 0, 5, []string{"a", "b"}}},
		},
		{
			name:   "a gap one over max_gap is not",
			fields: []fld{{"a", H, 0, 1}, {"b", H, 5, 1}},
			o:      PlanOptions{MaxGap: 3},
			want:   []span{{H, 0, 1, []string{"a"}}, {H, 5, 1, []string{"b"}}},
		},
		{
			name:   "no gap allowed by default",
			fields: []fld{{"a", I, 0, 1}, {"b", I, 2, 1}},
			want:   []span{{I, 0, 1, []string{"a"}}, {I, 2, 1, []string{"b"}}},
		},
		{
			name:   "the 125-register protocol cap splits a long block",
			fields: []fld{{"a", H, 0, 100}, {"b", H, 100, 25}, {"c", H, 125, 1}},
			want:   []span{{H, 0, 125, []string{"a", "b"}}, {H, 125, 1, []string{"c"}}},
		},
		{
			name:   "a per-device cap splits earlier",
			fields: []fld{{"a", H, 0, 2}, {"b", H, 2, 2}, {"c", H, 4, 2}, {"d", H, 6, 2}},
			o:      PlanOptions{MaxRegisters: 4},
			want:   []span{{H, 0, 4, []string{"a", "b"}}, {H, 4, 4, []string{"c", "d"}}},
		},
		{
			name:   "a multi-register field is never split: it starts the next request",
			fields: []fld{{"a", H, 0, 3}, {"b", H, 3, 2}},
			o:      PlanOptions{MaxRegisters: 4},
			want:   []span{{H, 0, 3, []string{"a"}}, {H, 3, 2, []string{"b"}}},
		},
		{
			name:   "a cap above the protocol maximum is the protocol maximum",
			fields: []fld{{"a", H, 0, 125}, {"b", H, 125, 1}},
			o:      PlanOptions{MaxRegisters: 1000},
			want:   []span{{H, 0, 125, []string{"a"}}, {H, 125, 1, []string{"b"}}},
		},
		{
			name:   "tables are never mixed; order is coil, discrete, holding, input",
			fields: []fld{{"i", I, 0, 1}, {"h", H, 0, 1}, {"d", D, 0, 1}, {"c", C, 0, 1}},
			o:      PlanOptions{MaxGap: 10},
			want:   []span{{C, 0, 1, []string{"c"}}, {D, 0, 1, []string{"d"}}, {H, 0, 1, []string{"h"}}, {I, 0, 1, []string{"i"}}},
		},
		{
			name:   "bits: the gap allowance is max_gap*16 bits",
			fields: []fld{{"a", C, 0, 1}, {"b", C, 33, 1}, {"c", C, 100, 1}},
			o:      PlanOptions{MaxGap: 2},
			want:   []span{{C, 0, 34, []string{"a", "b"}}, {C, 100, 1, []string{"c"}}},
		},
		{
			name:   "bits: the 2000-bit cap",
			fields: []fld{{"a", D, 0, 1}, {"b", D, 1999, 1}, {"c", D, 2000, 1}},
			o:      PlanOptions{MaxGap: 200},
			want:   []span{{D, 0, 2000, []string{"a", "b"}}, {D, 2000, 1, []string{"c"}}},
		},
		{
			name:   "bits: a per-device bit cap",
			fields: []fld{{"a", C, 0, 1}, {"b", C, 1, 1}, {"c", C, 2, 1}},
			o:      PlanOptions{MaxBits: 2},
			want:   []span{{C, 0, 2, []string{"a", "b"}}, {C, 2, 1, []string{"c"}}},
		},
		{
			name:   "overlapping fields: bit fields of one register share a request",
			fields: []fld{{"b0", H, 7, 1}, {"b1", H, 7, 1}, {"b2", H, 7, 1}, {"x", H, 8, 1}},
			o:      PlanOptions{MaxRegisters: 1},
			want:   []span{{H, 7, 1, []string{"b0", "b1", "b2"}}, {H, 8, 1, []string{"x"}}},
		},
		{
			name:   "overlapping fields of different lengths",
			fields: []fld{{"long", H, 0, 4}, {"lo", H, 2, 1}, {"word", H, 3, 2}},
			want:   []span{{H, 0, 5, []string{"long", "lo", "word"}}},
		},
		{
			name:   "one request per field",
			fields: []fld{{"a", H, 0, 1}, {"b", H, 1, 2}, {"c", H, 1, 2}, {"d", C, 0, 1}},
			o:      PlanOptions{OnePerField: true, MaxGap: 10},
			want:   []span{{C, 0, 1, []string{"d"}}, {H, 0, 1, []string{"a"}}, {H, 1, 2, []string{"b"}}, {H, 1, 2, []string{"c"}}},
		},
		{
			name:   "non-Modbus fields are ignored",
			fields: []fld{{"a", "", 0, 0}, {"b", H, 9, 1}},
			want:   []span{{H, 9, 1, []string{"b"}}},
		},
		{
			name:   "the top of the address space",
			fields: []fld{{"a", H, 65534, 2}, {"b", H, 65500, 1}},
			o:      PlanOptions{MaxGap: 40},
			want:   []span{{H, 65500, 36, []string{"b", "a"}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := synth(tc.fields...)
			reqs := Plan(p, tc.o)
			if got := spans(p, reqs); !sameSpans(got, tc.want) {
				t.Errorf("Plan:\n got %v\nwant %v", got, tc.want)
			}
			checkPlan(t, p, tc.o, reqs)
		})
	}
}

// checkPlan asserts the plan's invariants: every Modbus field is in exactly
// one request of its table whose range holds it, no request is empty or over
// the cap (unless it is one field longer than the cap), and spans stay within
// the address space.
func checkPlan(t testing.TB, p *devices.Profile, o PlanOptions, reqs []Request) {
	t.Helper()
	maxRegs, maxBits := o.MaxRegisters, o.MaxBits
	if maxRegs <= 0 || maxRegs > devices.MaxReadRegisters {
		maxRegs = devices.MaxReadRegisters
	}
	if maxBits <= 0 || maxBits > devices.MaxReadBits {
		maxBits = devices.MaxReadBits
	}
	seen := make([]int, len(p.Fields))
	for ri, r := range reqs {
		limit := maxRegs
		if r.Table.IsBit() {
			limit = maxBits
		}
		if r.Count == 0 || len(r.Fields) == 0 {
			t.Fatalf("request %d is empty: %+v", ri, r)
		}
		if int(r.Start)+int(r.Count) > 65536 {
			t.Fatalf("request %d runs past address 65535: %+v", ri, r)
		}
		if int(r.Count) > limit && !(len(r.Fields) == 1 && fieldLen(&p.Fields[r.Fields[0]]) == int(r.Count)) {
			t.Fatalf("request %d asks for %d, over the cap %d: %+v", ri, r.Count, limit, r)
		}
		if o.OnePerField && len(r.Fields) != 1 {
			t.Fatalf("request %d has %d fields with one_request_per_field", ri, len(r.Fields))
		}
		for _, fi := range r.Fields {
			f := &p.Fields[fi]
			seen[fi]++
			if f.Table != r.Table {
				t.Fatalf("field %s of table %s in a request of table %s", f.Name, f.Table, r.Table)
			}
			if f.Address < r.Start || int(f.Address)+fieldLen(f) > int(r.Start)+int(r.Count) {
				t.Fatalf("field %s (%d+%d) outside request %d+%d", f.Name, f.Address, fieldLen(f), r.Start, r.Count)
			}
		}
	}
	for i, n := range seen {
		f := &p.Fields[i]
		modbus := f.Table == devices.Coil || f.Table == devices.Discrete || f.Table == devices.Holding || f.Table == devices.Input
		if modbus && n != 1 {
			t.Fatalf("field %s is in %d requests, want exactly 1", f.Name, n)
		}
		if !modbus && n != 0 {
			t.Fatalf("non-Modbus field %s is in a request", f.Name)
		}
	}
}

// FuzzPlan builds a profile from the fuzzer's bytes (4 bytes a field: table,
// address high and low, length) and options, and checks the plan's
// invariants. It also checks minimality for fields that do not overlap and
// one table: no two neighbouring requests could have been one.
func FuzzPlan(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 1, 0, 0, 1, 2, 0, 10, 4, 3, 0, 0, 2}, uint8(0), uint16(0), uint8(10), false)
	f.Add([]byte{2, 0, 0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2, 0, 1, 4, 2, 255, 255, 1}, uint8(3), uint16(1), uint8(0), true)
	f.Add([]byte{0, 7, 208, 1, 0, 0, 0, 1, 1, 3, 231, 1}, uint8(0), uint16(2000), uint8(255), false)
	f.Fuzz(func(t *testing.T, raw []byte, maxRegs uint8, maxBits uint16, gap uint8, one bool) {
		tables := [...]devices.Table{devices.Coil, devices.Discrete, devices.Holding, devices.Input, ""}
		var fields []fld
		for i := 0; i+4 <= len(raw) && len(fields) < 300; i += 4 {
			tb := tables[int(raw[i])%len(tables)]
			addr := uint16(raw[i+1])<<8 | uint16(raw[i+2])
			n := 1
			if !tb.IsBit() && tb != "" {
				n = 1 + int(raw[i+3])%8
			}
			if int(addr)+n > 65536 {
				addr = uint16(65536 - n)
			}
			fields = append(fields, fld{fmt.Sprint("f", i/4), tb, addr, n})
		}
		p := synth(fields...)
		o := PlanOptions{MaxRegisters: int(maxRegs), MaxBits: int(maxBits), MaxGap: int(gap), OnePerField: one}
		reqs := Plan(p, o)
		checkPlan(t, p, o, reqs)
		if one {
			return
		}
		// Neighbouring requests of one table must not have been mergeable
		// when their fields do not overlap anything.
		for i := 1; i < len(reqs); i++ {
			a, b := reqs[i-1], reqs[i]
			if a.Table != b.Table {
				continue
			}
			limit, allow := o.MaxRegisters, o.MaxGap
			if limit <= 0 || limit > devices.MaxReadRegisters {
				limit = devices.MaxReadRegisters
			}
			if a.Table.IsBit() {
				limit, allow = o.MaxBits, o.MaxGap*16
				if limit <= 0 || limit > devices.MaxReadBits {
					limit = devices.MaxReadBits
				}
			}
			aEnd, bEnd := int(a.Start)+int(a.Count), int(b.Start)+int(b.Count)
			if int(b.Start) >= aEnd && int(b.Start)-aEnd <= allow && bEnd-int(a.Start) <= limit {
				t.Fatalf("requests %d+%d and %d+%d of %s could be one (cap %d, gap %d)", a.Start, a.Count, b.Start, b.Count, a.Table, limit, allow)
			}
		}
	})
}
