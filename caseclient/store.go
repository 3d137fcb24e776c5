package caseclient

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Operation kinds.
const (
	opOpen    = "open"
	opUpdate  = "update"
	opCleared = "cleared"
)

// op is one thing to tell one sink about one case; it lives in the outbox
// until the sink accepted it.
type op struct {
	Seq      uint64    `json:"seq"`
	ID       string    `json:"id"` // stable operation key: webhook-id, Idempotency-Key, Open311 update_id
	Sink     string    `json:"sink"`
	Kind     string    `json:"kind"`
	Episode  string    `json:"episode"`
	Rule     string    `json:"rule"`
	CaseKey  string    `json:"case_key"`
	Anomaly  string    `json:"anomaly,omitempty"` // the anomaly key (replicas mode)
	Case     *Case     `json:"case,omitempty"`    // open: the content
	Text     string    `json:"text,omitempty"`    // update/cleared: the update's text
	Severity string    `json:"severity,omitempty"`
	At       time.Time `json:"at"` // when it happened
	Enqueued time.Time `json:"enqueued"`

	Attempts  int       `json:"attempts,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	Ambiguous bool      `json:"ambiguous,omitempty"` // an attempt may have reached the case system
	LastErr   string    `json:"last_err,omitempty"`
}

// sinkCase is the state of one episode's case at one sink.
type sinkCase struct {
	Key      string    `json:"key"`
	Gen      int       `json:"gen,omitempty"`
	ID       string    `json:"id,omitempty"`    // service_request_id
	Token    string    `json:"token,omitempty"` // Open311 batch token not yet resolved
	Status   string    `json:"status"`          // queued, open, closed, rejected, gone
	Accepted time.Time `json:"accepted,omitzero"`
	ClosedAt time.Time `json:"closed_at,omitzero"`
	ReopenAt time.Time `json:"reopen_at,omitzero"`
	Notes    string    `json:"notes,omitempty"` // the case system's status notes or rejection message
	Previous []string  `json:"previous,omitempty"`
	// Attached is the case key of another replica's case that this
	// episode was attached to (replicas mode): the case at the sink is
	// that one, and updates are posted to it under its key, so that the
	// replicas' updates of one anomaly deduplicate on the case system.
	Attached string `json:"attached,omitempty"`
}

// target is the key of the case at the sink: the attached case's key, or
// the episode's own.
func (sc *sinkCase) target() string {
	if sc.Attached != "" {
		return sc.Attached
	}
	return sc.Key
}

// opID is the operation key sent to the sink for o: for an attached case,
// the attached case's key takes the place of the episode's own, so that
// replicas reporting one anomaly send the same update_id (":cleared",
// ":u1"…) and the case system keeps one of each.
func (sc *sinkCase) opID(o *op) string {
	if sc == nil || sc.Attached == "" || !strings.HasPrefix(o.ID, o.CaseKey) {
		return o.ID
	}
	return sc.Attached + strings.TrimPrefix(o.ID, o.CaseKey)
}

// Sink case statuses.
const (
	scQueued   = "queued"
	scOpen     = "open"
	scClosed   = "closed"
	scRejected = "rejected"
	scGone     = "gone"
)

// caseState is what the client remembers of an episode.
type caseState struct {
	Episode    string               `json:"episode"`
	Rule       string               `json:"rule"`
	Firing     bool                 `json:"firing"`
	Severity   string               `json:"severity"`
	Start      time.Time            `json:"start"`
	FiredAt    time.Time            `json:"fired_at"`
	EndedAt    time.Time            `json:"ended_at,omitzero"`
	LastUpdate time.Time            `json:"last_update"`
	SevChanged bool                 `json:"sev_changed,omitempty"` // a severity change waits for the repeat interval
	Updates    int                  `json:"updates"`
	Case       *Case                `json:"case"` // the first case's content (re-opens copy it)
	Sinks      map[string]*sinkCase `json:"sinks"`
}

// anomaly returns the episode's anomaly key ("" outside replicas mode).
func (s *caseState) anomaly() string {
	if s.Case == nil {
		return ""
	}
	return s.Case.AnomalyKey
}

func (s *caseState) clone() *caseState {
	c := *s
	c.Sinks = make(map[string]*sinkCase, len(s.Sinks))
	for k, v := range s.Sinks {
		sc := *v
		sc.Previous = append([]string(nil), v.Previous...)
		c.Sinks[k] = &sc
	}
	return &c
}

var (
	bOps   = []byte("ops")
	bDead  = []byte("dead")
	bCases = []byte("cases")
	bMeta  = []byte("meta")
)

// store is the bbolt file: the outbox (ops), dead letters, case state and
// sink meta data. Every commit is fsynced (bbolt's default NoSync=false,
// with the freelist synced too: NoFreelistSync=false), so what a commit
// returned is on disk when the process is SIGKILLed.
type store struct {
	db *bolt.DB
}

func openStore(path string) (*store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the case outbox directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoSync: false, NoFreelistSync: false})
	if err != nil {
		return nil, fmt.Errorf("opening the case outbox %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bOps, bDead, bCases, bMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising the case outbox %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

func seqKey(n uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], n)
	return k[:]
}

// putOp appends a new op (assigning its sequence) or rewrites an existing one.
func putOp(tx *bolt.Tx, o *op) error {
	b := tx.Bucket(bOps)
	if o.Seq == 0 {
		n, err := b.NextSequence()
		if err != nil {
			return err
		}
		o.Seq = n
	}
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return b.Put(seqKey(o.Seq), data)
}

func putCase(tx *bolt.Tx, st *caseState) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return tx.Bucket(bCases).Put([]byte(st.Episode), data)
}

// deadOp moves an op to the dead-letter bucket with why.
func deadOp(tx *bolt.Tx, o *op, why string) error {
	o.LastErr = why
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bOps).Delete(seqKey(o.Seq)); err != nil {
		return err
	}
	return tx.Bucket(bDead).Put(seqKey(o.Seq), data)
}

// ops returns the outbox's ops for a sink ("" for all), in order.
func (s *store) ops(sink string) ([]*op, error) {
	var out []*op
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bOps).ForEach(func(_, v []byte) error {
			o := &op{}
			if err := json.Unmarshal(v, o); err != nil {
				return err
			}
			if sink == "" || o.Sink == sink {
				out = append(out, o)
			}
			return nil
		})
	})
	return out, err
}

// dead returns the dead letters.
func (s *store) dead() ([]*op, error) {
	var out []*op
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bDead).ForEach(func(_, v []byte) error {
			o := &op{}
			if err := json.Unmarshal(v, o); err != nil {
				return err
			}
			out = append(out, o)
			return nil
		})
	})
	return out, err
}

func (s *store) cases() (map[string]*caseState, error) {
	out := map[string]*caseState{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bCases).ForEach(func(k, v []byte) error {
			st := &caseState{}
			if err := json.Unmarshal(v, st); err != nil {
				return fmt.Errorf("case %s: %w", k, err)
			}
			if st.Sinks == nil {
				st.Sinks = map[string]*sinkCase{}
			}
			out[string(k)] = st
			return nil
		})
	})
	return out, err
}

func (s *store) meta(key string) (string, error) {
	var v string
	err := s.db.View(func(tx *bolt.Tx) error {
		v = string(tx.Bucket(bMeta).Get([]byte(key)))
		return nil
	})
	return v, err
}

func putMeta(tx *bolt.Tx, key, val string) error {
	if val == "" {
		return tx.Bucket(bMeta).Delete([]byte(key))
	}
	return tx.Bucket(bMeta).Put([]byte(key), []byte(val))
}
