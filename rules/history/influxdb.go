// Package history reads past telemetry for the rule author's tools
// (`rules explain`, `rules backtest`): from InfluxDB 1.x with InfluxQL over
// the /query API, or from a file of line protocol. Both turn points of the
// gateway's schema (measurement = kind, tag asset, fields named as the
// kind's schema; see gateway/influx) back into devices.Readings and deliver
// them in time order, as rules.Source.
package history

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/rules"
)

// InfluxDB reads readings from an InfluxDB 1.x database with InfluxQL.
// Queries cover Chunk of time each (the readings of all asked kinds in that
// span are merged by time before they are handed on), and InfluxDB streams
// each answer in chunks of ChunkSize points, so a long range is never held
// in memory at once.
type InfluxDB struct {
	URL    string // e.g. http://127.0.0.1:8086; user:password@ in it is sent as basic auth
	DB     string // database, e.g. citygw
	RP     string // retention policy; "" = the database's default
	Chunk  time.Duration
	Client *http.Client
	// ChunkSize is the points per streamed answer chunk; default 10000.
	ChunkSize int
}

func (s *InfluxDB) client() *http.Client {
	if s.Client != nil {
		return s.Client
	}
	return &http.Client{Timeout: 5 * time.Minute}
}

// Ping checks that the server answers, so a command can tell an
// unreachable data source from an empty one before it starts.
func (s *InfluxDB) Ping(ctx context.Context) error {
	u, err := url.Parse(strings.TrimRight(s.URL, "/") + "/ping")
	if err != nil {
		return fmt.Errorf("influxdb url %q: %w", s.URL, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := s.client().Do(req)
	if err != nil {
		return fmt.Errorf("pinging influxdb: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("pinging influxdb: %s", resp.Status)
	}
	return nil
}

// Readings implements rules.Source.
func (s *InfluxDB) Readings(ctx context.Context, q rules.Query, fn func(*devices.Reading) error) error {
	chunk := s.Chunk
	if chunk <= 0 {
		chunk = time.Hour
	}
	var buf []*devices.Reading
	pool := &readingPool{}
	for from := q.From; from.Before(q.To); from = from.Add(chunk) {
		to := from.Add(chunk)
		if to.After(q.To) {
			to = q.To
		}
		buf = buf[:0]
		pool.reset()
		err := s.query(ctx, selectStatement(q, from, to), func(kind string, cols []string, row []any) error {
			r, ok, err := rowReading(q.Inventory, kind, cols, row, pool)
			if err != nil || !ok {
				return err
			}
			buf = append(buf, r)
			return nil
		})
		if err != nil {
			return err
		}
		sort.SliceStable(buf, func(i, j int) bool { return buf[i].Time.Before(buf[j].Time) })
		for _, r := range buf {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// selectStatement builds the InfluxQL of one time span.
func selectStatement(q rules.Query, from, to time.Time) string {
	var b strings.Builder
	b.WriteString("SELECT * FROM ")
	kinds := append([]string(nil), q.Kinds...)
	sort.Strings(kinds)
	for i, k := range kinds {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(k))
	}
	fmt.Fprintf(&b, " WHERE time >= %d AND time < %d", from.UnixNano(), to.UnixNano())
	if len(q.Assets) > 0 {
		parts := make([]string, len(q.Assets))
		for i, a := range q.Assets {
			parts[i] = strings.ReplaceAll(regexp.QuoteMeta(a), "/", `\/`)
		}
		fmt.Fprintf(&b, ` AND "asset" =~ /^(%s)$/`, strings.Join(parts, "|"))
	}
	b.WriteString(" ORDER BY time ASC")
	return b.String()
}

func quoteIdent(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

type queryResponse struct {
	Error   string `json:"error"`
	Results []struct {
		Error  string `json:"error"`
		Series []struct {
			Name    string   `json:"name"`
			Columns []string `json:"columns"`
			Values  [][]any  `json:"values"`
		} `json:"series"`
	} `json:"results"`
}

// query runs one statement with a chunked answer, calling row for each row.
func (s *InfluxDB) query(ctx context.Context, stmt string, row func(kind string, cols []string, vals []any) error) error {
	u, err := url.Parse(strings.TrimRight(s.URL, "/") + "/query")
	if err != nil {
		return fmt.Errorf("influxdb url %q: %w", s.URL, err)
	}
	user := u.User
	u.User = nil
	size := s.ChunkSize
	if size <= 0 {
		size = 10000
	}
	form := url.Values{"db": {s.DB}, "q": {stmt}, "epoch": {"ns"}, "chunked": {"true"}, "chunk_size": {strconv.Itoa(size)}}
	if s.RP != "" {
		form.Set("rp", s.RP)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != nil {
		pw, _ := user.Password()
		req.SetBasicAuth(user.Username(), pw)
	}
	resp, err := s.client().Do(req)
	if err != nil {
		return fmt.Errorf("querying influxdb: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("querying influxdb: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	for {
		var qr queryResponse
		if err := dec.Decode(&qr); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading the influxdb answer: %w", err)
		}
		if qr.Error != "" {
			return fmt.Errorf("influxdb: %s", qr.Error)
		}
		for _, res := range qr.Results {
			if res.Error != "" {
				return fmt.Errorf("influxdb: %s", res.Error)
			}
			for _, ser := range res.Series {
				for _, v := range ser.Values {
					if err := row(ser.Name, ser.Columns, v); err != nil {
						return err
					}
				}
			}
		}
	}
}

// readingPool hands out readings for one span and takes them all back at
// its end, so a long backtest does not allocate a reading per point.
type readingPool struct {
	all  []*devices.Reading
	used int
}

func (p *readingPool) get(a *devices.Asset) *devices.Reading {
	if p.used == len(p.all) {
		p.all = append(p.all, &devices.Reading{})
	}
	r := p.all[p.used]
	p.used++
	r.Reset(a)
	return r
}

func (p *readingPool) reset() { p.used = 0 }

// rowReading turns one row of a SELECT * into a reading; ok is false for a
// row of an asset the inventory does not hold (or holds as another kind).
func rowReading(inv *devices.Inventory, kind string, cols []string, vals []any, pool *readingPool) (*devices.Reading, bool, error) {
	var id string
	var t int64
	for i, c := range cols {
		if i >= len(vals) {
			break
		}
		switch c {
		case "time":
			n, ok := vals[i].(json.Number)
			if !ok {
				return nil, false, fmt.Errorf("influxdb: time column is %T, not epoch nanoseconds", vals[i])
			}
			v, err := n.Int64()
			if err != nil {
				return nil, false, fmt.Errorf("influxdb: time %s: %w", n, err)
			}
			t = v
		case "asset":
			id, _ = vals[i].(string)
		}
	}
	a := inv.Lookup(id)
	if a == nil || a.Kind != kind {
		return nil, false, nil
	}
	r := pool.get(a)
	r.Time = time.Unix(0, t).UTC()
	r.Received = r.Time
	for i, c := range cols {
		if i >= len(vals) || vals[i] == nil {
			continue
		}
		idx, ok := a.Schema.Index(c)
		if !ok {
			continue
		}
		v, err := toValue(a.Schema.Fields[idx].Type, vals[i])
		if err != nil {
			return nil, false, fmt.Errorf("%s %s at %s: field %s: %w", kind, id, r.Time.Format(time.RFC3339Nano), c, err)
		}
		r.Values[idx] = v
	}
	return r, true, nil
}

// toValue converts a decoded field value (json.Number, float64, int64,
// bool or string) to the schema's type.
func toValue(t devices.Type, raw any) (devices.Value, error) {
	var f float64
	isNum := false
	switch x := raw.(type) {
	case json.Number:
		if t == devices.Int {
			if i, err := x.Int64(); err == nil {
				return devices.IntValue(i), nil
			}
		}
		v, err := x.Float64()
		if err != nil {
			return devices.Value{}, err
		}
		f, isNum = v, true
	case float64:
		f, isNum = x, true
	case int64:
		if t == devices.Int {
			return devices.IntValue(x), nil
		}
		f, isNum = float64(x), true
	case bool:
		switch t {
		case devices.Bool:
			return devices.BoolValue(x), nil
		case devices.String:
			return devices.StringValue(strconv.FormatBool(x)), nil
		}
		return devices.Value{}, fmt.Errorf("boolean for a %s field", t)
	case string:
		if t == devices.String {
			return devices.StringValue(x), nil
		}
		return devices.Value{}, fmt.Errorf("string %q for a %s field", x, t)
	}
	if !isNum {
		return devices.Value{}, fmt.Errorf("unexpected %T", raw)
	}
	switch t {
	case devices.Float:
		return devices.FloatValue(f), nil
	case devices.Int:
		if f != math.Trunc(f) {
			return devices.Value{}, fmt.Errorf("%v for an int field", f)
		}
		return devices.IntValue(int64(f)), nil
	case devices.Bool:
		return devices.BoolValue(f != 0), nil
	case devices.String:
		return devices.StringValue(strconv.FormatFloat(f, 'f', -1, 64)), nil
	}
	return devices.Value{}, fmt.Errorf("field type %s", t)
}
