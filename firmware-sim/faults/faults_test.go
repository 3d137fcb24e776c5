package faults

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

var assets = map[string]string{
	"SL-001-01": KindStreetlight, "CAB-001": KindCabinet, "CAB-001-C2": KindCircuit,
	"GAS-001": KindGasStation, "BIN-0001": KindWasteBin,
}

func newSet() *Set {
	return NewSet(func(id string) (string, bool) { k, ok := assets[id]; return k, ok })
}

func TestKindNames(t *testing.T) {
	for _, k := range Kinds() {
		got, err := ParseKind(k.String())
		if err != nil || got != k {
			t.Errorf("%v round-trips to %v, %v", k, got, err)
		}
		if k.Doc() == "" || len(k.Targets()) == 0 {
			t.Errorf("%v has no doc or targets", k)
		}
	}
	if len(Kinds()) != 14 {
		t.Errorf("%d kinds", len(Kinds()))
	}
	if _, err := ParseKind("lamp_outage"); err == nil {
		t.Error("unknown kind accepted")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		sp   Spec
		want string // "" = valid
	}{
		{Spec{Kind: LampOut, Asset: "SL-001-01"}, ""},
		{Spec{Kind: LampOut, Asset: "GAS-001"}, "applies to [streetlight]"},
		{Spec{Kind: LampOut, Asset: "SL-009-01"}, "no asset"},
		{Spec{Kind: CircuitDead, Asset: "CAB-001-C2"}, ""},
		{Spec{Kind: CircuitDead, Asset: "CAB-001"}, "applies to [circuit]"},
		{Spec{Kind: Leakage, Asset: "CAB-001", Params: map[string]any{"ma": 60}}, ""},
		{Spec{Kind: Leakage, Asset: "CAB-001", Params: map[string]any{"ma": "lots"}}, "must be a number"},
		{Spec{Kind: Leakage, Asset: "CAB-001", Params: map[string]any{"amps": 1}}, `no parameter "amps"`},
		{Spec{Kind: ModbusException, Asset: "GAS-001", Params: map[string]any{"code": uint64(11)}}, ""},
		{Spec{Kind: ModbusException, Asset: "GAS-001", Params: map[string]any{"code": 7}}, "exception code"},
		{Spec{Kind: ModbusException, Asset: "BIN-0001"}, "applies to"},
		{Spec{Kind: SlowReply, Asset: "SL-001-01", Params: map[string]any{"delay": "2s"}}, ""},
		{Spec{Kind: SlowReply, Asset: "SL-001-01", Params: map[string]any{"delay": 2}}, "duration"},
		{Spec{Kind: MalformedPayload, Asset: "BIN-0001", Params: map[string]any{"mode": "types"}}, ""},
		{Spec{Kind: MalformedPayload, Asset: "BIN-0001", Params: map[string]any{"mode": "binary"}}, "syntax or types"},
		{Spec{Kind: Silent, Asset: "BIN-0001"}, ""},
		{Spec{Kind: Silent, Asset: "CAB-001", For: -time.Second}, "negative"},
	}
	for _, tt := range tests {
		err := newSet().Validate(&tt.sp)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%v on %s: got %v, want %q", tt.sp.Kind, tt.sp.Asset, err, tt.want)
		}
	}
}

func TestSet(t *testing.T) {
	s := newSet()
	now := time.Now()
	if e := s.Effects("CAB-001", now); e.Any() {
		t.Fatal("effects on an empty set")
	}
	a, err := s.Add(Spec{Kind: Leakage, Asset: "CAB-001", Start: now, For: time.Minute, Params: map[string]any{"ma": 50}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Add(Spec{Kind: Leakage, Asset: "CAB-001", Start: now, Params: map[string]any{"ma": 70}})
	if err != nil {
		t.Fatal(err)
	}
	later, _ := s.Add(Spec{Kind: Silent, Asset: "CAB-001", Start: now.Add(time.Hour)})
	e := s.Effects("CAB-001", now)
	if !e.Has(Leakage) || e.Has(Silent) || e.Get(Leakage).Number("ma", 0) != 70 {
		t.Errorf("effects: leakage %v (latest wins), silent %v", e.Get(Leakage), e.Has(Silent))
	}
	if e := s.Effects("CAB-001", now.Add(2*time.Hour)); !e.Has(Silent) {
		t.Error("future fault not in effect when its time comes")
	}
	if got := s.List(now); len(got) != 3 || got[0].ID != a.ID || got[2].ID != later.ID {
		t.Errorf("list: %v", got)
	}
	if n := s.Expire(now.Add(2 * time.Minute)); n != 1 {
		t.Errorf("expired %d, want 1", n)
	}
	if !s.Remove(b.ID) || s.Remove(b.ID) {
		t.Error("remove")
	}
	if e := s.Effects("CAB-001", now); e.Any() {
		t.Errorf("effects after removal: %+v", e)
	}
	var m Effects
	m.Merge(s.Effects("CAB-001", now.Add(2*time.Hour)))
	if !m.Has(Silent) {
		t.Error("merge")
	}
}

func TestTimeline(t *testing.T) {
	s := newSet()
	yaml := `
- {at: 0s, fault: silent, asset: GAS-001, for: 1h}
- at: 10ms
  fault: leakage
  asset: CAB-001
  params: {ma: 55}
`
	steps, err := ParseTimeline("scenario.yaml", []byte(yaml), s)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2 || steps[1].Params["ma"] != 55.0 || steps[0].Line != 2 {
		t.Fatalf("steps: %+v", steps)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	Play(ctx, steps, s, time.Now(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	now := time.Now()
	if e := s.Effects("GAS-001", now); !e.Has(Silent) {
		t.Error("silent not injected")
	}
	if e := s.Effects("CAB-001", now); e.Get(Leakage).Number("ma", 0) != 55 {
		t.Error("leakage not injected")
	}

	bad := `
- {at: 1m, fault: lamp_out, asset: SL-001-01}
- {at: 2m, fault: lamp_gone, asset: SL-001-01}
- {at: 3m, fault: leakage, asset: SL-001-01}
`
	_, err = ParseTimeline("bad.yaml", []byte(bad), s)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:3:") || !strings.Contains(err.Error(), `unknown fault "lamp_gone"`) ||
		!strings.Contains(err.Error(), "bad.yaml:4:") {
		t.Errorf("errors: %v", err)
	}
	if _, err := ParseTimeline("x.yaml", []byte("- {at: soon, fault: silent, asset: CAB-001}\n"), s); err == nil || !strings.Contains(err.Error(), "x.yaml:1") {
		t.Errorf("bad duration: %v", err)
	}
}
