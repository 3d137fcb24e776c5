package mqttsub

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/testenv"
)

func baseConfig(m *testenv.Mosquitto, id string) Config {
	return Config{
		Broker:         m.URL(),
		ClientID:       id,
		Subscriptions:  []Subscription{{Topic: "city/bins/{asset}/telemetry"}, {Topic: "legacy/bin9/data"}},
		ConnectTimeout: yamlDur(5 * time.Second),
		Workers:        3,
		// The tests publish bursts far faster than a sensor would; the rate
		// cap has its own test.
		MaxMessagesPerAsset: -1,
	}
}

// TestFloodFromOneAssetIsCapped: one sensor flooding is cut to its rate cap
// (bursts of two seconds' worth), counted and dropped; a neighbour's
// messages all pass.
func TestFloodFromOneAssetIsCapped(t *testing.T) {
	m := testenv.StartMosquitto(t)
	inv := testInventory(t, 2)
	h := &recorder{}
	cfg := baseConfig(m, "gw-flood")
	cfg.MaxMessagesPerAsset = 5
	s := startSub(t, cfg, inv, h)
	waitFor(t, 10*time.Second, "subscribed", s.Connected)
	pub := publisher(t, m, "pub-flood")
	now := time.Now()
	for i := 0; i < 100; i++ {
		publish(t, pub, "city/bins/bin-0000/telemetry", binPayload(now.Add(time.Duration(i)*time.Millisecond), float64(i%100), i))
	}
	elapsed := time.Since(now).Seconds()
	for i := 0; i < 5; i++ {
		publish(t, pub, "city/bins/bin-0001/telemetry", binPayload(now.Add(time.Duration(i)*time.Millisecond), 1, i))
	}
	waitFor(t, 10*time.Second, "all 105 messages settled", func() bool {
		st := s.Status()
		return st.OK+st.RateLimited == 105
	})
	limited := metric(t, s.reg, "citygw_mqtt_messages_total", "result", "rate_limited")
	// At most the burst (10) plus 5 a second while publishing pass.
	if passed := 100 - limited; passed < 10 || passed > 10+5*elapsed+2 {
		t.Errorf("%v of bin-0000's 100 messages passed in %.1fs, want 10 + 5/s", passed, elapsed)
	}
	if ok := metric(t, s.reg, "citygw_mqtt_messages_total", "result", "ok"); ok != 105-limited {
		t.Errorf("ok = %v, want %v (bin-0001's 5 all pass)", ok, 105-limited)
	}
}

func TestReadingsDecodedAndHandedOver(t *testing.T) {
	m := testenv.StartMosquitto(t)
	inv := testInventory(t, 3)
	h := &recorder{}
	s := startSub(t, baseConfig(m, "gw-decode"), inv, h)
	waitFor(t, 10*time.Second, "subscribed", s.Connected)

	pub := publisher(t, m, "pub-decode")
	devTime := time.Now().Add(-3 * time.Second).Truncate(time.Millisecond).UTC()
	publish(t, pub, "city/bins/bin-0001/telemetry", binPayload(devTime, 73.5, 31))
	// No timestamp: the receive time is used.
	publish(t, pub, "city/bins/bin-0002/telemetry", `{"fill":{"pct":10},"lid_open":true}`)
	// Implausible device clock (2001): the receive time is used.
	publish(t, pub, "city/bins/bin-0000/telemetry", binPayload(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), 50, 60))
	// An exact-topic subscription resolves the asset through the inventory.
	before := time.Now()
	m.Pub("legacy/bin9/data", `{"ts":"`+devTime.Format(time.RFC3339Nano)+`","fill":{"pct":99.5}}`, 1) // mosquitto_pub: a third-party publisher
	waitFor(t, 10*time.Second, "4 readings", func() bool { return h.count() == 4 })

	byAsset := map[string]got{}
	for _, g := range h.snapshot() {
		byAsset[g.asset] = g
	}
	g1 := byAsset["bin-0001"]
	want := map[string]devices.Value{
		"fill_pct": devices.FloatValue(73.5), "distance_cm": devices.IntValue(31), "temperature_c": devices.FloatValue(21.5),
		"tilt_deg": devices.FloatValue(2), "lid_open": devices.BoolValue(false), "battery_pct": devices.IntValue(88),
		"battery_v": devices.FloatValue(3.61), "rssi_dbm": devices.IntValue(-87), "snr_db": devices.FloatValue(7.5),
		"firmware": devices.StringValue("3.1.4"),
	}
	if len(g1.values) != len(want) {
		t.Errorf("bin-0001: got fields %v, want %v", g1.values, want)
	}
	for k, v := range want {
		if !g1.values[k].Equal(v) {
			t.Errorf("bin-0001 %s = %v, want %v", k, g1.values[k], v)
		}
	}
	if !g1.time.Equal(devTime) {
		t.Errorf("bin-0001 time = %v, want the device time %v", g1.time, devTime)
	}
	if g1.received.Before(devTime) || time.Since(g1.received) > time.Minute {
		t.Errorf("bin-0001 received = %v, want the receive time", g1.received)
	}
	g2 := byAsset["bin-0002"]
	if !g2.time.Equal(g2.received) || g2.time.IsZero() {
		t.Errorf("bin-0002 without timestamp: time %v, received %v; want equal", g2.time, g2.received)
	}
	if len(g2.values) != 2 || !g2.values["lid_open"].Equal(devices.BoolValue(true)) || !g2.values["fill_pct"].Equal(devices.FloatValue(10)) {
		t.Errorf("bin-0002 values = %v", g2.values)
	}
	g0 := byAsset["bin-0000"]
	if !g0.time.Equal(g0.received) || g0.time.Year() == 2001 {
		t.Errorf("bin-0000 implausible device time: time %v, received %v; want the receive time", g0.time, g0.received)
	}
	gl := byAsset["legacy-bin"]
	if !gl.time.Equal(devTime) || !gl.values["fill_pct"].Equal(devices.FloatValue(99.5)) || gl.received.Before(before) {
		t.Errorf("legacy-bin = %+v", gl)
	}

	if n := metric(t, s.reg, "citygw_mqtt_messages_total", "result", "ok"); n != 4 {
		t.Errorf("messages ok = %v, want 4", n)
	}
	if n := metric(t, s.reg, "citygw_readings_total", "source", "mqtt", "kind", "waste_bin"); n != 4 {
		t.Errorf("readings_total = %v, want 4", n)
	}
	if n := metric(t, s.reg, "citygw_mqtt_handle_duration_seconds"); n != 4 {
		t.Errorf("handle duration samples = %v, want 4", n)
	}
	if n := metric(t, s.reg, "citygw_mqtt_connected"); n != 1 {
		t.Errorf("connected = %v, want 1", n)
	}
	waitFor(t, 5*time.Second, "inflight back to 0", func() bool { return metric(t, s.reg, "citygw_mqtt_inflight") == 0 })
	st := s.Status()
	if !st.Connected || st.Received != 4 || st.OK != 4 || st.LastMessage.Before(before) {
		t.Errorf("Status = %+v", st)
	}
}

func TestBadInputIsCountedNotFatal(t *testing.T) {
	m := testenv.StartMosquitto(t)
	inv := testInventory(t, 2)
	h := &recorder{}
	cfg := baseConfig(m, "gw-bad")
	cfg.Subscriptions = append(cfg.Subscriptions, Subscription{Topic: "city/lamps/{asset}/telemetry"})
	cfg.MaxPayloadBytes = 1024
	s := startSub(t, cfg, inv, h)
	waitFor(t, 10*time.Second, "subscribed", s.Connected)
	pub := publisher(t, m, "pub-bad")
	now := time.Now()

	publish(t, pub, "city/bins/no-such-bin/telemetry", binPayload(now, 1, 1))                                   // unknown asset
	publish(t, pub, "city/lamps/lamp-1/telemetry", `{"fill":{"pct":1}}`)                                        // asset read over Modbus
	publish(t, pub, "city/bins/bin-0000/telemetry", `{"fill":{"pct":1},"pad":"`+strings.Repeat("x", 2000)+`"}`) // oversize
	publish(t, pub, "city/bins/bin-0000/telemetry", `{"fill":{"pct":`)                                          // truncated JSON
	publish(t, pub, "city/bins/bin-0000/telemetry", `[1,2,3]`)                                                  // not an object
	publish(t, pub, "city/bins/bin-0000/telemetry", `{"fill":{"pct":"full"},"temp_c":"hot"}`)                   // only wrong types
	publish(t, pub, "city/bins/bin-0001/telemetry", `{"fill":{"pct":"full"},"temp_c":30.5,"lid_open":1}`)       // partly good
	publish(t, pub, "city/bins/bin-0000/telemetry", binPayload(now, 42, 7))                                     // good again
	waitFor(t, 10*time.Second, "all 8 messages settled", func() bool {
		st := s.Status()
		return st.OK+st.DecodeErrors+st.UnknownAsset+st.Oversize == 8
	})

	for _, c := range []struct {
		result string
		want   float64
	}{{"ok", 1}, {"unknown_asset", 2}, {"oversize", 1}, {"decode_error", 4}, {"rejected", 0}} {
		if n := metric(t, s.reg, "citygw_mqtt_messages_total", "result", c.result); n != c.want {
			t.Errorf("messages_total{result=%q} = %v, want %v", c.result, n, c.want)
		}
	}
	// decode errors count fields: 1 + 1 + 2 + 1
	if n := metric(t, s.reg, "citygw_decode_errors_total", "source", "mqtt", "kind", "waste_bin"); n != 5 {
		t.Errorf("decode_errors_total = %v, want 5", n)
	}
	gots := h.snapshot()
	if len(gots) != 2 {
		t.Fatalf("handler got %d readings, want the partly good one and the good one: %+v", len(gots), gots)
	}
	// Different assets may be handed on in either order (different workers).
	if gots[0].asset != "bin-0001" {
		gots[0], gots[1] = gots[1], gots[0]
	}
	partial := gots[0]
	if partial.asset != "bin-0001" || len(partial.values) != 2 ||
		!partial.values["temperature_c"].Equal(devices.FloatValue(30.5)) || !partial.values["lid_open"].Equal(devices.BoolValue(true)) {
		t.Errorf("partly good reading = %+v, want temperature_c and lid_open", partial)
	}
	if gots[1].asset != "bin-0000" || !gots[1].values["fill_pct"].Equal(devices.FloatValue(42)) {
		t.Errorf("good reading after bad ones = %+v", gots[1])
	}
	if !s.Connected() {
		t.Error("subscriber disconnected by bad input")
	}
	// Problems are logged, and a second problem of the same asset within the
	// interval is suppressed: bin-0000 had four, at most one decode line.
	logs := s.log.String()
	for _, want := range []string{"unknown asset", "not read over MQTT", "over the size limit", "not decodable", "partly decodable"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if n := strings.Count(logs, "not decodable"); n != 1 {
		t.Errorf("%d 'not decodable' lines for one asset within a minute, want 1 (rate limit)", n)
	}
}

// Messages the handler refused are not acknowledged: a new connection of the
// same persistent session gets them again.
func TestRefusedMessagesAreRedelivered(t *testing.T) {
	m := testenv.StartMosquitto(t)
	inv := testInventory(t, 3)
	pub := publisher(t, m, "pub-ack")
	cfg := baseConfig(m, "gw-ack")
	cfg.RedeliverAfter = yamlDur(time.Hour) // only a reconnect brings them back
	refuser := &recorder{refuse: func(*devices.Reading) error { return errors.New("wal full") }}
	s1 := startSub(t, cfg, inv, refuser)
	waitFor(t, 10*time.Second, "subscribed", s1.Connected)
	for i := range 5 {
		publish(t, pub, fmt.Sprintf("city/bins/bin-%04d/telemetry", i%3), binPayload(time.Now(), float64(i), i))
	}
	waitFor(t, 10*time.Second, "5 refusals", func() bool { return s1.Status().Rejected == 5 })
	if n := metric(t, s1.reg, "citygw_mqtt_messages_total", "result", "rejected"); n != 5 {
		t.Errorf("rejected = %v, want 5", n)
	}
	s1.stop(t)

	// Same client id, persistent session: the broker redelivers all five.
	acceptor := &recorder{}
	s2 := startSub(t, cfg, inv, acceptor)
	waitFor(t, 10*time.Second, "5 redelivered readings", func() bool { return acceptor.count() == 5 })
	dists := map[int64]bool{}
	for _, g := range acceptor.snapshot() {
		dists[g.values["distance_cm"].I] = true
	}
	if len(dists) != 5 {
		t.Errorf("redelivered distinct messages %v, want 0..4", dists)
	}
	waitFor(t, 5*time.Second, "acks settled", func() bool { return s2.Status().Inflight == 0 })
	s2.stop(t)

	// Those were acknowledged: a third connection gets nothing old. The
	// marker published after it subscribed must be the first thing it sees.
	third := &recorder{}
	s3 := startSub(t, cfg, inv, third)
	waitFor(t, 10*time.Second, "subscribed", s3.Connected)
	publish(t, pub, "city/bins/bin-0002/telemetry", binPayload(time.Now(), 0, 999))
	waitFor(t, 10*time.Second, "marker", func() bool { return third.count() >= 1 })
	if gots := third.snapshot(); len(gots) != 1 || gots[0].values["distance_cm"].I != 999 {
		t.Errorf("after acknowledged redelivery a new connection got %+v, want only the marker", gots)
	}
}

// On stop, messages handled behind one that was not are still acknowledged
// (acks leave in arrival order, and what the stopped workers left queued is
// given up): the next run gets only the unhandled asset's messages again.
func TestStopAcknowledgesWhatWasHandled(t *testing.T) {
	brokerLog := filepath.Join(t.TempDir(), "mosquitto.log") // written line by line, unlike its stderr
	m := testenv.StartMosquitto(t, testenv.WithConfigLines("log_dest file "+brokerLog))
	inv := testInventory(t, 8)
	cfg := baseConfig(m, "gw-stop")
	cfg.Workers = 2
	cfg.RedeliverAfter = yamlDur(time.Hour)
	// x and y on different workers: x's worker is stuck in the handler
	// until the stop, y's handles everything.
	x, y := "bin-0000", ""
	for i := 1; i < 8 && y == ""; i++ {
		if id := fmt.Sprintf("bin-%04d", i); shardOf(id, cfg.Workers) != shardOf(x, cfg.Workers) {
			y = id
		}
	}
	var mu sync.Mutex
	var handled []string
	h := HandlerFunc(func(ctx context.Context, r *devices.Reading) error {
		if r.Asset.ID == x {
			<-ctx.Done() // stuck until the stop; then refused
			return ctx.Err()
		}
		mu.Lock()
		handled = append(handled, r.Asset.ID)
		mu.Unlock()
		return nil
	})
	s1 := startSub(t, cfg, inv, h)
	waitFor(t, 10*time.Second, "subscribed", s1.Connected)
	pub := publisher(t, m, "pub-stop")
	for i := range 4 {
		publish(t, pub, "city/bins/"+x+"/telemetry", binPayload(time.Now(), 1, i))
		publish(t, pub, "city/bins/"+y+"/telemetry", binPayload(time.Now(), 1, i))
	}
	waitFor(t, 10*time.Second, "y's four readings handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 4
	})
	// Every ack waits behind x's first message.
	if n := metric(t, s1.reg, "citygw_mqtt_unacked"); n != 8 {
		t.Errorf("citygw_mqtt_unacked = %v before the stop, want 8", n)
	}
	s1.stop(t)
	select {
	case <-s1.conn.Load().Done():
	default:
		t.Error("Run returned before its connection was closed and its last acks written")
	}
	// Connecting again with the same client id before Mosquitto has read
	// the old connection's last bytes makes it drop them with the old
	// connection (a session takeover); a gateway restarts slower than that.
	waitFor(t, 10*time.Second, "Mosquitto to see the first run's DISCONNECT", func() bool {
		b, _ := os.ReadFile(brokerLog)
		return strings.Contains(string(b), "Client gw-stop disconnected.")
	})

	again := &recorder{}
	s2 := startSub(t, cfg, inv, again)
	waitFor(t, 10*time.Second, "x's four messages redelivered", func() bool { return again.count() >= 4 })
	time.Sleep(200 * time.Millisecond) // anything else the broker had would have come with them
	for _, g := range again.snapshot() {
		if g.asset != x {
			t.Errorf("redelivered %s %d, handled and so acknowledged in the first run", g.asset, g.values["distance_cm"].I)
		}
	}
	s2.stop(t)
}

// A handler that refuses a message once (a transient WAL error) gets it again
// without outside help: the subscriber reconnects after RedeliverAfter.
func TestRefusedMessagesComeBackByThemselves(t *testing.T) {
	m := testenv.StartMosquitto(t)
	inv := testInventory(t, 3)
	pub := publisher(t, m, "pub-retry")
	cfg := baseConfig(m, "gw-retry")
	cfg.RedeliverAfter = yamlDur(300 * time.Millisecond)
	seen := map[int64]int{}
	h := &recorder{refuse: func(r *devices.Reading) error {
		d := r.Get("distance_cm").I
		seen[d]++
		if seen[d] == 1 {
			return errors.New("transient")
		}
		return nil
	}}
	s := startSub(t, cfg, inv, h)
	waitFor(t, 10*time.Second, "subscribed", s.Connected)
	for i := range 6 {
		publish(t, pub, fmt.Sprintf("city/bins/bin-%04d/telemetry", i%3), binPayload(time.Now(), 1, i))
	}
	waitFor(t, 20*time.Second, "all 6 accepted on a later delivery", func() bool { return h.count() == 6 })
	if st := s.Status(); st.Rejected < 6 || st.Reconnects < 1 {
		t.Errorf("status %+v: want ≥6 refusals and a reconnect", st)
	}
	if !strings.Contains(s.log.String(), "redelivers") {
		t.Error("the redelivery reconnect was not logged")
	}
}

// The Telegraf bug: after the broker restarts (without persistence, so it
// forgot every subscription) the subscriber must subscribe again by itself.
func TestResumesAfterBrokerRestart(t *testing.T) {
	m := testenv.StartMosquitto(t)
	inv := testInventory(t, 4)
	h := &recorder{}
	cfg := baseConfig(m, "gw-restart")
	cfg.MaxReconnectInterval = yamlDur(time.Second)
	s := startSub(t, cfg, inv, h)
	waitFor(t, 10*time.Second, "subscribed", s.Connected)

	// A steady stream while the broker goes away and comes back.
	pub := publisher(t, m, "pub-restart")
	var mu sync.Mutex
	sent, failed := 0, 0
	stopPub := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			case <-time.After(5 * time.Millisecond):
			}
			tok := pub.Publish(fmt.Sprintf("city/bins/bin-%04d/telemetry", i%4), 1, false, binPayload(time.Now(), 1, i))
			ok := tok.WaitTimeout(2*time.Second) && tok.Error() == nil
			mu.Lock()
			if ok {
				sent++
			} else {
				failed++
			}
			mu.Unlock()
		}
	}()
	waitFor(t, 10*time.Second, "flow before the restart", func() bool { return h.count() >= 20 })
	m.Stop()
	waitFor(t, 10*time.Second, "the loss noticed", func() bool { return !s.Connected() })
	atStop := h.count()
	time.Sleep(time.Second)
	m.Start()
	waitFor(t, 20*time.Second, "subscribed again", s.Connected)
	waitFor(t, 20*time.Second, "flow after the restart", func() bool { return h.count() >= atStop+50 })
	close(stopPub)
	<-pubDone

	// Everything published once the subscription was back arrives.
	fresh := publisher(t, m, "pub-after")
	base := h.count()
	for i := range 20 {
		publish(t, fresh, fmt.Sprintf("city/bins/bin-%04d/telemetry", i%4), binPayload(time.Now(), 2, 100000+i))
	}
	waitFor(t, 10*time.Second, "20 messages after the restart", func() bool {
		n := 0
		for _, g := range h.snapshot()[base:] {
			if g.values["distance_cm"].I >= 100000 {
				n++
			}
		}
		return n == 20
	})
	mu.Lock()
	t.Logf("stream: %d published and acknowledged by the broker, %d failed while it was down; %d readings arrived (%d before the stop)",
		sent, failed, h.count()-20, atStop)
	mu.Unlock()
	if st := s.Status(); st.Reconnects < 1 {
		t.Errorf("reconnects = %d, want ≥1", st.Reconnects)
	}
	if n := metric(t, s.reg, "citygw_mqtt_reconnects_total"); n < 1 {
		t.Errorf("citygw_mqtt_reconnects_total = %v", n)
	}
	logs := s.log.String()
	if !strings.Contains(logs, "connection lost") || !strings.Contains(logs, "connection restored") {
		t.Errorf("loss and restoration not logged:\n%s", logs)
	}
}

func TestTLSWithPassword(t *testing.T) {
	const secret = "s3cret-Pa55"
	m := testenv.StartMosquitto(t, testenv.WithTLS(false), testenv.WithPassword("gateway", secret))
	inv := testInventory(t, 1)
	tlsCfg := func(id string) Config {
		c := baseConfig(m, id)
		c.Broker = m.TLSURL()
		c.Username, c.Password = "gateway", secret
		c.TLS = TLSConfig{CAFile: m.Certs().CAFile}
		return c
	}

	t.Run("ok", func(t *testing.T) {
		h := &recorder{}
		s := startSub(t, tlsCfg("gw-tls"), inv, h)
		waitFor(t, 10*time.Second, "subscribed over TLS", s.Connected)
		pub := publisher(t, m, "pub-tls")
		publish(t, pub, "city/bins/bin-0000/telemetry", binPayload(time.Now(), 12.5, 3))
		waitFor(t, 10*time.Second, "a reading over TLS", func() bool { return h.count() == 1 })
		if g := h.snapshot()[0]; !g.values["fill_pct"].Equal(devices.FloatValue(12.5)) {
			t.Errorf("reading over TLS = %+v", g)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		c := tlsCfg("gw-tls-bad")
		c.Password = "not-" + secret
		s := startSub(t, c, inv, &recorder{})
		waitFor(t, 10*time.Second, "a failed attempt logged", func() bool { return strings.Contains(s.log.String(), "connect failed") })
		if s.Connected() {
			t.Error("connected with a wrong password")
		}
		s.stop(t)
		if logs := s.log.String(); strings.Contains(logs, secret) {
			t.Errorf("the password appears in the log:\n%s", logs)
		}
	})
	t.Run("unknown CA", func(t *testing.T) {
		c := tlsCfg("gw-tls-noca")
		c.TLS = TLSConfig{} // system roots do not know the test CA
		s := startSub(t, c, inv, &recorder{})
		waitFor(t, 10*time.Second, "a failed attempt logged", func() bool { return strings.Contains(s.log.String(), "certificate") })
		if s.Connected() {
			t.Error("connected to a server whose certificate is not trusted")
		}
	})
}

func TestTLSClientCertificate(t *testing.T) {
	m := testenv.StartMosquitto(t, testenv.WithTLS(true))
	inv := testInventory(t, 1)
	c := baseConfig(m, "gw-mtls")
	c.Broker = m.TLSURL()
	c.TLS = TLSConfig{CAFile: m.Certs().CAFile, CertFile: m.Certs().ClientCertFile, KeyFile: m.Certs().ClientKeyFile, ServerName: "localhost"}
	h := &recorder{}
	s := startSub(t, c, inv, h)
	waitFor(t, 10*time.Second, "subscribed with a client certificate", s.Connected)
	publish(t, publisher(t, m, "pub-mtls"), "city/bins/bin-0000/telemetry", binPayload(time.Now(), 1, 1))
	waitFor(t, 10*time.Second, "a reading", func() bool { return h.count() == 1 })
}

// With several workers, each asset's readings still reach the handler in
// the order they were published.
func TestPerAssetOrderWithWorkers(t *testing.T) {
	m := testenv.StartMosquitto(t, testenv.WithConfigLines("max_queued_messages 0"))
	const assets, perAsset = 16, 100
	inv := testInventory(t, assets)
	var mu sync.Mutex
	last := map[string]int64{}
	var disorder []string
	h := &recorder{refuse: func(r *devices.Reading) error {
		// Jitter so that workers interleave differently every run.
		if rand.IntN(20) == 0 {
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
		}
		mu.Lock()
		defer mu.Unlock()
		d := r.Get("distance_cm").I
		if prev, ok := last[r.Asset.ID]; ok && d <= prev {
			disorder = append(disorder, fmt.Sprintf("%s: %d after %d", r.Asset.ID, d, prev))
		}
		last[r.Asset.ID] = d
		return nil
	}}
	cfg := baseConfig(m, "gw-order")
	cfg.Workers = 4
	cfg.QueueSize = 8 // small queues: the router blocks and backpressure is exercised too
	s := startSub(t, cfg, inv, h)
	waitFor(t, 10*time.Second, "subscribed", s.Connected)
	pub := publisher(t, m, "pub-order")
	var toks []interface{ Wait() bool }
	for seq := range perAsset {
		for a := range assets {
			toks = append(toks, pub.Publish(fmt.Sprintf("city/bins/bin-%04d/telemetry", a), 1, false, binPayload(time.Now(), 1, seq)))
		}
	}
	for _, tok := range toks {
		tok.Wait()
	}
	waitFor(t, 30*time.Second, "all readings", func() bool { return h.count() == assets*perAsset })
	mu.Lock()
	defer mu.Unlock()
	if len(disorder) > 0 {
		t.Fatalf("%d readings out of order, first: %v", len(disorder), disorder[:min(5, len(disorder))])
	}
	for a := range assets {
		if id := fmt.Sprintf("bin-%04d", a); last[id] != perAsset-1 {
			t.Errorf("%s last reading %d, want %d", id, last[id], perAsset-1)
		}
	}
	// Every acknowledgement has left (none is stuck behind another).
	waitFor(t, 5*time.Second, "citygw_mqtt_unacked back to 0", func() bool { return metric(t, s.reg, "citygw_mqtt_unacked") == 0 })
}

// With a persistent broker and persistent sessions on both sides, a broker
// restart mid-stream loses nothing: every message the publisher sent reaches
// the handler (duplicates are possible and reported).
func TestNoLossAcrossPersistentBrokerRestart(t *testing.T) {
	m := testenv.StartMosquitto(t, testenv.WithPersistence(), testenv.WithConfigLines("max_queued_messages 0"))
	inv := testInventory(t, 4)
	var mu sync.Mutex
	seen := map[int64]int{}
	h := &recorder{refuse: func(r *devices.Reading) error {
		mu.Lock()
		seen[r.Get("distance_cm").I]++
		mu.Unlock()
		return nil
	}}
	cfg := baseConfig(m, "gw-lossless")
	cfg.MaxReconnectInterval = yamlDur(time.Second)
	s := startSub(t, cfg, inv, h)
	waitFor(t, 10*time.Second, "subscribed", s.Connected)

	o := mqtt.NewClientOptions().AddBroker(m.URL()).SetClientID("pub-lossless").SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(time.Second)
	pub := mqtt.NewClient(o)
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { pub.Disconnect(100) })

	const total = 300
	var toks []mqtt.Token
	for i := range total {
		if i == 100 {
			m.Stop()
			go func() { time.Sleep(time.Second); m.Start() }()
		}
		toks = append(toks, pub.Publish(fmt.Sprintf("city/bins/bin-%04d/telemetry", i%4), 1, false, binPayload(time.Now(), 1, i)))
		time.Sleep(5 * time.Millisecond)
	}
	// A publish caught by the stop fails on the publisher's side; like any
	// at-least-once publisher, send it again until the broker takes it.
	retried := 0
	for i, tok := range toks {
		deadline := time.Now().Add(30 * time.Second)
		for !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			if time.Now().After(deadline) {
				t.Fatalf("publish %d not acknowledged by the broker: %v", i, tok.Error())
			}
			retried++
			time.Sleep(100 * time.Millisecond)
			tok = pub.Publish(fmt.Sprintf("city/bins/bin-%04d/telemetry", i%4), 1, false, binPayload(time.Now(), 1, i))
		}
	}
	waitFor(t, 30*time.Second, "every published message", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == total
	})
	mu.Lock()
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	mu.Unlock()
	t.Logf("%d messages published across the restart (%d publishes retried by the publisher), all %d arrived, %d duplicates, %d reconnects",
		total, retried, total, dups, s.Status().Reconnects)
}

// ws:// goes through the subscriber's own dialer too.
func TestWebsockets(t *testing.T) {
	m := testenv.StartMosquitto(t, testenv.WithWebsockets())
	inv := testInventory(t, 1)
	c := baseConfig(m, "gw-ws")
	c.Broker = m.WSURL()
	h := &recorder{}
	s := startSub(t, c, inv, h)
	waitFor(t, 10*time.Second, "subscribed over websockets", s.Connected)
	publish(t, publisher(t, m, "pub-ws"), "city/bins/bin-0000/telemetry", binPayload(time.Now(), 33, 1))
	waitFor(t, 10*time.Second, "a reading over websockets", func() bool { return h.count() == 1 })
}

// Two gateway replicas in one $share group split the messages between them;
// the prefix is stripped for matching, so both resolve the assets.
func TestSharedSubscription(t *testing.T) {
	m := testenv.StartMosquitto(t)
	inv := testInventory(t, 4)
	var subs []*running
	var hs []*recorder
	for i := range 2 {
		c := baseConfig(m, fmt.Sprintf("gw-share-%d", i))
		c.Subscriptions = []Subscription{{Topic: "$share/citygw/city/bins/{asset}/telemetry"}}
		h := &recorder{}
		s := startSub(t, c, inv, h)
		waitFor(t, 10*time.Second, "subscribed", s.Connected)
		subs, hs = append(subs, s), append(hs, h)
	}
	pub := publisher(t, m, "pub-share")
	const n = 40
	for i := range n {
		publish(t, pub, fmt.Sprintf("city/bins/bin-%04d/telemetry", i%4), binPayload(time.Now(), 1, i))
	}
	waitFor(t, 10*time.Second, "every message once across the group", func() bool { return hs[0].count()+hs[1].count() == n })
	if hs[0].count() == 0 || hs[1].count() == 0 {
		t.Errorf("one replica got everything: %d / %d", hs[0].count(), hs[1].count())
	}
	for _, s := range subs {
		if st := s.Status(); st.UnknownAsset != 0 {
			t.Errorf("unknown assets with a $share template: %+v", st)
		}
	}
}

// A refused message comes back in its place: the asset's later messages are
// held back until the redelivery, so the handler sees the asset's readings
// in publish order even across a refusal.
func TestRefusalKeepsPerAssetOrder(t *testing.T) {
	m := testenv.StartMosquitto(t)
	inv := testInventory(t, 2)
	pub := publisher(t, m, "pub-refuse-order")
	cfg := baseConfig(m, "gw-refuse-order")
	cfg.RedeliverAfter = yamlDur(300 * time.Millisecond)
	refusedOnce := false
	var order []int64
	h := &recorder{refuse: func(r *devices.Reading) error {
		d := r.Get("distance_cm").I
		if r.Asset.ID == "bin-0000" && d == 2 && !refusedOnce {
			refusedOnce = true
			return errors.New("transient")
		}
		if r.Asset.ID == "bin-0000" {
			order = append(order, d)
		}
		return nil
	}}
	s := startSub(t, cfg, inv, h)
	waitFor(t, 10*time.Second, "subscribed", s.Connected)
	for i := range 8 {
		publish(t, pub, "city/bins/bin-0000/telemetry", binPayload(time.Now(), 1, i))
		publish(t, pub, "city/bins/bin-0001/telemetry", binPayload(time.Now(), 1, 100+i))
	}
	waitFor(t, 20*time.Second, "all 16 accepted", func() bool { return h.count() == 16 })
	h.mu.Lock()
	defer h.mu.Unlock()
	want := []int64{0, 1, 2, 3, 4, 5, 6, 7}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("bin-0000 readings in order %v, want %v", order, want)
	}
	if !refusedOnce {
		t.Error("the refusal never happened")
	}
}

// A gateway may start before its broker: Run keeps trying and connects when
// the broker appears.
func TestBrokerStartsLater(t *testing.T) {
	m := testenv.StartMosquitto(t)
	m.Stop()
	inv := testInventory(t, 1)
	cfg := baseConfig(m, "gw-early")
	cfg.MaxReconnectInterval = yamlDur(time.Second)
	h := &recorder{}
	s := startSub(t, cfg, inv, h)
	waitFor(t, 10*time.Second, "a failed attempt logged", func() bool { return strings.Contains(s.log.String(), "connect failed") })
	if s.Connected() {
		t.Fatal("connected without a broker")
	}
	m.Start()
	waitFor(t, 20*time.Second, "connected once the broker is up", s.Connected)
	publish(t, publisher(t, m, "pub-early"), "city/bins/bin-0000/telemetry", binPayload(time.Now(), 5, 5))
	waitFor(t, 10*time.Second, "a reading", func() bool { return h.count() == 1 })
}
