// Package lastseen answers, from the InfluxDB that a gateway's replicas
// write to, when some assets last had a reading stored — by any replica.
//
// Replicas sharing an MQTT subscription under a sticky broker policy (EMQX
// hash_topic) each receive only their share of the assets, so a replica's
// rule engine would call every asset of the other replicas silent once an
// absence rule's time had passed. With rules.absence: shared the engine
// asks here first, for the assets it has not heard from itself, and counts
// a reading any replica stored as heard (gateway/DEPLOYMENT.md).
package lastseen

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/influx"
	"github.com/citygw/citygw/gateway/influxql"
)

// batch is how many assets one request asks about.
const batch = 200

// InfluxDB asks an InfluxDB 1.x /query API (or InfluxDB 2 and Cloud's
// 1.x-compatible one) for the assets' newest points, as the gateway's
// writer stores them: measurement = the asset's kind, tag asset = its id.
type InfluxDB struct {
	url, db, token string
	http           *http.Client
}

// New returns an InfluxDB for the server at url (http://host:8086) and the
// bucket the gateway writes to ("db/rp" or "db"); token as the writer's.
func New(url, bucket, token string, timeout time.Duration) *InfluxDB {
	db, _, _ := strings.Cut(bucket, "/")
	return &InfluxDB{url: strings.TrimSuffix(url, "/"), db: db, token: token, http: &http.Client{Timeout: timeout}}
}

// LastSeen returns, for those of assets with a point stored after since,
// the newest point's time, by asset id. Assets of a kind are asked about
// in batches, one statement per field of the kind (a reading need not
// carry every field), in one request per batch.
func (q *InfluxDB) LastSeen(ctx context.Context, assets []*devices.Asset, since time.Time) (map[string]time.Time, error) {
	byKind := map[*devices.Schema][]*devices.Asset{}
	var kinds []*devices.Schema
	for _, a := range assets {
		if a.Schema == nil {
			continue
		}
		if _, ok := byKind[a.Schema]; !ok {
			kinds = append(kinds, a.Schema)
		}
		byKind[a.Schema] = append(byKind[a.Schema], a)
	}
	seen := map[string]time.Time{}
	for _, k := range kinds {
		as := byKind[k]
		for len(as) > 0 {
			n := min(len(as), batch)
			if err := q.ask(ctx, k, as[:n], since, seen); err != nil {
				return nil, err
			}
			as = as[n:]
		}
	}
	return seen, nil
}

func (q *InfluxDB) ask(ctx context.Context, k *devices.Schema, assets []*devices.Asset, since time.Time, seen map[string]time.Time) error {
	var where strings.Builder
	fmt.Fprintf(&where, " FROM %s WHERE time > %d AND (", influxql.QuoteIdent(k.Kind), since.UnixNano())
	for i, a := range assets {
		if i > 0 {
			where.WriteString(" OR ")
		}
		fmt.Fprintf(&where, "%s = %s", influxql.QuoteIdent(influx.TagAsset), quoteString(a.ID))
	}
	where.WriteString(") GROUP BY " + influxql.QuoteIdent(influx.TagAsset))
	stmts := make([]string, len(k.Fields))
	for i, f := range k.Fields {
		stmts[i] = "SELECT last(" + influxql.QuoteIdent(f.Name) + ")" + where.String()
	}
	series, err := influxql.QueryContext(ctx, q.http, q.url, q.db, strings.Join(stmts, "; "), q.token)
	if err != nil {
		return fmt.Errorf("asking InfluxDB when %d %s assets were last stored: %w", len(assets), k.Kind, err)
	}
	for _, s := range series {
		id := s.Tags[influx.TagAsset]
		for _, row := range s.Values {
			if len(row) == 0 || id == "" {
				continue
			}
			n, ok := row[0].(json.Number)
			if !ok {
				continue
			}
			ns, err := strconv.ParseInt(string(n), 10, 64)
			if err != nil {
				continue
			}
			if t := time.Unix(0, ns); t.After(seen[id]) {
				seen[id] = t
			}
		}
	}
	return nil
}

// quoteString quotes an InfluxQL string literal.
func quoteString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
