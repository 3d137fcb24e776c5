package rules

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
)

// TestInput is the input of one case of a rule unit-test file, as
// readings: what `rules explain -input` replays.
type TestInput struct {
	Inventory *devices.Inventory // the case's assets
	Readings  Readings
	Location  *time.Location
	RuleFiles []string  // the test file's rule files, relative to the working directory
	Start     time.Time // the first step
	End       time.Time // the last step
}

// LoadTestInput reads a rule unit-test file (see RunTests) and returns the
// readings of the test case named name (the first when name is ""), one
// per asset and step as the test runner would feed them.
func LoadTestInput(cat *devices.Catalog, file, name string) (*TestInput, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var tf TestFile
	doc, err := yamlconf.Decode(file, data, &tf)
	if err != nil {
		return nil, err
	}
	var tc *TestCase
	at := ""
	for i, c := range tf.Tests {
		if name == "" || c.Name == name {
			tc, at = c, fmt.Sprintf("$.tests[%d]", i)
			break
		}
	}
	if tc == nil {
		return nil, fmt.Errorf("%s: no test case named %q", file, name)
	}
	in := &TestInput{Location: time.UTC, Start: tc.Start}
	if tf.Location != "" {
		if in.Location, err = time.LoadLocation(tf.Location); err != nil {
			return nil, doc.Errorf("$.location", "location", "%v", err)
		}
	}
	for _, rf := range tf.RuleFiles {
		if !filepath.IsAbs(rf) {
			rf = filepath.Join(filepath.Dir(file), rf)
		}
		in.RuleFiles = append(in.RuleFiles, rf)
	}
	if tc.Start.IsZero() {
		return nil, doc.Errorf(at+".start", "start", "required: the time of the first sample (RFC 3339 with zone)")
	}
	interval := tc.Interval.D()
	if interval <= 0 {
		interval = tf.EvaluationInterval.D()
	}
	if interval <= 0 {
		interval = time.Minute
	}
	inv, inputs, steps, err := buildTestInputs(cat, tc, doc, at)
	if err != nil {
		return nil, err
	}
	in.Inventory = inv
	in.End = tc.Start.Add(time.Duration(max(steps-1, 0)) * interval)
	for i := 0; i < steps; i++ {
		now := tc.Start.Add(time.Duration(i) * interval)
		for _, ti := range inputs {
			r := &devices.Reading{}
			r.Reset(ti.a)
			r.Time, r.Received = now, now
			any := false
			for k, idx := range ti.fields {
				if i < len(ti.series[k]) && !ti.series[k][i].missing {
					r.Values[idx], _ = ti.series[k][i].value(ti.a.Schema.Fields[idx].Type)
					any = true
				}
			}
			if any {
				in.Readings = append(in.Readings, r)
			}
		}
	}
	return in, nil
}
