// Package influxql reads back from InfluxDB 1.x over its /query API:
// InfluxQL statements, with answers decoded so that numbers stay exact
// (json.Number). The integration tests (gateway/testenv) and the city
// benchmark (gateway/citybench) check with it what landed; gateway/lastseen
// asks it when a gateway's replicas last stored an asset's reading.
package influxql

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Series is one series of an InfluxQL result. Values keep JSON's numbers as
// json.Number (times are nanoseconds since the epoch), so integers and floats
// are compared exactly; use SHOW FIELD KEYS for the stored field types.
type Series struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

// QuoteIdent quotes an InfluxQL identifier.
func QuoteIdent(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// Query runs InfluxQL statements against db (empty for server-wide
// statements) at baseURL (http://host:port) with epoch=ns, and returns every
// series of every statement. A statement error is returned as an error.
func Query(c *http.Client, baseURL, db, q string) ([]Series, error) {
	return QueryContext(context.Background(), c, baseURL, db, q, "")
}

// QueryContext is Query under ctx, with token, when not empty, sent as
// "Authorization: Token …" (InfluxDB 1.8 takes "user:password" there, as
// its v2 write API does; InfluxDB 2 and Cloud their API token on their
// 1.x-compatible /query).
func QueryContext(ctx context.Context, c *http.Client, baseURL, db, q, token string) ([]Series, error) {
	form := url.Values{"q": {q}, "epoch": {"ns"}}
	if db != "" {
		form.Set("db", db)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/query", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("influxql %q: %w", q, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if token != "" {
		req.Header.Set("Authorization", "Token "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("influxql %q: %w", q, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("influxql %q: reading answer: %w", q, err)
	}
	var ans struct {
		Results []struct {
			Series []Series `json:"series"`
			Error  string   `json:"error"`
		} `json:"results"`
		Error string `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&ans); err != nil {
		return nil, fmt.Errorf("influxql %q: HTTP %d, undecodable answer %.200q: %w", q, resp.StatusCode, body, err)
	}
	if ans.Error != "" {
		return nil, fmt.Errorf("influxql %q: %s", q, ans.Error)
	}
	var out []Series
	for _, r := range ans.Results {
		if r.Error != "" {
			return nil, fmt.Errorf("influxql %q: %s", q, r.Error)
		}
		out = append(out, r.Series...)
	}
	return out, nil
}

// Count returns how many points of measurement in db carry field (SELECT
// count(field)); 0 when there are none.
func Count(c *http.Client, baseURL, db, measurement, field string) (int64, error) {
	series, err := Query(c, baseURL, db, fmt.Sprintf("SELECT count(%s) FROM %s", QuoteIdent(field), QuoteIdent(measurement)))
	if err != nil {
		return 0, err
	}
	var total int64
	for _, s := range series {
		for _, row := range s.Values {
			if len(row) < 2 {
				continue
			}
			n, ok := row[1].(json.Number)
			if !ok {
				return 0, fmt.Errorf("count of %s.%s: unexpected value %v", measurement, field, row[1])
			}
			i, err := n.Int64()
			if err != nil {
				return 0, fmt.Errorf("count of %s.%s: %w", measurement, field, err)
			}
			total += i
		}
	}
	return total, nil
}
