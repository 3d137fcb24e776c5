package rules

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/citygw/citygw/devices"
)

// RuleInfo is the rule as case templates see it.
type RuleInfo struct {
	ID, Kind, Severity, Description string
}

// TemplateData is what a rule's case title and description templates see:
// {{ .Asset.ID }}, {{ .Values.current_a }}, {{ index .Values "avg(current_a, \"10m\")" }},
// {{ .Labels.circuit }}, {{ .Count }} of {{ .Size }}, {{ fmt .Values.x }}.
type TemplateData struct {
	Rule        RuleInfo
	Asset       *devices.Asset // the asset that last made the condition true
	Assets      []string       // assets meeting the condition
	Group       string
	GroupLabels map[string]string
	Labels      map[string]string
	Values      map[string]any
	Thresholds  map[string]any
	Count       int // assets meeting the condition
	Size        int // assets in the group (group rules)
	State       string
	Start       time.Time
	Time        time.Time
	Location    *time.Location
}

// Local formats t in the city's time zone.
func (d *TemplateData) Local(t time.Time) string {
	loc := d.Location
	if loc == nil {
		loc = time.UTC
	}
	return t.In(loc).Format("2006-01-02 15:04")
}

func render(t *template.Template, d *TemplateData) (string, error) {
	if t == nil {
		return "", nil
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", err
	}
	return b.String(), nil
}

// fmtValue formats a value for people: numbers with at most 3 decimals.
func fmtValue(v any) string {
	switch x := v.(type) {
	case float64:
		return strconv.FormatFloat(math.Round(x*1000)/1000, 'f', -1, 64)
	case nil:
		return "?"
	}
	return fmt.Sprint(v)
}

// sampleTemplateData is used to trial-render templates at load.
func sampleTemplateData(cr *compiledRule, ks *kindSet) *TemplateData {
	a := &devices.Asset{ID: "sample", Kind: cr.kind, Attrs: map[string]any{}}
	if ks != nil && len(ks.assets) > 0 {
		a = ks.assets[0]
	}
	vals := map[string]any{}
	for _, p := range cr.probes {
		vals[p.name] = 0.0
	}
	return &TemplateData{Rule: RuleInfo{ID: cr.spec.ID, Kind: cr.kind, Severity: cr.spec.Severity}, Asset: a,
		Assets: []string{a.ID}, Group: a.ID, GroupLabels: map[string]string{}, Labels: cr.labels, Values: vals,
		Thresholds: map[string]any{}, Count: 1, Size: 1, State: "firing", Location: time.UTC}
}
