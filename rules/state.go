package rules

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/citygw/citygw/devices"
)

// State is an episode's state, with Prometheus alerting semantics.
type State uint8

// States. A transition to Inactive from Firing is a resolution ("cleared");
// from Pending it is a cancellation (the condition did not hold for `for`).
const (
	Inactive State = iota
	Pending
	Firing
)

var stateNames = [...]string{"inactive", "pending", "firing"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// MarshalText implements encoding.TextMarshaler.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if n == string(b) {
			*s = State(i)
			return nil
		}
	}
	*s = Inactive
	return nil
}

// Transition is one change of an episode's state, as the sink sees it.
type Transition struct {
	EpisodeID   string            `json:"episode_id"` // from rule id + group key + episode start; never values
	Rule        string            `json:"rule"`
	Kind        string            `json:"kind"`
	GroupKey    string            `json:"group_key"`
	GroupLabels map[string]string `json:"group_labels"`
	Assets      []string          `json:"assets"` // assets meeting the condition (sorted)
	GroupSize   int               `json:"group_size,omitempty"`
	From        State             `json:"from"`
	To          State             `json:"to"`
	Reason      string            `json:"reason,omitempty"` // cleared, cancelled, rule_removed, rule_changed, unmuted
	Time        time.Time         `json:"time"`
	Start       time.Time         `json:"start"` // episode start (the condition first held)
	Severity    string            `json:"severity"`
	Labels      map[string]string `json:"labels"` // rule labels, severity and group labels
	Shadow      bool              `json:"shadow,omitempty"`
	Values      map[string]any    `json:"values,omitempty"`     // what the expression read when it fired
	Thresholds  map[string]any    `json:"thresholds,omitempty"` // the comparisons' constants and asset limits
	Title       string            `json:"title"`
	Description string            `json:"description,omitempty"`
	Service     string            `json:"service"`
}

// Resolved reports whether the transition ends a firing episode.
func (t *Transition) Resolved() bool { return t.From == Firing && t.To == Inactive }

// Episode is a pending or firing episode, for status pages.
type Episode struct {
	ID          string            `json:"id"`
	Rule        string            `json:"rule"`
	Kind        string            `json:"kind"`
	GroupKey    string            `json:"group_key"`
	GroupLabels map[string]string `json:"group_labels"`
	Assets      []string          `json:"assets"`
	State       State             `json:"state"`
	Start       time.Time         `json:"start"`
	FiredAt     time.Time         `json:"fired_at,omitempty"`
	Severity    string            `json:"severity"`
	Shadow      bool              `json:"shadow,omitempty"`
	Muted       string            `json:"muted,omitempty"` // silence or inhibiting episode
	Notified    State             `json:"notified"`        // what the sink has been told
	Values      map[string]any    `json:"values,omitempty"`
	Title       string            `json:"title,omitempty"`
	Description string            `json:"description,omitempty"`
}

// series is the state of one rule for one group key.
type series struct {
	key        string
	labels     map[string]string
	state      State
	notified   State
	activeAt   time.Time
	firedAt    time.Time
	falseSince time.Time
	members    map[int]struct{} // asset Seq meeting the condition
	rep        *devices.Asset   // the asset that last made the condition true
	id         string
	values     map[string]any
	muted      string
	title      string
	desc       string
	assets     []string // the assets at the last notified pending/firing
}

// ruleState is a rule's series; it moves to the new compiled rule on a
// reload when the rule's fingerprint is unchanged.
type ruleState struct {
	mu     sync.Mutex
	series map[string]*series
	// nseries is len(series), kept by setSeries and deleteSeries, so that
	// a false condition on a rule without any series (nearly always)
	// costs no lock and no lookup.
	nseries atomic.Int32
	lastErr atomic.Int64 // unix ns of the last run-time error
	lastLog atomic.Int64
	dropped atomic.Int64 // errors not logged since the last log line
	dirty   atomic.Bool
	// persisted: the state file holds this rule's record under this
	// rule's fingerprint (written whole, or restored from), so single
	// series may be written into it. Guarded by mu.
	persisted bool
}

func newRuleState() *ruleState { return &ruleState{series: map[string]*series{}} }

// setSeries adds or replaces a series. Called with rs.mu held.
func (rs *ruleState) setSeries(key string, s *series) {
	rs.series[key] = s
	rs.nseries.Store(int32(len(rs.series)))
}

// deleteSeries removes a series. Called with rs.mu held.
func (rs *ruleState) deleteSeries(key string) {
	delete(rs.series, key)
	rs.nseries.Store(int32(len(rs.series)))
}

// episodeID names an episode: the same rule, group and start always give
// the same id, across retries, restarts and replicas.
func episodeID(rule, key string, start time.Time) string {
	h := sha256.New()
	h.Write([]byte(rule))
	h.Write([]byte{0})
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(start.UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// step advances a series' state machine for condition cond at time now and
// reports the state it left (ok false when unchanged).
func step(cr *compiledRule, s *series, cond bool, now time.Time) (from State, changed bool) {
	from = s.state
	switch s.state {
	case Inactive:
		if !cond {
			return from, false
		}
		s.state, s.activeAt, s.falseSince = Pending, now, time.Time{}
		s.id = episodeID(cr.id(), s.key, now)
		if cr.forD <= 0 {
			s.state, s.firedAt = Firing, now
		}
		return from, true
	case Pending:
		if !cond {
			s.state = Inactive
			return from, true
		}
		if now.Sub(s.activeAt) >= cr.forD {
			s.state, s.firedAt = Firing, now
			return from, true
		}
	case Firing:
		if cond {
			s.falseSince = time.Time{}
			return from, false
		}
		if s.falseSince.IsZero() {
			s.falseSince = now
		}
		if now.Sub(s.falseSince) >= cr.keep {
			s.state = Inactive
			return from, true
		}
	}
	return from, false
}

func (s *series) memberIDs(inv *devices.Inventory) []string {
	ids := make([]string, 0, len(s.members))
	for seq := range s.members {
		if inv != nil && seq < inv.Len() {
			ids = append(ids, inv.Assets[seq].ID)
		}
	}
	sort.Strings(ids)
	return ids
}
