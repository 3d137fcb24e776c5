package faults

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"time"

	"github.com/citygw/citygw/devices/yamlconf"
)

// Step is one entry of a scenario timeline: at a wall-clock offset from the
// simulator's start, inject a fault into an asset for a while.
//
//   - {at: 2m, fault: lamp_out, asset: SL-001-03, for: 10m}
//   - {at: 5m, fault: leakage, asset: CAB-002, params: {ma: 60}}
type Step struct {
	At     yamlconf.Duration `yaml:"at"`
	Fault  string            `yaml:"fault"`
	Asset  string            `yaml:"asset"`
	For    yamlconf.Duration `yaml:"for,omitempty"`
	Params map[string]any    `yaml:"params,omitempty"`

	Kind Kind   `yaml:"-"`
	File string `yaml:"-"`
	Line int    `yaml:"-"`
}

// LoadTimeline reads a scenario timeline file (a YAML list of steps) and
// checks every step against set (fault names, assets, parameters).
func LoadTimeline(file string, set *Set) ([]Step, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading scenario: %w", err)
	}
	return ParseTimeline(file, data, set)
}

// ParseTimeline decodes a scenario timeline; see LoadTimeline.
func ParseTimeline(file string, data []byte, set *Set) ([]Step, error) {
	var steps []Step
	doc, err := yamlconf.Decode(file, data, &steps)
	if err != nil {
		return nil, err
	}
	var errs yamlconf.Errors
	for i := range steps {
		st := &steps[i]
		at := fmt.Sprintf("$[%d]", i)
		st.File = file
		st.Line, _ = doc.Pos(at + ".fault")
		k, err := ParseKind(st.Fault)
		if err != nil {
			errs = append(errs, doc.Errorf(at+".fault", fmt.Sprintf("[%d].fault", i), "%v", err))
			continue
		}
		st.Kind = k
		sp := Spec{Kind: k, Asset: st.Asset, For: st.For.D(), Params: st.Params}
		if err := set.Validate(&sp); err != nil {
			errs = append(errs, doc.Errorf(at, fmt.Sprintf("[%d]", i), "%v", err))
			continue
		}
		st.Params = sp.Params
	}
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].At < steps[j].At })
	return steps, errs.Err()
}

// Play injects the steps into set at start+At each, until ctx ends.
func Play(ctx context.Context, steps []Step, set *Set, start time.Time, log *slog.Logger) {
	for _, st := range steps {
		when := start.Add(st.At.D())
		if d := time.Until(when); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		f, err := set.Add(Spec{Kind: st.Kind, Asset: st.Asset, Start: when, For: st.For.D(), Params: st.Params, Source: fmt.Sprintf("timeline %s:%d", st.File, st.Line)})
		if err != nil {
			log.Error("scenario step failed", "file", st.File, "line", st.Line, "err", err)
			continue
		}
		log.Info("scenario fault injected", "id", f.ID, "fault", f.Kind.String(), "asset", f.Asset, "for", st.For.D())
	}
}
