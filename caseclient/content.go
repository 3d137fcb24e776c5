package caseclient

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/rules"
)

// Case is what a case system receives about one anomaly episode: the
// payload of an open operation, and of the webhook's events.
type Case struct {
	Key        string `json:"key"`                  // stable: from the episode identity (+ generation)
	Generation int    `json:"generation,omitempty"` // 0 for the first case of an episode
	Reopens    string `json:"reopens,omitempty"`    // key of the case this one re-opens
	ReopensID  string `json:"reopens_id,omitempty"` // that case's id at the sink
	EpisodeID  string `json:"episode_id"`
	// AnomalyKey names the anomaly (rule id + group key) independently of
	// the episode, so that replicas that saw different readings of it name
	// it alike; set in replicas mode only (Config.Replicas).
	AnomalyKey string `json:"anomaly_key,omitempty"`
	Rule       string `json:"rule"`
	Expression string `json:"expression,omitempty"`

	Title       string `json:"title"`
	Description string `json:"description,omitempty"`
	Severity    string `json:"severity"`

	Service     string `json:"service"`
	Type        string `json:"type"` // component (部件) or event (事件)
	Major       string `json:"major_class"`
	Sub         string `json:"sub_class"`
	ClassName   Name   `json:"class_name"`
	ServiceName Name   `json:"service_name"`
	Condition   string `json:"condition"`
	Closure     string `json:"closure"`
	Department  string `json:"department"`
	Deadline    string `json:"deadline"`
	DeadlineZH  string `json:"deadline_zh"`

	Kind           string            `json:"kind"`
	Assets         []string          `json:"assets"`
	ComponentCode  string            `json:"component_code,omitempty"` // 16 digits
	ComponentCodes []string          `json:"component_codes,omitempty"`
	Grid           string            `json:"grid,omitempty"`
	District       string            `json:"district,omitempty"`
	Lat            float64           `json:"lat"` // WGS84
	Lon            float64           `json:"long"`
	SourceCRS      string            `json:"source_crs,omitempty"`
	GroupKey       string            `json:"group_key,omitempty"`
	GroupLabels    map[string]string `json:"group_labels,omitempty"`
	GroupSize      int               `json:"group_size,omitempty"`

	Values     map[string]any `json:"values,omitempty"`
	Thresholds map[string]any `json:"thresholds,omitempty"`
	FirstSeen  time.Time      `json:"first_seen"`
	FiredAt    time.Time      `json:"fired_at"`
	Telemetry  string         `json:"telemetry_url,omitempty"`
}

// caseKey names the case of an episode: the episode id for the first case,
// with "-r<generation>" for a re-opened one.
func caseKey(episode string, gen int) string {
	if gen == 0 {
		return "cgw-" + episode
	}
	return "cgw-" + episode + "-r" + strconv.Itoa(gen)
}

// AnomalyKey names an anomaly independently of its episode: a hash of the
// rule id and the group key (for most rules the asset id). Two gateway
// replicas that start episodes of one anomaly at different times (each saw
// other readings) derive different episode ids but the same anomaly key.
// It is "cgwa-" and 20 hex digits: printable ASCII, safe in a header, a
// description tag and an Open311 attribute.
func AnomalyKey(rule, groupKey string) string {
	h := sha256.New()
	h.Write([]byte(rule))
	h.Write([]byte{0})
	h.Write([]byte(groupKey))
	return "cgwa-" + hex.EncodeToString(h.Sum(nil)[:10])
}

// builder builds case content from transitions.
type builder struct {
	codes     *CodeTable
	inv       *devices.Inventory
	telemetry string
	exprs     func(rule string) string
	anomaly   bool // replicas mode: give each case its anomaly key
}

// build returns the case for a firing transition. An unknown service is an
// error (the rule set and the code table disagree).
func (b *builder) build(t *rules.Transition) (*Case, error) {
	svc := b.codes.Service(t.Service)
	if svc == nil {
		return nil, fmt.Errorf("rule %s: service %q is not in the city code table %s", t.Rule, t.Service, b.codes.File)
	}
	c := &Case{Key: caseKey(t.EpisodeID, 0), EpisodeID: t.EpisodeID, Rule: t.Rule, Title: t.Title, Description: t.Description,
		Severity: t.Severity, Service: svc.Name, Type: svc.Type, ServiceName: svc.Title, Condition: svc.Condition,
		Closure: svc.Closure, Department: svc.Department, Deadline: svc.Deadline.String(), DeadlineZH: svc.Deadline.ZH(),
		Kind: t.Kind, Assets: append([]string(nil), t.Assets...), GroupKey: t.GroupKey, GroupLabels: t.GroupLabels,
		GroupSize: t.GroupSize, Values: jsonSafe(t.Values), Thresholds: jsonSafe(t.Thresholds), FirstSeen: t.Start.UTC(), FiredAt: t.Time.UTC()}
	if b.exprs != nil {
		c.Expression = b.exprs(t.Rule)
	}
	if b.anomaly {
		c.AnomalyKey = AnomalyKey(t.Rule, t.GroupKey)
	}
	if cl, ok := b.codes.Class(svc, t.Kind); ok {
		c.Major, c.Sub, c.ClassName = cl.Major, cl.Sub, cl.Name
	}
	// The assets: the members meeting the condition, or the group key when
	// it names an asset (a rule grouped by asset).
	ids := c.Assets
	if len(ids) == 0 && b.inv.Lookup(t.GroupKey) != nil {
		ids = []string{t.GroupKey}
		c.Assets = ids
	}
	var sumLat, sumLon float64
	n := 0
	for _, id := range ids {
		a := b.inv.Lookup(id)
		if a == nil {
			continue
		}
		if c.District == "" {
			c.District, c.Grid = a.District, a.Grid
		}
		if digits(a.Code, 16) {
			c.ComponentCodes = append(c.ComponentCodes, a.Code)
		}
		lat, lon := a.Lat, a.Lon
		if strings.EqualFold(a.CRS, devices.GCJ02) {
			lat, lon = GCJ02ToWGS84(lat, lon)
			c.SourceCRS = devices.GCJ02
		}
		if lat == 0 && lon == 0 {
			continue
		}
		sumLat, sumLon, n = sumLat+lat, sumLon+lon, n+1
	}
	if len(c.ComponentCodes) > 0 {
		c.ComponentCode = c.ComponentCodes[0]
	}
	if len(c.ComponentCodes) <= 1 {
		c.ComponentCodes = nil
	}
	if n > 0 {
		// A group's location is the centroid of its members.
		c.Lat, c.Lon = round7(sumLat/float64(n)), round7(sumLon/float64(n))
	}
	if b.telemetry != "" && len(ids) > 0 {
		c.Telemetry = telemetryLink(b.telemetry, ids[0], t.Kind, t.Start.Add(-time.Hour), t.Time.Add(time.Hour))
	}
	return c, nil
}

// jsonSafe copies evidence into values JSON can encode: NaN and ±Inf (a
// missing asset attribute, a division by zero) become strings, other
// non-JSON types their text. A case must never fail to persist because of
// its evidence.
func jsonSafe(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = safeValue(v)
	}
	return out
}

func safeValue(v any) any {
	switch x := v.(type) {
	case nil, bool, string, int, int64, int32, uint, uint64, uint32:
		return x
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
		return x
	case float32:
		return safeValue(float64(x))
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case time.Duration:
		return x.String()
	case map[string]any:
		return jsonSafe(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = safeValue(e)
		}
		return out
	}
	return fmt.Sprint(v)
}

func round7(f float64) float64 { return math.Round(f*1e7) / 1e7 }

// telemetryLink fills the telemetry URL template.
func telemetryLink(tmpl, asset, kind string, from, to time.Time) string {
	r := strings.NewReplacer("{asset}", url.QueryEscape(asset), "{kind}", url.QueryEscape(kind),
		"{from}", url.QueryEscape(from.UTC().Format(time.RFC3339)), "{to}", url.QueryEscape(to.UTC().Format(time.RFC3339)),
		"{from_ms}", strconv.FormatInt(from.UnixMilli(), 10), "{to_ms}", strconv.FormatInt(to.UnixMilli(), 10))
	return r.Replace(tmpl)
}

// keyTag is how a case key appears in free text, so that a case can be
// found by its key in a case system that keeps only the description.
func keyTag(key string) string { return "[case " + key + "]" }

// anomalyTag is how an anomaly key appears in free text, for case systems
// that keep no attributes.
func anomalyTag(key string) string { return "[anomaly " + key + "]" }

// maxDescription is Open311's limit on a request's description.
const maxDescription = 4000

// Text renders the case as the description a dispatcher reads: the key tag
// first (reconciliation searches for it), then the rule's text, codes,
// location, evidence and handling terms; at most 4000 characters.
func (c *Case) Text() string {
	var b strings.Builder
	b.WriteString(keyTag(c.Key))
	b.WriteString(" ")
	if c.AnomalyKey != "" {
		b.WriteString(anomalyTag(c.AnomalyKey))
		b.WriteString(" ")
	}
	b.WriteString(c.Title)
	b.WriteString("\n")
	if c.Description != "" {
		b.WriteString(c.Description)
		b.WriteString("\n")
	}
	if c.Reopens != "" {
		fmt.Fprintf(&b, "重新立案 re-opened: the previous case %s", c.Reopens)
		if c.ReopensID != "" {
			fmt.Fprintf(&b, " (id %s)", c.ReopensID)
		}
		b.WriteString(" was closed while the anomaly persists\n")
	}
	typ := "部件 component"
	if c.Type == TypeEvent {
		typ = "事件 event"
	}
	fmt.Fprintf(&b, "类型 type: %s %s%s %s/%s (%s)\n", typ, c.Major, c.Sub, c.ClassName.ZH, c.ServiceName.ZH, c.ServiceName.EN)
	fmt.Fprintf(&b, "等级 severity: %s\n", c.Severity)
	if c.ComponentCode != "" {
		fmt.Fprintf(&b, "部件编码 component: %s\n", c.ComponentCode)
	}
	if c.Grid != "" || c.District != "" {
		fmt.Fprintf(&b, "单元网格 grid: %s  区 district: %s\n", c.Grid, c.District)
	}
	if c.Lat != 0 || c.Lon != 0 {
		fmt.Fprintf(&b, "位置 location (WGS84): %.7f, %.7f\n", c.Lat, c.Lon)
	}
	fmt.Fprintf(&b, "设施 assets (%s): %s\n", c.Kind, strings.Join(c.Assets, " "))
	fmt.Fprintf(&b, "首次发现 first seen: %s\n", c.FirstSeen.Format(time.RFC3339))
	fmt.Fprintf(&b, "规则 rule: %s", c.Rule)
	if c.Expression != "" {
		fmt.Fprintf(&b, " when %s", c.Expression)
	}
	b.WriteString("\n")
	if len(c.Values) > 0 {
		fmt.Fprintf(&b, "读数 readings: %s\n", kv(c.Values))
	}
	if len(c.Thresholds) > 0 {
		fmt.Fprintf(&b, "阈值 thresholds: %s\n", kv(c.Thresholds))
	}
	fmt.Fprintf(&b, "立案条件 condition: %s\n", c.Condition)
	fmt.Fprintf(&b, "处置时限 deadline: %s (%s)  责任单位 department: %s\n", c.DeadlineZH, c.Deadline, c.Department)
	fmt.Fprintf(&b, "结案条件 closure: %s\n", c.Closure)
	if c.Telemetry != "" {
		fmt.Fprintf(&b, "遥测 telemetry: %s\n", c.Telemetry)
	}
	if len(c.ComponentCodes) > 1 {
		fmt.Fprintf(&b, "部件编码 components: %s\n", strings.Join(c.ComponentCodes, " "))
	}
	return truncate(b.String(), maxDescription)
}

// kv writes a map as sorted "k=v" pairs.
func kv(m map[string]any) string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	parts := make([]string, len(ks))
	for i, k := range ks {
		v := m[k]
		if f, ok := v.(float64); ok {
			v = strconv.FormatFloat(f, 'g', 6, 64)
		}
		parts[i] = fmt.Sprintf("%s=%v", k, v)
	}
	return strings.Join(parts, ", ")
}

// truncate cuts s to at most n characters (runes), marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
