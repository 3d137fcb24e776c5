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
// the sink was told, members), and when each asset last reported. The
// series a transition is about are written before the sink hears of it, so
// a restart neither drops a firing episode nor opens a second one for the
// same anomaly; other changes (members, pending timers) with the periodic
// snapshot.
//
// Layout: bucket "rules" holds a bucket per rule id with the key
// "fingerprint" and a bucket "series" of one JSON seriesRecord per series
// key, so that a transition writes its own series, not every active series
// of its rule: with a city's worth of bins over a threshold, rewriting the
// whole rule on each transition took half the gateway's CPU. Files from
// before that layout (one JSON ruleRecord per rule id) are converted when
// opened.

var (
	bucketRules    = []byte("rules")
	bucketMeta     = []byte("meta")
	bucketSeries   = []byte("series")
	keySeen        = []byte("seen")
	keyFingerprint = []byte("fingerprint")
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
		return convertRuleRecords(tx.Bucket(bucketRules))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("preparing rule state %s: %w", path, err)
	}
	return &stateDB{db: db}, nil
}

func (d *stateDB) close() error { return d.db.Close() }

// convertRuleRecords rewrites the rules of the older layout (a JSON
// ruleRecord as the value of the rule id) as rule buckets.
func convertRuleRecords(rules *bolt.Bucket) error {
	old := map[string][]byte{}
	err := rules.ForEach(func(k, v []byte) error {
		if v != nil {
			old[string(k)] = v
		}
		return nil
	})
	if err != nil {
		return err
	}
	for id, v := range old {
		var rec ruleRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("rule %s: %w", id, err)
		}
		if err := rules.Delete([]byte(id)); err != nil {
			return err
		}
		if err := putRule(rules, id, rec.Fingerprint, rec.Series); err != nil {
			return fmt.Errorf("rule %s: %w", id, err)
		}
	}
	return nil
}

// putRule replaces rule id's bucket with the fingerprint and the series.
func putRule(rules *bolt.Bucket, id, fingerprint string, series []seriesRecord) error {
	if rules.Bucket([]byte(id)) != nil {
		if err := rules.DeleteBucket([]byte(id)); err != nil {
			return err
		}
	}
	if len(series) == 0 {
		return nil
	}
	b, err := rules.CreateBucket([]byte(id))
	if err != nil {
		return err
	}
	if err := b.Put(keyFingerprint, []byte(fingerprint)); err != nil {
		return err
	}
	sb, err := b.CreateBucket(bucketSeries)
	if err != nil {
		return err
	}
	for i := range series {
		data, err := json.Marshal(&series[i])
		if err != nil {
			return err
		}
		if err := sb.Put(seriesKey(series[i].Key), data); err != nil {
			return err
		}
	}
	return nil
}

func (d *stateDB) load() (map[string]*ruleRecord, map[string]int64, error) {
	recs := map[string]*ruleRecord{}
	seen := map[string]int64{}
	err := d.db.View(func(tx *bolt.Tx) error {
		rules := tx.Bucket(bucketRules)
		err := rules.ForEach(func(k, v []byte) error {
			b := rules.Bucket(k)
			if v != nil || b == nil { // openStateDB converted the older layout
				return fmt.Errorf("rule %s: not a rule bucket", k)
			}
			r := &ruleRecord{Fingerprint: string(b.Get(keyFingerprint))}
			if sb := b.Bucket(bucketSeries); sb != nil {
				err := sb.ForEach(func(key, v []byte) error {
					var sr seriesRecord
					if err := json.Unmarshal(v, &sr); err != nil {
						return fmt.Errorf("series %s: %w", key, err)
					}
					r.Series = append(r.Series, sr)
					return nil
				})
				if err != nil {
					return fmt.Errorf("rule %s: %w", k, err)
				}
			}
			recs[string(k)] = r
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

// seriesKey is a series' key in its rule's bucket: the group key after a
// byte, since bbolt takes no empty key and a group label may be empty.
// Records carry their group key; the bucket's keys are never read back.
func seriesKey(key string) []byte { return append([]byte{'s'}, key...) }

// seriesRecordOf is what the state file keeps of s, or nil when s is
// inactive and nothing was told of it. Called with the rule's lock held.
func seriesRecordOf(s *series, inv *devices.Inventory) *seriesRecord {
	if s == nil || s.state == Inactive && s.notified == Inactive {
		return nil
	}
	sr := &seriesRecord{Key: s.key, Labels: s.labels, State: s.state, Notified: s.notified, ActiveAt: s.activeAt,
		FiredAt: s.firedAt, FalseSince: s.falseSince, Members: s.memberIDs(inv), ID: s.id, Values: s.values}
	if s.rep != nil {
		sr.Rep = s.rep.ID
	}
	return sr
}

// wholeRecord is what the state file keeps of all of cr's series, taken
// to be written whole: the rule is no longer dirty and, once written, is
// held under its fingerprint. Called with the rule's lock held.
func wholeRecord(cr *compiledRule, inv *devices.Inventory) []seriesRecord {
	cr.st.dirty.Store(false)
	cr.st.persisted = true
	var series []seriesRecord
	for _, s := range cr.st.series {
		if sr := seriesRecordOf(s, inv); sr != nil {
			series = append(series, *sr)
		}
	}
	return series
}

// saveRule writes a rule's whole record (or deletes it when the rule has
// no series to keep). The snapshot does, for rules with changes that no
// transition wrote.
func (d *stateDB) saveRule(cr *compiledRule, inv *devices.Inventory) error {
	cr.st.mu.Lock()
	series := wholeRecord(cr, inv)
	cr.st.mu.Unlock()
	return d.db.Update(func(tx *bolt.Tx) error {
		return putRule(tx.Bucket(bucketRules), cr.id(), cr.fingerprint, series)
	})
}

// seriesWrite is one series of a rule to write (rec) or delete (rec nil).
type seriesWrite struct {
	key string
	rec *seriesRecord
}

// saveSeries writes the series with the given keys of each rule, in one
// transaction: what emit persists before the sink hears of transitions.
// A rule the file does not hold under its fingerprint yet is written
// whole.
func (d *stateDB) saveSeries(keys map[*compiledRule][]string, inv *devices.Inventory) error {
	type ruleWrite struct {
		cr     *compiledRule
		whole  bool
		series []seriesRecord // whole
		writes []seriesWrite
	}
	var rws []ruleWrite
	for cr, ks := range keys {
		rw := ruleWrite{cr: cr}
		cr.st.mu.Lock()
		if !cr.st.persisted {
			rw.whole = true
			rw.series = wholeRecord(cr, inv)
		} else {
			for _, k := range ks {
				rw.writes = append(rw.writes, seriesWrite{k, seriesRecordOf(cr.st.series[k], inv)})
			}
		}
		cr.st.mu.Unlock()
		rws = append(rws, rw)
	}
	return d.db.Update(func(tx *bolt.Tx) error {
		rules := tx.Bucket(bucketRules)
		for _, rw := range rws {
			id := rw.cr.id()
			if rw.whole {
				if err := putRule(rules, id, rw.cr.fingerprint, rw.series); err != nil {
					return fmt.Errorf("rule %s: %w", id, err)
				}
				continue
			}
			b, err := rules.CreateBucketIfNotExists([]byte(id))
			if err != nil {
				return fmt.Errorf("rule %s: %w", id, err)
			}
			// Only when it differs (a bucket emptied by putRule and
			// created again): a put dirties the rule bucket's page.
			if string(b.Get(keyFingerprint)) != rw.cr.fingerprint {
				if err := b.Put(keyFingerprint, []byte(rw.cr.fingerprint)); err != nil {
					return err
				}
			}
			sb, err := b.CreateBucketIfNotExists(bucketSeries)
			if err != nil {
				return fmt.Errorf("rule %s: %w", id, err)
			}
			for _, w := range rw.writes {
				if w.rec == nil {
					err = sb.Delete(seriesKey(w.key))
				} else {
					var data []byte
					if data, err = json.Marshal(w.rec); err == nil {
						err = sb.Put(seriesKey(w.key), data)
					}
				}
				if err != nil {
					return fmt.Errorf("rule %s series %s: %w", id, w.key, err)
				}
			}
		}
		return nil
	})
}

func (d *stateDB) deleteRule(id string) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		// Only rule buckets: openStateDB converted the older layout.
		if rules := tx.Bucket(bucketRules); rules.Bucket([]byte(id)) != nil {
			return rules.DeleteBucket([]byte(id))
		}
		return nil
	})
}

// saveSeen writes the JSON object {asset id: unix ns} of when assets were
// last seen (Engine.appendSeenJSON).
func (d *stateDB) saveSeen(data []byte) error {
	return d.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySeen, data) })
}

// restore rebuilds a rule's series from its record.
func (e *Engine) restore(cr *compiledRule, rec *ruleRecord) {
	cr.st.persisted = true // the file holds rec under cr's fingerprint
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
