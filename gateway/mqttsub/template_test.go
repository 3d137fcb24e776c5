package mqttsub

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestParseTemplate(t *testing.T) {
	tests := []struct {
		in      string
		filter  string
		share   string
		asset   bool
		wantErr string
	}{
		{in: "city/bins/{asset}/telemetry", filter: "city/bins/+/telemetry", asset: true},
		{in: "city/bins/+/telemetry", filter: "city/bins/+/telemetry"},
		{in: "city/bins/bin-0001/telemetry", filter: "city/bins/bin-0001/telemetry"},
		{in: "{asset}", filter: "+", asset: true},
		{in: "city/{asset}/#", filter: "city/+/#", asset: true},
		{in: "#", filter: "#"},
		{in: "+/+/{asset}", filter: "+/+/+", asset: true},
		{in: "$share/gw/city/bins/{asset}/telemetry", filter: "$share/gw/city/bins/+/telemetry", share: "gw", asset: true},
		{in: "$SYS/broker/load", filter: "$SYS/broker/load"},
		{in: "a//b", filter: "a//b"},
		{in: "", wantErr: "empty topic"},
		{in: "$share/gw/", wantErr: "empty topic"},
		{in: "$share//a", wantErr: "plain group"},
		{in: "$share/g+/a", wantErr: "plain group"},
		{in: "$share/gw", wantErr: "plain group"},
		{in: "a/#/b", wantErr: "last level"},
		{in: "a/{asset}/{asset}", wantErr: "only once"},
		{in: "a/bin-{asset}", wantErr: "placeholder"},
		{in: "a/{id}", wantErr: "placeholder"},
		{in: "a/b+/c", wantErr: "whole level"},
		{in: "a/#b", wantErr: "whole level"},
		{in: "a/\x00", wantErr: "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseTemplate(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseTemplate(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseTemplate(%q): %v", tt.in, err)
			}
			if got.Filter != tt.filter || got.Share != tt.share || got.HasAsset() != tt.asset {
				t.Errorf("ParseTemplate(%q) = filter %q share %q asset %v, want %q %q %v",
					tt.in, got.Filter, got.Share, got.HasAsset(), tt.filter, tt.share, tt.asset)
			}
		})
	}
}

func TestTemplateMatch(t *testing.T) {
	tests := []struct {
		tmpl  string
		topic string
		ok    bool
		asset string
	}{
		{"city/bins/{asset}/telemetry", "city/bins/bin-0001/telemetry", true, "bin-0001"},
		{"city/bins/{asset}/telemetry", "city/bins/bin-0001/status", false, ""},
		{"city/bins/{asset}/telemetry", "city/bins/bin-0001", false, ""},
		{"city/bins/{asset}/telemetry", "city/bins/bin-0001/telemetry/x", false, ""},
		{"city/bins/{asset}/telemetry", "city/bins//telemetry", true, ""},
		{"$share/gw/city/bins/{asset}/telemetry", "city/bins/b7/telemetry", true, "b7"},
		{"city/+/{asset}", "city/bins/b7", true, "b7"},
		{"city/+/{asset}", "city/bins", false, ""},
		{"city/{asset}/#", "city/b7", true, "b7"}, // '#' matches the parent level too
		{"city/{asset}/#", "city/b7/a/b/c", true, "b7"},
		{"city/{asset}/#", "town/b7/a", false, ""},
		{"#", "anything/at/all", true, ""},
		{"#", "$SYS/broker/load", false, ""}, // wildcards at the first level skip $ topics
		{"+/b", "$SYS/b", false, ""},
		{"{asset}/b", "$x/b", false, ""},
		{"$SYS/broker/load", "$SYS/broker/load", true, ""},
		{"city/bins/bin-0001/telemetry", "city/bins/bin-0001/telemetry", true, ""},
		{"city/bins/bin-0001/telemetry", "city/bins/bin-0002/telemetry", false, ""},
		{"a/+", "a/", true, ""},
		{"a/+", "a", false, ""},
		{"a", "", false, ""},
		{"a/b", "a/b/", false, ""},
	}
	for _, tt := range tests {
		tm, err := ParseTemplate(tt.tmpl)
		if err != nil {
			t.Fatalf("ParseTemplate(%q): %v", tt.tmpl, err)
		}
		asset, ok := tm.Match(tt.topic)
		if ok != tt.ok || asset != tt.asset {
			t.Errorf("%q.Match(%q) = %q, %v; want %q, %v", tt.tmpl, tt.topic, asset, ok, tt.asset, tt.ok)
		}
		if ref := refMatch(tm.Filter, tm.Share, tt.topic); ref != ok {
			t.Errorf("%q.Match(%q) = %v but the reference matcher says %v", tt.tmpl, tt.topic, ok, ref)
		}
	}
}

func TestTemplateMatchDoesNotAllocate(t *testing.T) {
	tm, err := ParseTemplate("city/bins/{asset}/telemetry")
	if err != nil {
		t.Fatal(err)
	}
	var sink string
	allocs := testing.AllocsPerRun(100, func() {
		sink, _ = tm.Match("city/bins/bin-000123/telemetry")
	})
	if allocs != 0 || sink != "bin-000123" {
		t.Fatalf("Match: %v allocations, asset %q", allocs, sink)
	}
}

// refMatch is the MQTT 3.1.1 topic-filter rule written the obvious way, to
// check Match against.
func refMatch(filter, share, topic string) bool {
	if share != "" {
		filter = strings.TrimPrefix(filter, "$share/"+share+"/")
	}
	if topic == "" {
		return false
	}
	f, tp := strings.Split(filter, "/"), strings.Split(topic, "/")
	if strings.HasPrefix(topic, "$") && (f[0] == "+" || f[0] == "#") {
		return false
	}
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(tp) {
			return false
		}
		if l != "+" && l != tp[i] {
			return false
		}
	}
	return len(f) == len(tp)
}

func FuzzTemplateMatch(f *testing.F) {
	seeds := [][2]string{
		{"city/bins/{asset}/telemetry", "city/bins/bin-0001/telemetry"},
		{"city/{asset}/#", "city/b7"},
		{"$share/gw/city/+/{asset}", "city/bins/b7"},
		{"#", "$SYS/x"},
		{"a/+", "a/"},
		{"a//{asset}", "a//x"},
		{"+/{asset}/+", "/x/"},
		{"{asset}", "b7"},
		{"city/bins/{asset}/telemetry", "city/bins//telemetry"},
		{"city/bins/{asset}/telemetry", "city/bins/a/telemetry/telemetry"},
		{"a/{asset}/a", "a/a/a/a"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, tmpl, topic string) {
		tm, err := ParseTemplate(tmpl)
		if err != nil {
			return
		}
		if strings.ContainsAny(topic, "+#\x00") {
			return // not a publishable topic
		}
		asset, ok := tm.Match(topic)
		if ref := refMatch(tm.Filter, tm.Share, topic); ref != ok {
			t.Fatalf("%q.Match(%q) = %v, reference %v", tmpl, topic, ok, ref)
		}
		if !ok && asset != "" {
			t.Fatalf("%q.Match(%q) returned asset %q without a match", tmpl, topic, asset)
		}
		if tm.simple { // the prefix/suffix shortcut agrees with the level-by-level match
			g := *tm
			g.simple = false
			if ga, gok := g.Match(topic); ga != asset || gok != ok {
				t.Fatalf("%q.Match(%q) = %q %v, level by level %q %v", tmpl, topic, asset, ok, ga, gok)
			}
		}
		if ok && tm.HasAsset() {
			// The asset is the topic level at the {asset} position.
			levels := strings.Split(topic, "/")
			if tm.asset >= len(levels) || levels[tm.asset] != asset {
				t.Fatalf("%q.Match(%q) asset %q, want level %d of %q", tmpl, topic, asset, tm.asset, levels)
			}
			if strings.Contains(asset, "/") {
				t.Fatalf("asset %q spans levels", asset)
			}
		}
		// The filter must parse again to the same filter (it is what we subscribe).
		if tm.Share == "" && !tm.HasAsset() && tm.Filter != tmpl {
			t.Fatalf("filter %q differs from template %q without placeholders", tm.Filter, tmpl)
		}
	})
}

// FuzzMessage feeds arbitrary topics and payloads through the worker path:
// it must not panic, must count each message exactly once, and must
// acknowledge everything it does not refuse.
func FuzzMessage(f *testing.F) {
	f.Add("city/bins/bin-0000/telemetry", []byte(`{"ts":1764130000123,"fill":{"pct":73.5,"dist_cm":31},"fw":"3.1.4"}`))
	f.Add("city/bins/bin-0001/telemetry", []byte(`{"fill":{"pct":"x"},"lid_open":1}`))
	f.Add("city/bins//telemetry", []byte(`{}`))
	f.Add("legacy/bin9/data", []byte(`[`))
	f.Add("city/bins/lamp-1/telemetry", []byte(`{"fill":{"pct":1e999}}`))
	inv := testInventory(f, 2)
	h := &countingHandler{} // panics if handed a reading without values
	s, err := New(Config{Broker: "tcp://127.0.0.1:1", ClientID: "fuzz", Workers: 1, MaxPayloadBytes: 4096,
		Subscriptions: []Subscription{{Topic: "city/bins/{asset}/telemetry"}, {Topic: "legacy/#"}}}, inv, h, nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	w := newWorker(time.Minute)
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		before := uint64(0)
		for r := range nResults {
			before += s.counts[r].Load()
		}
		m := &inMsg{topic: topic, payload: payload}
		it, _ := s.admit(m)
		s.process(context.Background(), w, it)
		after := uint64(0)
		for r := range nResults {
			after += s.counts[r].Load()
		}
		if after != before+1 {
			t.Fatalf("message counted %d times", after-before)
		}
		if m.acks.Load() != 1 {
			t.Fatalf("message acknowledged %d times (the handler never refuses)", m.acks.Load())
		}
		if s.inflight.Load() != 0 {
			t.Fatalf("inflight %d", s.inflight.Load())
		}
	})
}
