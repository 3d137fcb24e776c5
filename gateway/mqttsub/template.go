package mqttsub

import (
	"errors"
	"fmt"
	"strings"
)

// AssetSegment is the placeholder in a topic template for the topic level
// that carries the asset id.
const AssetSegment = "{asset}"

type segKind uint8

const (
	segLiteral segKind = iota
	segPlus            // + : any one level
	segHash            // # : any remaining levels (last only)
	segAsset           // {asset}: any one level, taken as the asset id
)

type segment struct {
	kind segKind
	lit  string
}

// Template is a parsed topic template such as city/bins/{asset}/telemetry or
// $share/gw/city/bins/{asset}/telemetry.
type Template struct {
	Raw    string // as written
	Filter string // the MQTT subscription filter: {asset} becomes +, $share/<group>/ kept
	Share  string // shared-subscription group, or ""
	segs   []segment
	asset  int // index of the {asset} level, or -1
	// simple: the template is literal levels and {asset}, nothing else;
	// Match then compares prefix (the levels before {asset}, each with its
	// '/') and suffix (the levels after, each with its '/') as strings.
	simple         bool
	prefix, suffix string
}

// HasAsset reports whether the template names the asset level; without it the
// exact topic is looked up in the inventory.
func (t *Template) HasAsset() bool { return t.asset >= 0 }

// ParseTemplate parses a topic template. Levels are separated by '/'; a level
// is a literal, '+' (any one level), '#' (any remaining levels, last only) or
// {asset} (any one level, taken as the asset id; at most once, and the
// whole level). An optional $share/<group>/ prefix subscribes as a shared
// subscription and is not part of the matched topic.
func ParseTemplate(s string) (*Template, error) {
	t := &Template{Raw: s, asset: -1}
	rest := s
	if strings.HasPrefix(s, "$share/") {
		group, after, ok := strings.Cut(strings.TrimPrefix(s, "$share/"), "/")
		if !ok || group == "" || strings.ContainsAny(group, "+#{}") {
			return nil, fmt.Errorf("topic template %q: want $share/<group>/<topic> with a plain group name", s)
		}
		t.Share, rest = group, after
	}
	if rest == "" {
		return nil, fmt.Errorf("topic template %q: empty topic", s)
	}
	if strings.IndexByte(rest, 0) >= 0 {
		return nil, fmt.Errorf("topic template %q: contains a NUL character", s)
	}
	levels := strings.Split(rest, "/")
	filter := make([]string, len(levels))
	for i, l := range levels {
		switch {
		case l == "+":
			t.segs = append(t.segs, segment{kind: segPlus})
		case l == "#":
			if i != len(levels)-1 {
				return nil, fmt.Errorf("topic template %q: '#' must be the last level", s)
			}
			t.segs = append(t.segs, segment{kind: segHash})
		case l == AssetSegment:
			if t.asset >= 0 {
				return nil, fmt.Errorf("topic template %q: %s may appear only once", s, AssetSegment)
			}
			t.asset = i
			t.segs = append(t.segs, segment{kind: segAsset})
			l = "+"
		case strings.ContainsAny(l, "+#"):
			return nil, fmt.Errorf("topic template %q: level %q mixes a wildcard with text; wildcards must be a whole level", s, l)
		case strings.ContainsAny(l, "{}"):
			return nil, fmt.Errorf("topic template %q: level %q: the only placeholder is a whole level %s", s, l, AssetSegment)
		default:
			t.segs = append(t.segs, segment{kind: segLiteral, lit: l})
		}
		filter[i] = l
	}
	t.Filter = strings.Join(filter, "/")
	t.simple = t.asset >= 0
	for _, sg := range t.segs {
		if sg.kind != segLiteral && sg.kind != segAsset {
			t.simple = false
		}
	}
	if t.simple {
		for _, l := range levels[:t.asset] {
			t.prefix += l + "/"
		}
		for _, l := range levels[t.asset+1:] {
			t.suffix += "/" + l
		}
	}
	if t.Share != "" {
		t.Filter = "$share/" + t.Share + "/" + t.Filter
	}
	return t, nil
}

// Match reports whether topic (as published, without any $share prefix)
// matches the template and returns the asset level ("" when the template has
// none). It does not allocate: the asset id is a substring of topic.
func (t *Template) Match(topic string) (asset string, ok bool) {
	if topic == "" {
		return "", false
	}
	// MQTT: wildcards at the first level do not match topics starting with '$'.
	if topic[0] == '$' && len(t.segs) > 0 && t.segs[0].kind != segLiteral {
		return "", false
	}
	if t.simple && len(topic) > len(t.prefix)+len(t.suffix) &&
		strings.HasPrefix(topic, t.prefix) && strings.HasSuffix(topic, t.suffix) {
		// The common case, decided without splitting the topic: the
		// levels between prefix and suffix must be exactly one.
		asset = topic[len(t.prefix) : len(topic)-len(t.suffix)]
		if strings.IndexByte(asset, '/') < 0 {
			return asset, true
		}
		return "", false
	}
	rest := topic
	for i, sg := range t.segs {
		if sg.kind == segHash {
			return asset, true // '#' also matches the parent level itself
		}
		level := rest
		j := strings.IndexByte(rest, '/')
		if j >= 0 {
			level = rest[:j]
		}
		switch sg.kind {
		case segLiteral:
			if level != sg.lit {
				return "", false
			}
		case segAsset:
			asset = level
		}
		if j < 0 {
			// The topic has no more levels: it matches if the template ends
			// here or continues only with '#'.
			if i == len(t.segs)-1 || i == len(t.segs)-2 && t.segs[i+1].kind == segHash {
				return asset, true
			}
			return "", false
		}
		rest = rest[j+1:]
	}
	return "", false // the topic has more levels than the template
}

// parseTemplates parses all templates and rejects duplicates.
func parseTemplates(subs []Subscription) ([]*Template, error) {
	if len(subs) == 0 {
		return nil, errors.New("no subscriptions: give at least one topic template")
	}
	seen := map[string]bool{}
	out := make([]*Template, len(subs))
	for i, s := range subs {
		t, err := ParseTemplate(s.Topic)
		if err != nil {
			return nil, fmt.Errorf("subscriptions[%d]: %w", i, err)
		}
		if seen[t.Filter] {
			return nil, fmt.Errorf("subscriptions[%d]: topic %q subscribed twice", i, t.Filter)
		}
		seen[t.Filter] = true
		out[i] = t
	}
	return out, nil
}
