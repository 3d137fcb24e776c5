package caseclient

import (
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/rules"
)

// Status is the case client's state for a status page.
type Status struct {
	OutboxDepth   int          `json:"outbox_depth"`
	OldestSeconds float64      `json:"outbox_oldest_seconds"`
	DeadLetters   int          `json:"dead_letters"`
	Sinks         []SinkStatus `json:"sinks"`
	Cases         []CaseStatus `json:"cases"` // newest first
}

// SinkStatus is one sink's health.
type SinkStatus struct {
	Name     string       `json:"name"`
	Type     string       `json:"type"`
	URL      string       `json:"url"`
	Breaker  BreakerState `json:"breaker"`
	Disabled bool         `json:"disabled"`
	Pending  int          `json:"pending"`
}

// CaseStatus is one episode's case(s).
type CaseStatus struct {
	Episode   string           `json:"episode"`
	Rule      string           `json:"rule"`
	Title     string           `json:"title"`
	Service   string           `json:"service"`
	Severity  string           `json:"severity"`
	Firing    bool             `json:"firing"`
	FirstSeen time.Time        `json:"first_seen"`
	EndedAt   time.Time        `json:"ended_at,omitzero"`
	Assets    []string         `json:"assets"`
	Sinks     []CaseSinkStatus `json:"sinks"`
}

// CaseSinkStatus is an episode's case at one sink.
type CaseSinkStatus struct {
	Sink     string    `json:"sink"`
	Key      string    `json:"key"`
	ID       string    `json:"id,omitempty"`
	Token    string    `json:"token,omitempty"`
	Status   string    `json:"status"`
	Link     string    `json:"link,omitempty"`
	Notes    string    `json:"notes,omitempty"`
	ReopenAt time.Time `json:"reopen_at,omitzero"`
	Previous []string  `json:"previous,omitempty"` // earlier cases: key=id
	// AttachedTo is the key of the case (opened by another replica for
	// the same anomaly) this episode was attached to, in replicas mode.
	AttachedTo string `json:"attached_to,omitempty"`
}

// Status returns the client's current state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	st := Status{OutboxDepth: len(c.pending), DeadLetters: c.dead}
	per := map[string]int{}
	var old time.Time
	for _, p := range c.pending {
		per[p.sink]++
		if old.IsZero() || p.enqueued.Before(old) {
			old = p.enqueued
		}
	}
	if !old.IsZero() {
		st.OldestSeconds = now.Sub(old).Seconds()
	}
	for _, s := range c.sinks {
		st.Sinks = append(st.Sinks, SinkStatus{Name: s.cfg.Name, Type: s.cfg.Type, URL: redactURL(s.cfg.URL), Breaker: s.br.State(now),
			Disabled: s.disabled.Load(), Pending: per[s.cfg.Name]})
	}
	for _, cs := range c.cases {
		x := CaseStatus{Episode: cs.Episode, Rule: cs.Rule, Severity: cs.Severity, Firing: cs.Firing, FirstSeen: cs.Start, EndedAt: cs.EndedAt}
		if cs.Case != nil {
			x.Title, x.Service, x.Assets = cs.Case.Title, cs.Case.Service, cs.Case.Assets
		}
		for _, name := range sortedKeys(cs.Sinks) {
			sc := cs.Sinks[name]
			y := CaseSinkStatus{Sink: name, Key: sc.Key, ID: sc.ID, Token: sc.Token, Status: sc.Status, Notes: sc.Notes,
				ReopenAt: sc.ReopenAt, Previous: sc.Previous, AttachedTo: sc.Attached}
			if s := c.byName[name]; s != nil && s.cfg.CaseURL != "" && sc.ID != "" {
				y.Link = strings.ReplaceAll(s.cfg.CaseURL, "{id}", sc.ID)
			}
			x.Sinks = append(x.Sinks, y)
		}
		st.Cases = append(st.Cases, x)
	}
	sort.Slice(st.Cases, func(i, j int) bool { return st.Cases[i].FirstSeen.After(st.Cases[j].FirstSeen) })
	return st
}

// RuleExpressions reads rule files and returns each rule's expression (its
// `when`, or "absent <duration>"), for SetRuleExpressions.
func RuleExpressions(files ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading rule file: %w", err)
		}
		var rf rules.RuleFile
		if _, err := yamlconf.Decode(f, data, &rf); err != nil {
			return nil, err
		}
		for _, r := range rf.Rules {
			if r == nil {
				continue
			}
			switch {
			case r.When != "":
				out[r.ID] = strings.TrimSpace(r.When)
			case r.Absent > 0:
				out[r.ID] = "absent " + r.Absent.String()
			}
		}
	}
	return out, nil
}

// redactURL drops credentials and the query (webhook URLs often carry a
// token) for display.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "[unparsable URL]"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "redacted"
	}
	return u.String()
}
