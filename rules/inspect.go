package rules

import (
	"time"

	"github.com/citygw/citygw/devices"
)

// Read-only views of the engine's per-asset state, for the status page.
// Each takes the same locks as evaluation, copies what it returns and keeps
// no reference into the engine, so a caller may hold the results as long as
// it likes.

// Sample is one value of an asset's field history.
type Sample struct {
	Time  time.Time
	Value devices.Value
}

// AssetHistory returns the samples the engine keeps for an asset, oldest
// first, one series per field that has any: the engine keeps history only
// for fields some loaded rule reads through a window function (avg, delta,
// …), for as long as the longest such window. Unknown assets and assets
// without history give nil.
func (e *Engine) AssetHistory(id string) (fields []string, series [][]Sample) {
	a := e.inv.Lookup(id)
	st := e.stateOf(a)
	if st == nil {
		return nil, nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for i := 0; a.Schema != nil && i < len(a.Schema.Fields); i++ {
		r := st.ringOf(i)
		if r == nil || r.n == 0 {
			continue
		}
		ss := make([]Sample, r.n)
		for j := 0; j < int(r.n); j++ {
			t, v := r.at(j)
			ss[j] = Sample{Time: time.Unix(0, t), Value: v}
		}
		fields = append(fields, a.Schema.Fields[i].Name)
		series = append(series, ss)
	}
	return fields, series
}

// LastReading returns a copy of the last reading the engine evaluated for
// the asset: its sample time, when the gateway received it, and its values
// indexed by the kind's schema. ok is false for an unknown asset or one with
// no reading since the engine started (last values are not persisted).
func (e *Engine) LastReading(id string) (r devices.Reading, ok bool) {
	a := e.inv.Lookup(id)
	st := e.stateOf(a)
	if st == nil {
		return devices.Reading{}, false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.lastNs == 0 {
		return devices.Reading{}, false
	}
	r = devices.Reading{Asset: a, Time: time.Unix(0, st.lastNs), Received: time.Unix(0, st.seen.Load()),
		Values: st.lastValues(nil)}
	return r, true
}

// LastSeen writes every asset's last receive time (unix nanoseconds, indexed
// by the asset's Seq) into dst, growing it as needed, and returns it. An
// asset with no reading since the engine started, and none restored from
// the state file, is 0. It takes no locks and, given a dst of the
// inventory's length, allocates nothing.
func (e *Engine) LastSeen(dst []int64) []int64 {
	n := len(e.assets)
	if cap(dst) < n {
		dst = make([]int64, n)
	}
	dst = dst[:n]
	for i := range e.assets {
		ns := e.assets[i].seen.Load()
		if ns == e.start {
			ns = 0
		}
		dst[i] = ns
	}
	return dst
}

// AssetRule is one rule watching an asset (a rule of its kind) and the
// rule's state for that asset.
type AssetRule struct {
	Rule        string `json:"rule"`
	Description string `json:"description,omitempty"`
	Severity    string `json:"severity"`
	Shadow      bool   `json:"shadow,omitempty"`
	// Condition is the rule's `when` expression, or "absent <duration>".
	Condition string `json:"condition"`
	// Group is the key of the series the asset belongs to: its id for a
	// per-asset rule, the group (circuit, district, …) for a grouped one.
	Group   string `json:"group"`
	Grouped bool   `json:"grouped,omitempty"`
	// State is the series' state; for a grouped rule that is the group's.
	State State `json:"state"`
	// Since is when the state began: the episode start while pending, when
	// it fired while firing; zero while inactive.
	Since     time.Time `json:"since,omitzero"`
	EpisodeID string    `json:"episode_id,omitempty"`
	// Meets reports whether the asset itself met the condition at its last
	// evaluation.
	Meets bool `json:"meets"`
	// Members and Need: how many assets of the group meet the condition and
	// how many must for the group's condition to hold.
	Members int    `json:"members"`
	Need    int    `json:"need"`
	Muted   string `json:"muted,omitempty"` // silence or inhibiting episode
	// Healthy is false when the rule had a run-time error within the
	// engine's health window, or is quarantined.
	Healthy bool `json:"healthy"`
	// Health says which: ok, err or quarantined (over its evaluation time
	// budget repeatedly; not evaluated until the rules are reloaded).
	Health Health `json:"health"`
}

// AssetRules returns the loaded rules of the asset's kind, sorted by id,
// with each one's state for the asset. Unknown assets give nil.
func (e *Engine) AssetRules(id string) []AssetRule {
	a := e.inv.Lookup(id)
	set := e.set.Load()
	if e.stateOf(a) == nil || set == nil {
		return nil
	}
	now := time.Now().UnixNano()
	var out []AssetRule
	for _, cr := range set.rules {
		if cr.kind != a.Kind {
			continue
		}
		key := cr.key(a)
		ar := AssetRule{Rule: cr.id(), Description: cr.spec.Description, Severity: cr.spec.Severity, Shadow: cr.spec.Shadow,
			Condition: cr.spec.When, Group: key, Grouped: cr.groups != nil, Need: cr.need(key)}
		if cr.absent > 0 {
			ar.Condition = "absent " + cr.spec.Absent.String()
		}
		ar.Health = e.health(cr, now)
		ar.Healthy = ar.Health == HealthOK
		cr.st.mu.Lock()
		if s := cr.st.series[key]; s != nil {
			_, ar.Meets = s.members[a.Seq]
			ar.Members = len(s.members)
			ar.State, ar.Muted = s.state, s.muted
			switch s.state {
			case Pending:
				ar.Since, ar.EpisodeID = s.activeAt, s.id
			case Firing:
				ar.Since, ar.EpisodeID = s.firedAt, s.id
			}
		}
		cr.st.mu.Unlock()
		out = append(out, ar)
	}
	return out
}
