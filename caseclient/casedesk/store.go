package casedesk

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Buckets of the desk's bbolt file. Values are JSON.
var (
	bucketRequests = []byte("requests")    // service_request_id → Request
	bucketWebhooks = []byte("webhooks")    // webhook-id → WebhookDelivery
	bucketIdem     = []byte("idempotency") // Idempotency-Key → idemRecord
	bucketMeta     = []byte("meta")        // counters
	allBuckets     = [][]byte{bucketRequests, bucketWebhooks, bucketIdem, bucketMeta}
)

var (
	keyRequestSeq = []byte("request_seq")
	keyUpdateSeq  = []byte("update_seq")
	keyWebhookSeq = []byte("webhook_seq")
)

// store is the desk's persistence: a bbolt file in the desk directory. Every
// change is committed (and fsynced) before the desk answers the client.
type store struct {
	db *bolt.DB
}

func openStore(dir string) (*store, error) {
	if dir == "" {
		return nil, fmt.Errorf("no persistence directory (Config.Dir)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	path := filepath.Join(dir, "casedesk.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

// errClosed is returned by a closed store.
var errClosed = errors.New("the case desk is closed")

// counter is a persistent counter's new value, written with a put.
type counter struct {
	key []byte
	n   uint64
}

// put writes one JSON value and any counters in one transaction.
func (s *store) put(bucket []byte, key string, v any, counters ...counter) error {
	if s == nil {
		return errClosed
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding %s/%s: %w", bucket, key, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, c := range counters {
			var buf [8]byte
			binary.BigEndian.PutUint64(buf[:], c.n)
			if err := tx.Bucket(bucketMeta).Put(c.key, buf[:]); err != nil {
				return err
			}
		}
		return tx.Bucket(bucket).Put([]byte(key), data)
	})
	if err != nil {
		return fmt.Errorf("storing %s/%s: %w", bucket, key, err)
	}
	return nil
}

// counter reads a persistent counter (0 when never written).
func (s *store) counter(key []byte) uint64 {
	var n uint64
	s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(key); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return n
}

// each decodes every value of a bucket with fn.
func (s *store) each(bucket []byte, fn func(key string, data []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			if err := fn(string(k), v); err != nil {
				return fmt.Errorf("loading %s/%s: %w", bucket, k, err)
			}
			return nil
		})
	})
}

// clear empties every bucket except the counters, so ids are never reused.
func (s *store) clear() error {
	if s == nil {
		return errClosed
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if string(b) == string(bucketMeta) {
				continue
			}
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	})
}
