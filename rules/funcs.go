package rules

import (
	"errors"
	"fmt"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/expr-lang/expr/vm"
)

// errNoData is returned by functions that lack history (prev on the first
// reading, avg over an empty window). It makes the condition false without
// marking the rule unhealthy, as an absent series does in Prometheus.
var errNoData = errors.New("no data")

// evalCtx is what an expression sees while it runs: the asset, its current
// and previous values and history, and the evaluation time. One is taken
// from a pool per reading (or per Tick pass), so evaluating a rule allocates
// nothing of ours: field values are boxed once per reading, aggregates once
// per reading and window, however many rules use them.
type evalCtx struct {
	vm      vm.VM
	ks      *kindSet
	asset   *devices.Asset
	st      *assetState
	vals    []devices.Value
	now     time.Time
	nowNs   int64
	loc     *time.Location
	boxed   []any
	boxOK   []bool
	memo    []any
	memoOK  []bool
	sunOK   bool
	sun     float64
	sunBox  any
	locOK   bool
	local   time.Time
	ageOK   bool
	ageBox  any
	todOK   bool
	todBox  any
	pmemo   []any // asset properties by kindSet.props slot
	pmemoOK []bool
	svm     vm.VM // runs shared sub-expressions (kindSet.subs) while vm runs a rule
	smemo   []any
	smemoOK []bool
	serr    []error
	out     []Transition
	pboxed  []any
	pboxOK  []bool
	timed   bool // time each rule against the rule budget
	// scratch holds an asset's decoded last reading on a Tick.
	scratch []devices.Value
}

func newEvalCtx(loc *time.Location) *evalCtx {
	c := &evalCtx{loc: loc}
	c.vm.MemoryBudget = maxExprMemory
	c.svm.MemoryBudget = maxExprMemory
	return c
}

// must panics with err; expr's VM recovers it into the run's error.
func must(v any, err error) any {
	if err != nil {
		panic(err)
	}
	return v
}

func fieldBool(c *evalCtx, i int) bool {
	b, _ := must(c.field(i)).(bool)
	return b
}

// timeBool is the boolean context function of a code (tbDark, ...).
func (c *evalCtx) timeBool(code int) bool {
	switch code {
	case tbDark:
		return c.sunElevation() < DarkElevation
	case tbDay:
		return c.sunElevation() > DayElevation
	case tbWeekend:
		d := c.localTime().Weekday()
		return d == time.Saturday || d == time.Sunday
	}
	v := code - tbBetween
	return between(c.localTime(), v/1440, v%1440)
}

// prop is the asset property of memo slot i (kindSet.props), boxed once
// per reading.
func (c *evalCtx) prop(i int) (any, error) {
	if i < len(c.pmemoOK) && c.pmemoOK[i] {
		return c.pmemo[i], nil
	}
	p := c.ks.props[i]
	var v any
	switch {
	case !p.builtin:
		var err error
		if v, err = c.attr(p.name); err != nil {
			return nil, err
		}
	case p.name == "lat":
		v = c.asset.Lat
	case p.name == "lon":
		v = c.asset.Lon
	default:
		v = assetProp(c.asset, p.name)
	}
	if i < len(c.pmemoOK) {
		c.pmemo[i], c.pmemoOK[i] = v, true
	}
	return v, nil
}

// timeFunc is the context function of a code (tAge, ...), the float ones
// boxed once per reading.
func (c *evalCtx) timeFunc(code int) (any, error) {
	switch code {
	case tAge:
		if !c.ageOK {
			v, _ := ctxFuncs["__age"](c)
			c.ageBox, c.ageOK = v, true
		}
		return c.ageBox, nil
	case tSun:
		c.sunElevation()
		return c.sunBox, nil
	case tTod:
		if !c.todOK {
			v, _ := ctxFuncs["__tod"](c)
			c.todBox, c.todOK = v, true
		}
		return c.todBox, nil
	case tHour:
		return c.localTime().Hour(), nil
	case tMinute:
		return c.localTime().Minute(), nil
	case tWeekday:
		return int(c.localTime().Weekday()), nil
	}
	return nil, fmt.Errorf("internal: unknown context function %d", code)
}

func (c *evalCtx) reset(ks *kindSet, a *devices.Asset, st *assetState, vals []devices.Value, now time.Time, loc *time.Location) {
	c.ks, c.asset, c.st, c.vals, c.now, c.nowNs, c.loc = ks, a, st, vals, now, now.UnixNano(), loc
	n := len(vals)
	if cap(c.boxed) < n {
		c.boxed, c.boxOK = make([]any, n), make([]bool, n)
		c.pboxed, c.pboxOK = make([]any, n), make([]bool, n)
	}
	c.boxed, c.boxOK = c.boxed[:n], c.boxOK[:n]
	c.pboxed, c.pboxOK = c.pboxed[:n], c.pboxOK[:n]
	clear(c.boxOK)
	clear(c.pboxOK)
	m := 0
	if ks != nil {
		m = len(ks.aggs)
	}
	if cap(c.memo) < m {
		c.memo, c.memoOK = make([]any, m), make([]bool, m)
	}
	c.memo, c.memoOK = c.memo[:m], c.memoOK[:m]
	clear(c.memoOK)
	np := 0
	if ks != nil {
		np = len(ks.props)
	}
	if cap(c.pmemo) < np {
		c.pmemo, c.pmemoOK = make([]any, np), make([]bool, np)
	}
	c.pmemo, c.pmemoOK = c.pmemo[:np], c.pmemoOK[:np]
	clear(c.pmemoOK)
	ns := 0
	if ks != nil {
		ns = len(ks.subs)
	}
	if cap(c.smemo) < ns {
		c.smemo, c.smemoOK, c.serr = make([]any, ns), make([]bool, ns), make([]error, ns)
	}
	c.smemo, c.smemoOK, c.serr = c.smemo[:ns], c.smemoOK[:ns], c.serr[:ns]
	clear(c.smemoOK)
	c.sunOK, c.locOK, c.ageOK, c.todOK = false, false, false, false
}

// release drops references so a pooled context does not pin readings.
func (c *evalCtx) release() {
	c.ks, c.asset, c.st, c.vals = nil, nil, nil, nil
	clear(c.boxed)
	clear(c.pboxed)
	clear(c.memo)
	clear(c.pmemo)
	clear(c.smemo)
	clear(c.serr)
	c.ageBox, c.todBox, c.sunBox = nil, nil, nil
	clear(c.out)
	c.out = c.out[:0]
}

// errIncomplete is returned for a field the asset's model does report but
// this reading lacks (a Modbus request of the poll failed, a payload left it
// out): the rule cannot be judged on this reading, which says nothing about
// the rule's health.
var errIncomplete = errors.New("incomplete reading")

// MissingFieldError is the run-time error of a rule reading a field the
// asset's model never reports (a kind with several models): a rule problem.
type MissingFieldError struct{ Field string }

func (e *MissingFieldError) Error() string { return "field " + e.Field + " missing from the reading" }

func box(v devices.Value) any {
	switch v.Type {
	case devices.Bool:
		return v.I != 0
	case devices.Int:
		return int(v.I)
	case devices.Float:
		return v.F
	case devices.String:
		return v.S
	}
	return nil
}

func (c *evalCtx) field(i int) (any, error) {
	if c.boxOK[i] {
		return c.boxed[i], nil
	}
	v := c.vals[i]
	if !v.Valid() {
		if c.st != nil && c.st.lastNs == 0 {
			return nil, errNoData // never reported (a Tick evaluation)
		}
		name := c.ks.schema.Fields[i].Name
		if c.asset != nil && c.asset.Profile != nil && c.asset.Profile.Field(name) != nil {
			return nil, errIncomplete
		}
		return nil, &MissingFieldError{name}
	}
	b := box(v)
	c.boxed[i], c.boxOK[i] = b, true
	return b, nil
}

func fnField(params ...any) (any, error) {
	return params[0].(*evalCtx).field(params[1].(int))
}

func (c *evalCtx) prevField(i int) (any, error) {
	if c.pboxOK[i] {
		return c.pboxed[i], nil
	}
	if c.st == nil {
		return nil, errNoData
	}
	v := c.st.prevValue(i)
	if !v.Valid() {
		return nil, errNoData
	}
	b := box(v)
	c.pboxed[i], c.pboxOK[i] = b, true
	return b, nil
}

func fnPrev(params ...any) (any, error) {
	return params[0].(*evalCtx).prevField(params[1].(int))
}

func (c *evalCtx) agg(slot int) (any, error) {
	if c.memoOK[slot] {
		if c.memo[slot] == nil {
			return nil, errNoData
		}
		return c.memo[slot], nil
	}
	spec := c.ks.aggs[slot]
	c.memoOK[slot] = true
	var r *ring
	if c.st != nil {
		r = c.st.ringOf(spec.field)
	}
	if r == nil {
		c.memo[slot] = nil
		return nil, errNoData
	}
	v, ok := r.aggregate(spec.op, c.nowNs, spec.window)
	if !ok {
		c.memo[slot] = nil
		return nil, errNoData
	}
	c.memo[slot] = v
	return v, nil
}

func fnAgg(params ...any) (any, error) {
	return params[0].(*evalCtx).agg(params[1].(int))
}

func fnAssetString(params ...any) (any, error) {
	c := params[0].(*evalCtx)
	return assetProp(c.asset, params[1].(string)), nil
}

func fnAssetFloat(params ...any) (any, error) {
	c := params[0].(*evalCtx)
	if params[1].(string) == "lat" {
		return c.asset.Lat, nil
	}
	return c.asset.Lon, nil
}

func (c *evalCtx) attr(name string) (any, error) {
	v, ok := c.asset.Attrs[name]
	if !ok {
		return nil, fmt.Errorf("asset %s has no attribute %s", c.asset.ID, name)
	}
	return v, nil
}

func fnAttr(params ...any) (any, error) {
	return params[0].(*evalCtx).attr(params[1].(string))
}

func (c *evalCtx) localTime() time.Time {
	if !c.locOK {
		c.local, c.locOK = c.now.In(c.loc), true
	}
	return c.local
}

func (c *evalCtx) sunElevation() float64 {
	if !c.sunOK {
		c.sun, c.sunOK = sunElevation(c.now, c.asset.Lat, c.asset.Lon), true
		c.sunBox = c.sun
	}
	return c.sun
}

func fnBetween(params ...any) (any, error) {
	c := params[0].(*evalCtx)
	return between(c.localTime(), params[1].(int), params[2].(int)), nil
}

// between reports whether t's time of day is in [from, to) minutes after
// midnight; a range with from > to wraps midnight.
func between(t time.Time, from, to int) bool {
	m := t.Hour()*60 + t.Minute()
	if from <= to {
		return m >= from && m < to
	}
	return m >= from || m < to
}

// ctxFuncs are the argument-less functions of the context.
var ctxFuncs = map[string]func(*evalCtx) (any, error){
	"__age": func(c *evalCtx) (any, error) {
		if c.st == nil {
			return 0.0, nil
		}
		return float64(max(0, c.nowNs-c.st.seenNs())) / 1e9, nil
	},
	"__sun": func(c *evalCtx) (any, error) {
		c.sunElevation()
		return c.sunBox, nil
	},
	"__dark": func(c *evalCtx) (any, error) { return c.sunElevation() < DarkElevation, nil },
	"__day":  func(c *evalCtx) (any, error) { return c.sunElevation() > DayElevation, nil },
	"__hour": func(c *evalCtx) (any, error) { return c.localTime().Hour(), nil },
	"__minute": func(c *evalCtx) (any, error) {
		return c.localTime().Minute(), nil
	},
	"__weekday": func(c *evalCtx) (any, error) { return int(c.localTime().Weekday()), nil },
	"__tod": func(c *evalCtx) (any, error) {
		t := c.localTime()
		return float64(t.Hour()) + float64(t.Minute())/60 + float64(t.Second())/3600, nil
	},
	"__weekend": func(c *evalCtx) (any, error) {
		d := c.localTime().Weekday()
		return d == time.Saturday || d == time.Sunday, nil
	},
}

// value computes a probe for evidence.
func (c *evalCtx) probeValue(p probe) any {
	var v any
	var err error
	switch p.kind {
	case probeField:
		v, err = c.field(p.idx)
	case probeAgg:
		v, err = c.agg(p.idx)
	case probeAttr:
		v = c.asset.Attrs[p.attr]
	case probeFunc:
		v, err = p.fn(c)
	}
	if err != nil {
		return nil
	}
	return v
}
