package modbuspoll

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/gateway/mqttsub"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testLogger writes the poller's log to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// tcpAsset makes a Modbus TCP asset of a shipped profile.
func tcpAsset(t testing.TB, cat *devices.Catalog, id, model, host string, unit uint8, interval, timeout time.Duration) *devices.Asset {
	t.Helper()
	p := cat.Profile(model)
	if p == nil {
		t.Fatalf("no profile %s", model)
	}
	return &devices.Asset{
		ID: id, Model: model, Kind: p.Kind, Profile: p, Schema: cat.Kinds[p.Kind],
		Modbus: &devices.ModbusAddr{Host: host, Unit: unit, Interval: yamlconf.Duration(interval), Timeout: yamlconf.Duration(timeout)},
	}
}

// running is a poller started in the background.
type running struct {
	p      *Poller
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func startPoller(t testing.TB, cfg Config, assets []*devices.Asset, h Handler) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	p, err := New(cfg, assets, h, reg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{p: p, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

// stop cancels the poller and waits for Run to return.
func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			panic(err)
		}
	case <-time.After(10 * time.Second):
		panic("poller did not stop within 10s")
	}
}

func (r *running) status(id string) DeviceStatus {
	for _, s := range r.p.Status() {
		if s.Asset == id {
			return s
		}
	}
	return DeviceStatus{}
}

func (r *running) requests(t testing.TB, endpoint, result string) float64 {
	return testutil.ToFloat64(r.p.m.requests.WithLabelValues(endpoint, result))
}

func checkReading(t testing.TB, got devices.Reading, p *devices.Profile, want []devices.Value) {
	t.Helper()
	for i := range p.Fields {
		f := &p.Fields[i]
		if v := got.Values[f.Index]; !v.Equal(want[i]) {
			t.Errorf("%s %s = %v, served %v", got.Asset.ID, f.Name, v, want[i])
		}
	}
	if n := got.NumValid(); n != len(p.Fields) {
		t.Errorf("%s: reading has %d valid fields, profile has %d", got.Asset.ID, n, len(p.Fields))
	}
}

// TestPollTCP serves the three shipped Modbus profiles behind one port (units
// 1..3) and a fourth device on a second port, and checks that the readings
// carry exactly what was served, with device time when it is plausible, and
// that every poll issued the planner's number of requests, counted by the
// server.
func TestPollTCP(t *testing.T) {
	cat := builtin(t)
	s1, s2 := newTestServer(t), newTestServer(t)
	now := time.Now().Truncate(time.Second)
	models := map[uint8]string{1: "citylight-slc200", 2: "citylight-ccu300", 3: "gasreg-rtu500"}
	want := map[string][]devices.Value{}
	var assets []*devices.Asset
	for unit := uint8(1); unit <= 3; unit++ {
		p := cat.Profile(models[unit])
		id := "a" + string('0'+rune(unit))
		want[id] = s1.serve(t, unit, p, sampleValues(t, p, int(unit), now.Add(-10*time.Second)))
		assets = append(assets, tcpAsset(t, cat, id, p.Model, s1.addr, unit, 100*time.Millisecond, time.Second))
	}
	// The fourth device's clock is far behind: its readings take the receive time.
	p4 := cat.Profile("citylight-slc200")
	want["b1"] = s2.serve(t, 7, p4, sampleValues(t, p4, 4, time.Unix(1000, 0)))
	assets = append(assets, tcpAsset(t, cat, "b1", p4.Model, s2.addr, 7, 100*time.Millisecond, time.Second))

	c := newCollector()
	r := startPoller(t, Config{}, assets, c)
	waitFor(t, 20*time.Second, "3 readings of every device", func() bool {
		for _, a := range assets {
			if c.count(a.ID) < 3 {
				return false
			}
		}
		return true
	})
	perPoll := map[string]float64{}
	for _, a := range assets {
		perPoll[a.ID] = testutil.ToFloat64(r.p.m.perPoll.WithLabelValues(a.ID))
	}
	r.stop()

	for _, a := range assets {
		got, _ := c.last(a.ID)
		checkReading(t, got, a.Profile, want[a.ID])
		plan := len(Plan(a.Profile, ProfilePlanOptions(a.Profile)))
		st := r.status(a.ID)
		if !st.Up || st.Failures != 0 || st.RequestsPerPoll != plan || st.LastOK.IsZero() {
			t.Errorf("%s status %+v, want up with %d requests per poll", a.ID, st, plan)
		}
		if g := perPoll[a.ID]; int(g) != plan {
			t.Errorf("%s: citygw_modbus_requests_per_poll %v, want %d", a.ID, g, plan)
		}
		srv := s1
		if a.ID == "b1" {
			srv = s2
		}
		// Every poll succeeded (the server never failed), so the server
		// saw exactly plan requests per reading.
		if n, polls := srv.requests(a.Modbus.Unit), c.count(a.ID); n != polls*plan {
			t.Errorf("%s: server saw %d requests for %d polls, want %d per poll", a.ID, n, polls, plan)
		}
	}
	for _, id := range []string{"a1", "a2", "a3"} {
		got, _ := c.last(id)
		if !got.Time.Equal(now.Add(-10*time.Second)) || got.Received.Sub(got.Time) < 9*time.Second {
			t.Errorf("%s: Time %v Received %v, want the device time %v", id, got.Time, got.Received, now.Add(-10*time.Second))
		}
	}
	if got, _ := c.last("b1"); !got.Time.Equal(got.Received) || got.Received.IsZero() {
		t.Errorf("b1: implausible device time: Time %v, want Received %v", got.Time, got.Received)
	}
	if n := testutil.ToFloat64(r.p.m.readings.WithLabelValues("modbus", "streetlight")); int(n) != c.count("a1")+c.count("b1") {
		t.Errorf("citygw_readings_total{kind=streetlight} %v, handler got %d", n, c.count("a1")+c.count("b1"))
	}
	if n := testutil.ToFloat64(r.p.m.polls.WithLabelValues(pollOK)); n < 12 {
		t.Errorf("citygw_modbus_polls_total{result=ok} = %v, want >= 12", n)
	}
	if n := testutil.CollectAndCount(r.p.m.lag); n != 1 {
		t.Errorf("poll lag histogram: %d series", n)
	}
}

// TestDeadUnitBacksOff: unit 2 never replies. It must go offline and back
// off, costing its endpoint at most one timeout per backoff period, while
// unit 1 on the same port keeps being read at its interval.
func TestDeadUnitBacksOff(t *testing.T) {
	cat := builtin(t)
	s := newTestServer(t)
	p := cat.Profile("citylight-slc200")
	now := time.Now()
	want := s.serve(t, 1, p, sampleValues(t, p, 1, now))
	s.serve(t, 2, p, sampleValues(t, p, 2, now))
	s.set(2, func(u *unitState) { u.silent = true })
	assets := []*devices.Asset{
		tcpAsset(t, cat, "alive", p.Model, s.addr, 1, 100*time.Millisecond, 300*time.Millisecond),
		tcpAsset(t, cat, "dead", p.Model, s.addr, 2, 100*time.Millisecond, 300*time.Millisecond),
	}
	c := newCollector()
	cfg := Config{BackoffMin: 500 * time.Millisecond, BackoffMax: time.Second, OfflineAfter: 2}
	r := startPoller(t, cfg, assets, c)
	const run = 4 * time.Second
	time.Sleep(run)
	alive := c.count("alive")
	stAlive, stDead := r.status("alive"), r.status("dead")
	upAlive := testutil.ToFloat64(r.p.m.deviceUp.WithLabelValues("alive"))
	upDead := testutil.ToFloat64(r.p.m.deviceUp.WithLabelValues("dead"))
	devicesUp := testutil.ToFloat64(r.p.m.devicesUp)
	r.stop()
	// After Run returned no request is in flight: the server's count and
	// the poller's agree.
	deadReqs, timeouts := s.requests(2), r.requests(t, "tcp:"+s.addr, resultTimeout)

	// At 100ms the neighbour would be read 40 times; the dead unit's
	// timeouts (one per backoff period: 0.4-0.6s, then 0.8-1.2s, about 4
	// in all) cost it about 12. Accept a third of 40, for loaded machines;
	// without backoff it would get about 10.
	if alive < 14 {
		t.Errorf("the live unit was read %d times in %v at 100ms, want >= 14", alive, run)
	}
	got, _ := c.last("alive")
	checkReading(t, got, p, want)
	if c.count("dead") != 0 {
		t.Errorf("the dead unit produced %d readings", c.count("dead"))
	}
	// Without backoff the dead unit would be asked every 100ms+300ms: 10
	// times in 4s. With backoff: at 0, ~0.5s, ~1.5s, ~2.5s, ~3.5s (+timeouts).
	if deadReqs < 2 || deadReqs > 7 {
		t.Errorf("the dead unit was asked %d times in %v, want 2..7 (backing off)", deadReqs, run)
	}
	if stDead.Up || stDead.Failures < 2 || !strings.Contains(stDead.LastError, "no reply") {
		t.Errorf("dead unit status %+v, want offline after >= 2 failures with a timeout error", stDead)
	}
	if !stAlive.Up || stAlive.Failures != 0 {
		t.Errorf("live unit status %+v, want up", stAlive)
	}
	if upAlive != 1 || upDead != 0 || devicesUp != 1 {
		t.Errorf("device_up alive=%v dead=%v, devices_up=%v; want 1, 0, 1", upAlive, upDead, devicesUp)
	}
	if int(timeouts) != deadReqs {
		t.Errorf("requests_total{result=timeout} = %v, want the dead unit's %d requests", timeouts, deadReqs)
	}
}

// TestExceptionsAndDecodeErrors: a unit that refuses its input registers
// with an exception reply, and serves a NaN power factor and an unknown
// fault code on another, still yields readings with every good field; the
// exceptions and decode errors are counted.
func TestExceptionsAndDecodeErrors(t *testing.T) {
	cat := builtin(t)
	s := newTestServer(t)
	p := cat.Profile("citylight-slc200")
	now := time.Now()
	want1 := s.serve(t, 1, p, sampleValues(t, p, 1, now))
	s.set(1, func(u *unitState) { u.refuse = map[devices.Table]bool{devices.Input: true} })
	want2 := s.serve(t, 2, p, sampleValues(t, p, 2, now))
	pf, fault := p.Field("power_factor"), p.Field("fault")
	s.set(2, func(u *unitState) {
		u.input[pf.Address], u.input[pf.Address+1] = 0x7fc0, 0 // float32 NaN
		u.input[fault.Address] = 99                            // not in the enum
	})
	assets := []*devices.Asset{
		tcpAsset(t, cat, "refusing", p.Model, s.addr, 1, 100*time.Millisecond, time.Second),
		tcpAsset(t, cat, "garbled", p.Model, s.addr, 2, 100*time.Millisecond, time.Second),
	}
	c := newCollector()
	r := startPoller(t, Config{}, assets, c)
	waitFor(t, 20*time.Second, "5 readings of both", func() bool { return c.count("refusing") >= 5 && c.count("garbled") >= 5 })
	r.stop()

	got, _ := c.last("refusing")
	for i := range p.Fields {
		f := &p.Fields[i]
		v := got.Values[f.Index]
		if f.Table == devices.Input {
			if v.Valid() {
				t.Errorf("refused field %s = %v, want no value", f.Name, v)
			}
		} else if !v.Equal(want1[i]) {
			t.Errorf("%s = %v, want %v", f.Name, v, want1[i])
		}
	}
	if !got.Time.Equal(got.Received) {
		t.Errorf("without the device clock (an input register) Time must be Received")
	}
	exc := r.requests(t, "tcp:"+s.addr, resultException)
	if int(exc) != c.count("refusing") {
		t.Errorf("requests_total{result=exception} %v, want one per poll of the refusing unit (%d)", exc, c.count("refusing"))
	}
	if st := r.status("refusing"); !st.Up || !strings.Contains(st.LastError, "illegal data address") {
		t.Errorf("refusing unit status %+v: want up (it answers) with the exception as last error", st)
	}
	if n := testutil.ToFloat64(r.p.m.polls.WithLabelValues(pollPartial)); int(n) != c.count("refusing") {
		t.Errorf("polls_total{result=partial} %v, want %d", n, c.count("refusing"))
	}

	got, _ = c.last("garbled")
	for i := range p.Fields {
		f := &p.Fields[i]
		v := got.Values[f.Index]
		if f == pf || f == fault {
			if v.Valid() {
				t.Errorf("undecodable %s = %v, want no value", f.Name, v)
			}
		} else if !v.Equal(want2[i]) {
			t.Errorf("%s = %v, want %v", f.Name, v, want2[i])
		}
	}
	if n := testutil.ToFloat64(r.p.m.decodeErrors.WithLabelValues("modbus", "streetlight")); int(n) != 2*c.count("garbled") {
		t.Errorf("decode_errors_total %v, want 2 per poll of the garbled unit (%d polls)", n, c.count("garbled"))
	}
}

// TestSlowReplies: replies later than the timeout are timeouts; when the
// device is fast again it comes back.
func TestSlowReplies(t *testing.T) {
	cat := builtin(t)
	s := newTestServer(t)
	p := cat.Profile("gasreg-rtu500")
	s.serve(t, 1, p, sampleValues(t, p, 1, time.Now()))
	s.set(1, func(u *unitState) { u.delay = 400 * time.Millisecond })
	c := newCollector()
	cfg := Config{BackoffMin: 200 * time.Millisecond, BackoffMax: 400 * time.Millisecond}
	r := startPoller(t, cfg, []*devices.Asset{tcpAsset(t, cat, "slow", p.Model, s.addr, 1, 100*time.Millisecond, 150*time.Millisecond)}, c)
	ep := "tcp:" + s.addr
	waitFor(t, 10*time.Second, "the slow device offline", func() bool {
		return !r.status("slow").Up && r.status("slow").Failures >= 2 && r.requests(t, ep, resultTimeout) >= 2
	})
	if c.count("slow") != 0 {
		t.Errorf("%d readings from replies past the timeout", c.count("slow"))
	}
	s.set(1, func(u *unitState) { u.delay = 0 })
	waitFor(t, 10*time.Second, "the device back up", func() bool { return c.count("slow") >= 3 && r.status("slow").Up })
	if ok := r.requests(t, ep, resultOK); ok < 6 {
		t.Errorf("requests_total{result=ok} = %v after recovery, want >= 6", ok)
	}
}

// TestReconnect: nothing listens at first (connection refused), the server
// comes, goes and comes back; the poller reconnects with backoff each time.
func TestReconnect(t *testing.T) {
	cat := builtin(t)
	s := newTestServer(t)
	s.stop()
	p := cat.Profile("citylight-ccu300")
	want := s.serve(t, 3, p, sampleValues(t, p, 3, time.Now()))
	c := newCollector()
	cfg := Config{ReconnectMin: 100 * time.Millisecond, ReconnectMax: 400 * time.Millisecond}
	r := startPoller(t, cfg, []*devices.Asset{tcpAsset(t, cat, "cab", p.Model, s.addr, 3, 100*time.Millisecond, 500*time.Millisecond)}, c)
	waitFor(t, 10*time.Second, "connection failures", func() bool {
		st := r.status("cab")
		return st.Failures >= 3 && !st.Up && strings.Contains(st.LastError, "connect")
	})
	// Backoff: 3 failures take at least 0.08+0.16+0.32 s; without backoff
	// a refused connection would be retried thousands of times a second.
	if f := r.status("cab").Failures; f > 20 {
		t.Errorf("%d connection attempts: no backoff", f)
	}
	s.start()
	waitFor(t, 10*time.Second, "readings after the server came up", func() bool { return c.count("cab") >= 3 })
	got, _ := c.last("cab")
	checkReading(t, got, p, want)

	s.stop()
	n := c.count("cab")
	waitFor(t, 10*time.Second, "the device offline with the server gone", func() bool { return !r.status("cab").Up })
	s.start()
	waitFor(t, 10*time.Second, "readings after the server came back", func() bool { return c.count("cab") >= n+3 && r.status("cab").Up })
}

// TestNewRejects checks configuration errors New reports.
func TestNewRejects(t *testing.T) {
	cat := builtin(t)
	one := 1
	a := func() *devices.Asset {
		return tcpAsset(t, cat, "x", "gasreg-rtu500", "127.0.0.1:1", 1, 0, 0)
	}
	serial := func(id string, unit uint8, baud int) *devices.Asset {
		a := tcpAsset(t, cat, id, "gasreg-rtu500", "", unit, 0, 0)
		a.Modbus.Serial, a.Modbus.Baud = "/dev/ttyX", baud
		return a
	}
	mqtt := &devices.Asset{ID: "bin", Model: "binsense-ws3", Profile: cat.Profile("binsense-ws3"), Schema: cat.Kinds["waste_bin"], Modbus: &devices.ModbusAddr{Host: "127.0.0.1:1", Unit: 1}}
	tests := []struct {
		name   string
		cfg    Config
		assets []*devices.Asset
		want   string
	}{
		{"field longer than the cap", Config{Plans: map[string]PlanOverride{"gasreg-rtu500": {MaxRegisters: &one}}}, []*devices.Asset{a()}, "spans 2 registers"},
		{"backoff inverted", Config{BackoffMin: time.Minute, BackoffMax: time.Second}, []*devices.Asset{a()}, "backoff max"},
		{"bad parity", Config{RTU: SerialDefaults{Parity: "X"}}, []*devices.Asset{a()}, "parity"},
		{"MQTT profile with a Modbus address", Config{}, []*devices.Asset{mqtt}, "not a Modbus profile"},
		{"two baud rates on one serial line", Config{}, []*devices.Asset{serial("s1", 1, 9600), serial("s2", 2, 19200)}, "serial line /dev/ttyX is 9600 baud 8N1 for asset s1, this asset asks for 19200 baud 8N1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, tc.assets, newCollector(), prometheus.NewRegistry(), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestSharedMetrics: the MQTT subscriber's shared vectors registered first
// are taken over (same help and labels), and a second poller on the same
// registry (a reload) takes over the first one's collectors.
func TestSharedMetrics(t *testing.T) {
	cat := builtin(t)
	reg := prometheus.NewRegistry()
	readings, decodeErrs := mqttsub.NewReadingsTotal(), mqttsub.NewDecodeErrorsTotal()
	reg.MustRegister(readings, decodeErrs)
	assets := []*devices.Asset{tcpAsset(t, cat, "x", "gasreg-rtu500", "127.0.0.1:1", 1, 0, 0)}
	var pollers []*Poller
	for i := 0; i < 2; i++ {
		p, err := New(Config{}, assets, newCollector(), reg, nil)
		if err != nil {
			t.Fatalf("poller %d: %v", i, err)
		}
		pollers = append(pollers, p)
	}
	for _, p := range pollers {
		if p.m.readings != readings || p.m.decodeErrors != decodeErrs {
			t.Error("the poller did not take over the shared vectors")
		}
	}
	if pollers[0].m.requests != pollers[1].m.requests {
		t.Error("the second poller registered its own requests vector")
	}
}

// TestEndpointsIndependent: a device that answers slowly (each poll takes
// 0.5s of its endpoint's time) does not slow a device on another endpoint.
func TestEndpointsIndependent(t *testing.T) {
	cat := builtin(t)
	slow, fast := newTestServer(t), newTestServer(t)
	p := cat.Profile("gasreg-rtu500")
	slow.serve(t, 1, p, sampleValues(t, p, 1, time.Now()))
	slow.set(1, func(u *unitState) { u.delay = 250 * time.Millisecond })
	fast.serve(t, 1, p, sampleValues(t, p, 2, time.Now()))
	c := newCollector()
	r := startPoller(t, Config{}, []*devices.Asset{
		tcpAsset(t, cat, "slow", p.Model, slow.addr, 1, 100*time.Millisecond, 2*time.Second),
		tcpAsset(t, cat, "fast", p.Model, fast.addr, 1, 100*time.Millisecond, 2*time.Second),
	}, c)
	time.Sleep(3 * time.Second)
	nSlow, nFast := c.count("slow"), c.count("fast")
	r.stop()
	// The slow device manages at most 3s/0.5s = 6 polls; the fast one
	// would manage 30 at its interval, and 6 if it waited for the slow one:
	// accept a third of 30.
	if nSlow > 7 || nFast < 10 {
		t.Errorf("in 3s: slow device %d readings (want <= 7), fast device %d (want >= 10)", nSlow, nFast)
	}
}

// TestQuirks: close_after_poll opens a connection per poll; the pauses are
// taken and the readings are still right.
func TestQuirks(t *testing.T) {
	cat := builtin(t)
	p := cat.Profile("citylight-slc200")
	for _, closeAfter := range []bool{false, true} {
		s := newTestServer(t)
		want := s.serve(t, 1, p, sampleValues(t, p, 1, time.Now()))
		c := newCollector()
		cfg := Config{CloseAfterPoll: closeAfter, PauseAfterConnect: 10 * time.Millisecond, PauseBetweenRequests: 5 * time.Millisecond}
		r := startPoller(t, cfg, []*devices.Asset{tcpAsset(t, cat, "q", p.Model, s.addr, 1, 50*time.Millisecond, time.Second)}, c)
		waitFor(t, 10*time.Second, "5 readings", func() bool { return c.count("q") >= 5 })
		r.stop()
		got, _ := c.last("q")
		checkReading(t, got, p, want)
		polls, conns := c.count("q"), s.connections(1)
		if closeAfter && conns != polls {
			t.Errorf("close_after_poll: %d connections for %d polls, want one each", conns, polls)
		}
		if !closeAfter && conns != 1 {
			t.Errorf("%d connections for %d polls, want 1", conns, polls)
		}
	}
}
