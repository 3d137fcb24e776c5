package casedesk

import (
	"fmt"
	"math"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxDescription is the longest description Open311 accepts, in characters.
const MaxDescription = 4000

// parseAttributes collects the attribute[CODE]=v and attribute[CODE][]=v
// fields of a form. It returns the values per code (in form order) and the
// codes that were sent in the multi-value form. A malformed attribute key is
// an error naming it.
func parseAttributes(form url.Values) (vals map[string][]string, multi map[string]bool, err error) {
	keys := make([]string, 0, len(form))
	for k := range form {
		if strings.HasPrefix(k, "attribute") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		rest := k[len("attribute"):]
		if !strings.HasPrefix(rest, "[") {
			continue // some other field, such as "attributes"
		}
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return nil, nil, fmt.Errorf("malformed attribute field %q", k)
		}
		code, tail := rest[1:end], rest[end+1:]
		if code == "" || strings.ContainsAny(code, "[") {
			return nil, nil, fmt.Errorf("malformed attribute field %q", k)
		}
		isMulti := false
		switch tail {
		case "":
		case "[]":
			isMulti = true
		default:
			return nil, nil, fmt.Errorf("malformed attribute field %q", k)
		}
		if vals == nil {
			vals, multi = map[string][]string{}, map[string]bool{}
		}
		vals[code] = append(vals[code], form[k]...)
		if isMulti {
			multi[code] = true
		}
	}
	return vals, multi, nil
}

// validateAttributes checks the attributes sent against the service
// definition: required ones present and non-empty, values of the declared
// datatype and, for lists, among the declared keys. Attributes the definition
// does not know are kept as sent (see README.md). The message names the
// attribute as the client sent it.
func validateAttributes(svc *Service, vals map[string][]string, multi map[string]bool) error {
	for _, a := range svc.Attributes {
		if !a.Variable {
			continue // informational attribute: nothing to send
		}
		vs := vals[a.Code]
		nonEmpty := slices.ContainsFunc(vs, func(s string) bool { return s != "" })
		if !nonEmpty {
			if a.Required {
				return fmt.Errorf("attribute[%s] is required for service %s", a.Code, svc.Code)
			}
			continue
		}
		if a.Datatype != DatatypeMultiValueList && (len(vs) > 1 || multi[a.Code]) {
			return fmt.Errorf("attribute[%s] takes one value (datatype %s), got %d", a.Code, a.Datatype, len(vs))
		}
		for _, v := range vs {
			if err := checkValue(a, v); err != nil {
				return fmt.Errorf("attribute[%s]: %v", a.Code, err)
			}
		}
	}
	return nil
}

func checkValue(a Attribute, v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("not valid UTF-8")
	}
	switch a.Datatype {
	case DatatypeNumber:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%q is not a number", v)
		}
	case DatatypeDatetime:
		if _, err := parseTime(v); err != nil {
			return err
		}
	case DatatypeSingleValueList, DatatypeMultiValueList:
		if !slices.ContainsFunc(a.Values, func(av AttributeValue) bool { return av.Key == v }) {
			keys := make([]string, len(a.Values))
			for i, av := range a.Values {
				keys[i] = av.Key
			}
			return fmt.Errorf("%q is not one of %s", v, strings.Join(keys, ", "))
		}
	}
	return nil
}

// parseTime parses an ISO 8601 date-time with a time zone, as Open311 wants.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an ISO 8601 date-time with time zone (such as 2026-01-15T18:04:05+08:00)", s)
	}
	return t, nil
}

// parseCoord parses a WGS84 latitude or longitude within ±limit.
func parseCoord(name, s string, limit float64) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > limit {
		return 0, fmt.Errorf("%s %q is not a WGS84 coordinate within ±%g", name, s, limit)
	}
	return f, nil
}

// splitList splits a comma-separated query value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
