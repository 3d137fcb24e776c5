package mqttsub

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices"
)

// batchRecorder is a BatchHandler: it records each batch's assets and
// refuses a batch while refuse is set.
type batchRecorder struct {
	recorder
	batches [][]string
	refuse  bool
}

func (h *batchRecorder) HandleBatch(_ context.Context, rs []*devices.Reading) error {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.Asset.ID)
	}
	h.batches = append(h.batches, ids)
	if h.refuse {
		return errors.New("wal full")
	}
	return nil
}

// A worker hands what it holds to a BatchHandler in one call, acks every
// message of an accepted batch, none of a refused one (holding their assets
// back until the redelivery), and still drops useless messages at once.
func TestProcessBatch(t *testing.T) {
	inv := testInventory(t, 4)
	h := &batchRecorder{}
	s, err := New(Config{Broker: "tcp://127.0.0.1:1", ClientID: "t", Workers: 1, MaxMessagesPerAsset: -1,
		Subscriptions: []Subscription{{Topic: "city/bins/{asset}/telemetry"}}}, inv, h, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorker(time.Minute)
	run := func(topics ...string) []*inMsg {
		var ms []*inMsg
		w.items = w.items[:0]
		for _, tp := range topics {
			m := &inMsg{topic: tp, payload: []byte(binPayload(time.Now(), 50, 1))}
			it, _ := s.admit(m)
			w.items = append(w.items, it)
			ms = append(ms, m)
		}
		s.processBatch(context.Background(), w)
		return ms
	}
	topic := func(i int) string { return fmt.Sprintf("city/bins/bin-%04d/telemetry", i) }
	acks := func(ms []*inMsg) (n []int32) {
		for _, m := range ms {
			n = append(n, m.acks.Load())
		}
		return n
	}

	ms := run(topic(0), topic(1), "city/bins/nobody/telemetry", topic(0))
	if len(h.batches) != 1 || fmt.Sprint(h.batches[0]) != "[bin-0000 bin-0001 bin-0000]" || h.calls != 0 {
		t.Fatalf("batches %v, single calls %d", h.batches, h.calls)
	}
	if got := fmt.Sprint(acks(ms)); got != "[1 1 1 1]" {
		t.Errorf("accepted batch acks %s", got)
	}

	h.refuse = true
	ms = run(topic(2), topic(3), "city/bins/nobody/telemetry")
	if got := fmt.Sprint(acks(ms)); got != "[0 0 1]" {
		t.Errorf("refused batch acks %s (the unknown asset's is acked at once)", got)
	}
	h.refuse = false
	// bin-0002 and bin-0003 wait for their redelivery; bin-0000 goes on.
	ms = run(topic(2), topic(0), topic(3))
	if got := fmt.Sprint(acks(ms)); got != "[0 1 0]" {
		t.Errorf("after a refusal acks %s", got)
	}
	// Only bin-0000 was ready: one reading alone goes through Handle.
	if len(h.batches) != 2 || h.calls != 1 || h.got[0].asset != "bin-0000" {
		t.Errorf("handed on %d batches and %d single readings (%v) while bin-0002/3 are held", len(h.batches), h.calls, h.got)
	}
	if st := s.Status(); st.Inflight != 0 || st.Rejected != 4 {
		t.Errorf("inflight %d, rejected %d (want 0, 4)", st.Inflight, st.Rejected)
	}
}
