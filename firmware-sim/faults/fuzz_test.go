package faults

import "testing"

// FuzzParseTimeline feeds arbitrary files to the scenario loader: steps or an
// error, never a panic, and accepted steps name known faults and assets.
func FuzzParseTimeline(f *testing.F) {
	f.Add([]byte("- {at: 1m, fault: lamp_out, asset: SL-001-01, for: 10m}\n"))
	f.Add([]byte("- {at: 0s, fault: leakage, asset: CAB-001, params: {ma: 60}}\n- {at: 2m, fault: silent, asset: BIN-0001}\n"))
	f.Add([]byte("- {at: 5s, fault: slow_reply, asset: GAS-001, params: {delay: 3s}}\n"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newSet()
		steps, err := ParseTimeline("fuzz.yaml", data, s)
		if err != nil {
			return
		}
		for _, st := range steps {
			if _, ok := assets[st.Asset]; !ok || st.Kind == 0 {
				t.Fatalf("accepted step %+v", st)
			}
			if _, err := s.Add(Spec{Kind: st.Kind, Asset: st.Asset, For: st.For.D(), Params: st.Params}); err != nil {
				t.Fatalf("accepted step does not add: %v", err)
			}
		}
	})
}
