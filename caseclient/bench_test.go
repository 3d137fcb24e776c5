package caseclient

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/citygw/citygw/rules"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkTransitionsOpen measures the acknowledgement path: building a
// case and committing (fsync) its open operations for two sinks.
func BenchmarkTransitionsOpen(b *testing.B) {
	cfg := Config{Outbox: b.TempDir() + "/outbox.db", Sinks: []SinkConfig{
		{Name: "desk", Type: SinkOpen311, URL: "http://127.0.0.1:1", APIKey: "k"},
		{Name: "hook", Type: SinkWebhook, URL: "http://127.0.0.1:1/hook", Secret: testSecret}}}
	c, err := New(cfg, testCodes(b), testInventory(b), prometheus.NewRegistry(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tr := fire("r.bench", "streetlight_fault", "streetlight", fmt.Sprint("G", i), []string{"SL-1"}, t0.Add(time.Duration(i)*time.Second), "major")
		if err := c.Transitions(ctx, []rules.Transition{tr}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCaseText measures rendering a case's Open311 description.
func BenchmarkCaseText(b *testing.B) {
	bl := &builder{codes: testCodes(b), inv: testInventory(b), telemetry: "http://g/{asset}"}
	tr := fire("streetlight.circuit_dead", "streetlight_circuit_fault", "streetlight", "CAB-1-C1", []string{"SL-1", "SL-2", "SL-3"}, t0, "critical")
	c, err := bl.build(&tr)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Text()
	}
}
