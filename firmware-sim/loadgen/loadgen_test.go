package loadgen

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/testenv"
)

func cityFile(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "configs", "city-demo.yaml")
}

// received is what a plain subscriber saw: every message's device time per
// asset, decoded with the gateway's own binsense-ws3 decoder.
type received struct {
	mu     sync.Mutex
	n      int
	ts     map[string][]time.Time
	errors []string
}

func subscribe(t *testing.T, broker string, inv *devices.Inventory) *received {
	t.Helper()
	r := &received{ts: map[string][]time.Time{}}
	opts := mqtt.NewClientOptions().AddBroker(broker).SetClientID("loadgen-test-sub").SetCleanSession(true)
	cl := mqtt.NewClient(opts)
	if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(100) })
	tok := cl.Subscribe("city/bins/+/telemetry", 1, func(_ mqtt.Client, m mqtt.Message) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.n++
		a := inv.ByTopic(m.Topic())
		if a == nil {
			r.errors = append(r.errors, "unknown topic "+m.Topic())
			return
		}
		var rd devices.Reading
		rd.Reset(a)
		ts, err := a.Profile.DecodeJSON(m.Payload(), &rd)
		if err != nil || ts.IsZero() {
			r.errors = append(r.errors, a.ID+": "+string(m.Payload())+": decode error or no ts")
			return
		}
		for i, v := range rd.Values {
			if v.Type == devices.Invalid {
				r.errors = append(r.errors, a.ID+": field "+a.Schema.Fields[i].Name+" missing in "+string(m.Payload()))
			}
		}
		r.ts[a.ID] = append(r.ts[a.ID], ts)
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return r
}

func (r *received) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r.mu.Lock()
		got := r.n
		r.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriber received %d of %d messages", got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts mosquitto")
	}
	m := testenv.StartMosquitto(t, testenv.WithConfigLines("max_queued_messages 0"))
	c, err := BinsCity(cityFile(t), 7, "")
	if err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, m.URL(), c.Inventory)
	var progress testenv.SyncBuffer
	end := time.Now().Add(-time.Minute)
	const msgs = 3003 // 429 per asset
	s, err := Run(context.Background(), Config{Broker: m.URL(), Conns: 3, InFlight: 50, Burst: msgs, End: end, Progress: &progress}, NewCitySource(c))
	if err != nil {
		t.Fatal(err)
	}
	if s.Assets != 7 || s.Messages != msgs || s.Acked != msgs || s.Failed != 0 {
		t.Fatalf("summary %+v, want 7 assets, %d messages all acked", s, msgs)
	}
	if s.FirstPublish.IsZero() || !s.LastAck.After(s.FirstPublish) || s.MsgsPerS <= 0 {
		t.Errorf("summary times %+v", s)
	}
	sub.wait(t, msgs)
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.errors) > 0 {
		t.Fatalf("%d bad messages, first: %s", len(sub.errors), sub.errors[0])
	}
	if sub.n != msgs || len(sub.ts) != 7 {
		t.Fatalf("received %d messages from %d assets, want %d from 7", sub.n, len(sub.ts), msgs)
	}
	for id, ts := range sub.ts {
		if len(ts) != msgs/7 {
			t.Errorf("%s: %d messages, want %d", id, len(ts), msgs/7)
		}
		for k, x := range ts {
			// In order (one connection per asset), a second apart, the last
			// one a second before end.
			want := end.Add(-time.Duration(len(ts)-k) * time.Second).Truncate(time.Millisecond)
			if !x.Equal(want) {
				t.Errorf("%s message %d: ts %v, want %v", id, k, x, want)
				break
			}
		}
	}
	// Progress lines come once a second; a short burst may print none.
	for _, l := range strings.Split(strings.TrimSpace(progress.String()), "\n") {
		if l != "" && !strings.HasPrefix(l, "loadgen: ") {
			t.Errorf("progress line %q", l)
		}
	}
}

func TestBurstUnevenAndCounter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts mosquitto")
	}
	m := testenv.StartMosquitto(t, testenv.WithConfigLines("max_queued_messages 0"))
	c, err := BinsCity(cityFile(t), 4, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cnt, err := StartCounter(ctx, CounterConfig{Broker: m.URL(), ClientID: "loadgen-test-counter", Topic: "city/bins/+/telemetry", QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer cnt.Close()
	sub := subscribe(t, m.URL(), c.Inventory)
	s, err := Run(ctx, Config{Broker: m.URL(), Conns: 8, Burst: 10}, NewCitySource(c))
	if err != nil {
		t.Fatal(err)
	}
	if s.Acked != 10 {
		t.Fatalf("summary %+v", s)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := cnt.Wait(wctx, 10); err != nil {
		t.Fatal(err)
	}
	sub.wait(t, 10)
	sub.mu.Lock()
	defer sub.mu.Unlock()
	// 10 over 4: the first two assets send 3, the others 2; all in the past.
	for i, want := range []int{3, 3, 2, 2} {
		id := c.Bins[i].Asset.ID
		if got := len(sub.ts[id]); got != want {
			t.Errorf("%s: %d messages, want %d", id, got, want)
		}
		for _, x := range sub.ts[id] {
			if x.After(s.FirstPublish) {
				t.Errorf("%s: ts %v after the first publish %v", id, x, s.FirstPublish)
			}
		}
	}
	if cnt.First().IsZero() || cnt.Last().Before(cnt.First()) {
		t.Errorf("counter times %v %v", cnt.First(), cnt.Last())
	}
}

func TestSteady(t *testing.T) {
	if testing.Short() {
		t.Skip("starts mosquitto")
	}
	m := testenv.StartMosquitto(t, testenv.WithConfigLines("max_queued_messages 0"))
	c, err := BinsCity(cityFile(t), 5, "")
	if err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, m.URL(), c.Inventory)
	// 5 assets × 5 one-minute intervals of simulated time at 300×: 1 s.
	start := time.Now()
	s, err := Run(context.Background(), Config{Broker: m.URL(), Interval: time.Minute, Duration: 5 * time.Minute, Speed: 300}, NewCitySource(c))
	if err != nil {
		t.Fatal(err)
	}
	if s.Acked != 25 || s.Failed != 0 {
		t.Fatalf("summary %+v", s)
	}
	// Paced: the last message is due 4.8 simulated minutes in, 0.96 s of wall time.
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Errorf("steady run took %v, want it paced to about 1 s", el)
	}
	sub.wait(t, 25)
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.errors) > 0 {
		t.Fatal(sub.errors[0])
	}
	for i, b := range c.Bins {
		ts := sub.ts[b.Asset.ID]
		if len(ts) != 5 {
			t.Fatalf("%s: %d messages, want 5", b.Asset.ID, len(ts))
		}
		for k := 1; k < len(ts); k++ {
			if d := ts[k].Sub(ts[k-1]); d != time.Minute {
				t.Errorf("%s: messages %d and %d %v apart, want 1m", b.Asset.ID, k-1, k, d)
			}
		}
		// Asset i reports i/5 of the interval in; the last interval ends at the start.
		first := ts[0]
		if off := ts[len(ts)-1].Add(time.Minute).Sub(first.Add(5 * time.Minute)); off != 0 {
			t.Errorf("%s: span %v", b.Asset.ID, off)
		}
		if !ts[len(ts)-1].Before(start) || start.Sub(ts[0]) > 5*time.Minute+time.Second {
			t.Errorf("asset %d: ts %v..%v outside the 5 minutes before %v", i, ts[0], ts[len(ts)-1], start)
		}
	}
}

func TestPlan(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		assets int
		want   int64
		err    string
	}{
		{"burst", Config{Burst: 1000}, 10, 1000, ""},
		{"steady", Config{Interval: time.Minute, Duration: 10 * time.Minute}, 126000, 1260000, ""},
		{"nothing", Config{}, 10, 0, "want a burst"},
		{"no assets", Config{Burst: 5}, 0, 0, "no assets"},
		{"too old", Config{Interval: time.Minute, Duration: 25 * time.Hour}, 1, 0, "24h"},
		{"sub-ms", Config{Interval: time.Microsecond, Duration: time.Second}, 1, 0, "millisecond"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.Plan(tc.assets)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Plan = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestBurstStep(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {82800, time.Second}, {82801, 999 * time.Millisecond}, {1000000, 82 * time.Millisecond}} {
		if got := burstStep(tc.n); got != tc.want {
			t.Errorf("burstStep(%d) = %v, want %v", tc.n, got, tc.want)
		}
		if got := burstStep(tc.n); time.Duration(tc.n)*got > 23*time.Hour || got < time.Millisecond {
			t.Errorf("burstStep(%d) = %v spans %v", tc.n, got, time.Duration(tc.n)*got)
		}
	}
}

// BenchmarkPayload measures building one message (the publisher's own share
// of the work besides the MQTT client).
func BenchmarkPayload(b *testing.B) {
	c, err := BinsCity(cityFile(b), 1000, "")
	if err != nil {
		b.Fatal(err)
	}
	src := NewCitySource(c)
	buf := make([]byte, 0, 320)
	ts := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		buf = src.Payload(i%1000, ts.Add(time.Duration(i)*time.Second), buf[:0])
	}
}
