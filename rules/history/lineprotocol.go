package history

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/rules"
)

// Point is one parsed line of line protocol.
type Point struct {
	Measurement string
	Tags        map[string]string
	Fields      map[string]any // float64, int64, bool or string
	Time        time.Time
}

// LineProtocol is a rules.Source over points read from line protocol (as
// the gateway writes them, or as exported with `influx -format ...`).
type LineProtocol []Point

// ReadLineProtocolFile parses a file of line protocol with nanosecond
// timestamps. Blank lines and # comments are skipped; a line without a
// timestamp is an error (a replay needs times).
func ReadLineProtocolFile(name string) (LineProtocol, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading line protocol: %w", err)
	}
	defer f.Close()
	lp, err := ParseLineProtocol(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return lp, nil
}

// ParseLineProtocol parses line protocol from r.
func ParseLineProtocol(r io.Reader) (LineProtocol, error) {
	var out LineProtocol
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		p, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, p)
	}
	return out, sc.Err()
}

// splitUnescaped splits s at sep outside double quotes, honouring
// backslash escapes; limit < 0 means no limit.
func splitUnescaped(s string, sep byte, limit int) []string {
	parts := make([]string, 0, 8)
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case c == sep && !quoted:
			if limit < 0 || len(parts) < limit-1 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func parseLine(line string) (Point, error) {
	sections := splitUnescaped(line, ' ', -1)
	// Collapse empty sections from repeated spaces outside quotes.
	var secs []string
	for _, s := range sections {
		if s != "" {
			secs = append(secs, s)
		}
	}
	if len(secs) != 3 {
		return Point{}, fmt.Errorf("want \"measurement,tags fields timestamp\", got %d section(s)", len(secs))
	}
	p := Point{Tags: map[string]string{}, Fields: map[string]any{}}
	head := splitUnescaped(secs[0], ',', -1)
	p.Measurement = unescape(head[0])
	for _, kv := range head[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return Point{}, fmt.Errorf("tag %q has no value", kv)
		}
		p.Tags[unescape(k)] = unescape(v)
	}
	for _, kv := range splitUnescaped(secs[1], ',', -1) {
		kvs := splitUnescaped(kv, '=', 2)
		if len(kvs) != 2 {
			return Point{}, fmt.Errorf("field %q has no value", kv)
		}
		v, err := parseFieldValue(kvs[1])
		if err != nil {
			return Point{}, fmt.Errorf("field %s: %w", unescape(kvs[0]), err)
		}
		p.Fields[unescape(kvs[0])] = v
	}
	ns, err := strconv.ParseInt(secs[2], 10, 64)
	if err != nil {
		return Point{}, fmt.Errorf("timestamp %q: want integer nanoseconds", secs[2])
	}
	p.Time = time.Unix(0, ns).UTC()
	return p, nil
}

func parseFieldValue(s string) (any, error) {
	switch {
	case len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"':
		return strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(s[1 : len(s)-1]), nil
	case s == "t" || s == "T" || s == "true" || s == "True" || s == "TRUE":
		return true, nil
	case s == "f" || s == "F" || s == "false" || s == "False" || s == "FALSE":
		return false, nil
	case strings.HasSuffix(s, "i"):
		return strconv.ParseInt(s[:len(s)-1], 10, 64)
	case strings.HasSuffix(s, "u"):
		v, err := strconv.ParseUint(s[:len(s)-1], 10, 63)
		return int64(v), err
	}
	return strconv.ParseFloat(s, 64)
}

// Readings implements rules.Source.
func (lp LineProtocol) Readings(ctx context.Context, q rules.Query, fn func(*devices.Reading) error) error {
	idx := make([]int, 0, len(lp))
	kinds := map[string]bool{}
	for _, k := range q.Kinds {
		kinds[k] = true
	}
	assets := map[string]bool{}
	for _, a := range q.Assets {
		assets[a] = true
	}
	for i := range lp {
		p := &lp[i]
		if !kinds[p.Measurement] || p.Time.Before(q.From) || !p.Time.Before(q.To) {
			continue
		}
		if len(assets) > 0 && !assets[p.Tags["asset"]] {
			continue
		}
		idx = append(idx, i)
	}
	sort.SliceStable(idx, func(i, j int) bool { return lp[idx[i]].Time.Before(lp[idx[j]].Time) })
	r := &devices.Reading{}
	for _, i := range idx {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := &lp[i]
		a := q.Inventory.Lookup(p.Tags["asset"])
		if a == nil || a.Kind != p.Measurement {
			continue
		}
		r.Reset(a)
		r.Time, r.Received = p.Time, p.Time
		for name, raw := range p.Fields {
			fi, ok := a.Schema.Index(name)
			if !ok {
				continue
			}
			v, err := toValue(a.Schema.Fields[fi].Type, raw)
			if err != nil {
				return fmt.Errorf("%s %s at %s: field %s: %w", p.Measurement, a.ID, p.Time.Format(time.RFC3339Nano), name, err)
			}
			r.Values[fi] = v
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}
