package rules

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/citygw/citygw/devices"
	bolt "go.etcd.io/bbolt"
)

// The state file holds, per rule, its fingerprint and its non-inactive
// series (episode id and start, pending timer, keep_firing_for timer, what
// the sink was told, members), and when each asset last reported. It is
// written on every transition before the sink hears of it, so a restart
// neither drops a firing episode nor opens a second one for the same anomaly.

var (
	bucketRules = []byte("rules")
	bucketMeta  = []byte("meta")
	keySeen     = []byte("seen")
)

type stateDB struct{ db *bolt.DB }

type ruleRecord struct {
	Fingerprint string         `json:"fingerprint"`
	Series      []seriesRecord `json:"series"`
}

type seriesRecord struct {
	Key        string            `json:"key"`
	Labels     map[string]string `json:"labels"`
	State      State             `json:"state"`
	Notified   State             `json:"notified"`
	ActiveAt   time.Time         `json:"active_at"`
	FiredAt    time.Time         `json:"fired_at,omitzero"`
	FalseSince time.Time         `json:"false_since,omitzero"`
	Members    []string          `json:"members"`
	Rep        string            `json:"rep,omitempty"`
	ID         string            `json:"id"`
	Values     map[string]any    `json:"values,omitempty"`
}

func openStateDB(path string) (*stateDB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening rule state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRules, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("preparing rule state %s: %w", path, err)
	}
	return &stateDB{db: db}, nil
}

func (d *stateDB) close() error { return d.db.Close() }

func (d *stateDB) load() (map[string]*ruleRecord, map[string]int64, error) {
	recs := map[string]*ruleRecord{}
	seen := map[string]int64{}
	err := d.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketRules).ForEach(func(k, v []byte) error {
			var r ruleRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("rule %s: %w", k, err)
			}
			recs[string(k)] = &r
			return nil
		})
		if err != nil {
			return err
		}
		if v := tx.Bucket(bucketMeta).Get(keySeen); v != nil {
			return json.Unmarshal(v, &seen)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reading rule state: %w", err)
	}
	return recs, seen, nil
}

// saveRule writes a rule's series (or deletes its record when it has none).
func (d *stateDB) saveRule(cr *compiledRule, inv *devices.Inventory) error {
	cr.st.mu.Lock()
	cr.st.dirty.Store(false)
	rec := ruleRecord{Fingerprint: cr.fingerprint}
	for _, s := range cr.st.series {
		if s.state == Inactive && s.notified == Inactive {
			continue
		}
		sr := seriesRecord{Key: s.key, Labels: s.labels, State: s.state, Notified: s.notified, ActiveAt: s.activeAt,
			FiredAt: s.firedAt, FalseSince: s.falseSince, Members: s.memberIDs(inv), ID: s.id, Values: s.values}
		if s.rep != nil {
			sr.Rep = s.rep.ID
		}
		rec.Series = append(rec.Series, sr)
	}
	cr.st.mu.Unlock()
	return d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRules)
		if len(rec.Series) == 0 {
			return b.Delete([]byte(cr.id()))
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return b.Put([]byte(cr.id()), data)
	})
}

func (d *stateDB) deleteRule(id string) error {
	return d.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketRules).Delete([]byte(id)) })
}

// saveSeen writes the JSON object {asset id: unix ns} of when assets were
// last seen (Engine.appendSeenJSON).
func (d *stateDB) saveSeen(data []byte) error {
	return d.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySeen, data) })
}

// restore rebuilds a rule's series from its record.
func (e *Engine) restore(cr *compiledRule, rec *ruleRecord) {
	for _, sr := range rec.Series {
		s := &series{key: sr.Key, labels: sr.Labels, state: sr.State, notified: sr.Notified, activeAt: sr.ActiveAt,
			firedAt: sr.FiredAt, falseSince: sr.FalseSince, members: map[int]struct{}{}, id: sr.ID, values: sr.Values}
		for _, id := range sr.Members {
			if a := e.inv.Lookup(id); a != nil {
				s.members[a.Seq] = struct{}{}
			}
		}
		s.rep = e.inv.Lookup(sr.Rep)
		s.assets = sr.Members
		if s.labels == nil {
			s.labels = map[string]string{"asset": s.key}
		}
		cr.st.setSeries(s.key, s)
		if s.state == Firing {
			e.setFiring(cr, s, true)
		}
	}
}

// endRecord resolves the notified episodes of a persisted rule that is no
// longer loaded as it was (cr is the changed rule, or nil when removed) and
// drops the record.
func (e *Engine) endRecord(id string, rec *ruleRecord, cr *compiledRule, now time.Time, reason string) []Transition {
	var out []Transition
	for _, sr := range rec.Series {
		if sr.Notified == Inactive {
			continue
		}
		t := Transition{EpisodeID: sr.ID, Rule: id, GroupKey: sr.Key, GroupLabels: sr.Labels, Assets: sr.Members,
			From: sr.Notified, To: Inactive, Reason: reason, Time: now, Start: sr.ActiveAt, Values: sr.Values}
		if cr != nil {
			t.Kind, t.Severity, t.Shadow, t.Service = cr.kind, cr.spec.Severity, cr.spec.Shadow, cr.spec.Case.Service
		}
		out = append(out, t)
	}
	if e.db != nil {
		if err := e.db.deleteRule(id); err != nil {
			e.log.Error("dropping persisted rule state", "rule", id, "err", err)
		}
	}
	return out
}
