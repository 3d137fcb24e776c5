package modbuspoll

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/gateway/testenv"
	"github.com/goburrow/modbus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// requestErrors returns citygw_modbus_request_errors_total of endpoint by
// reason.
func requestErrors(t testing.TB, reg prometheus.Gatherer, endpoint string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "citygw_modbus_request_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ep, reason string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "endpoint":
					ep = l.GetValue()
				case "reason":
					reason = l.GetValue()
				}
			}
			if ep == endpoint {
				out[reason] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// TestBadReplies: a unit behind the same port as a healthy one answers its
// holding register read wrongly, one way per case. The wrong reply is
// rejected with an error naming the asset, the unit and the registers,
// counted under its reason; a reply that could leave the connection out of
// step makes the poller reconnect (an exception reply does not); the unit's
// other fields still come through, and both units keep being polled.
func TestBadReplies(t *testing.T) {
	cat := builtin(t)
	p := cat.Profile("citylight-slc200")
	reqs := Plan(p, ProfilePlanOptions(p))
	hi := -1
	for i, r := range reqs {
		if r.Table == devices.Holding {
			hi = i
		}
	}
	if hi < 0 || hi == len(reqs)-1 {
		t.Fatalf("the test needs a holding register read followed by another read; %s plans %v", p.Model, reqs)
	}
	const timeout = 300 * time.Millisecond
	need := 2 * int(reqs[hi].Count)
	noReply := fmt.Sprintf("no reply within %v", timeout)
	cases := []struct {
		name   string
		how    misbehaviour
		code   byte
		reason string
		text   string
	}{
		{"dead", dead, 0, reasonTimeout, noReply},
		{"slow", slow, 0, reasonTimeout, noReply},
		{"illegal data address", exception, 2, "exception_illegal_data_address", "exception '2' (illegal data address)"},
		{"device failure", exception, 4, "exception_device_failure", "exception '4' (server device failure)"},
		{"wrong transaction id", wrongTID, 0, reasonTransactionID, "reply transaction id"},
		{"stale reply first", staleTID, 0, reasonTransactionID, "reply transaction id"},
		{"wrong unit id", wrongUnit, 0, reasonUnitID, "reply unit id 1, request 7"},
		{"wrong protocol id", wrongProtocol, 0, reasonProtocolID, "reply protocol id 1, want 0"},
		{"wrong function code", wrongFunction, 0, reasonFunctionCode, "reply function code 4, request 3"},
		{"truncated", truncated, 0, reasonTimeout, noReply},
		{"truncated and closed", truncatedClose, 0, reasonConnection, "unexpected EOF"},
		{"byte count off", byteCountOff, 0, reasonByteCount, fmt.Sprintf("reply byte count %d, but %d data bytes came", need+1, need)},
		{"one register short", short, 0, reasonLength, fmt.Sprintf("reply carries %d data bytes, the request needs %d", need-2, need)},
		{"one register long", long, 0, reasonLength, fmt.Sprintf("reply carries %d data bytes, the request needs %d", need+2, need)},
		{"MBAP length 0", zeroLength, 0, reasonMalformed, "length in response header '0' must not be zero"},
		{"exception without code", bareException, 0, reasonMalformed, "exception reply carries 0 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			peer := newBadPeer(t)
			now := time.Now()
			wantGood := peer.unit(1, p, sampleValues(t, p, 1, now), peerUnit{})
			wantBad := peer.unit(7, p, sampleValues(t, p, 7, now),
				peerUnit{how: tc.how, only: devices.Holding, code: tc.code, delay: 3 * timeout})
			assets := []*devices.Asset{
				tcpAsset(t, cat, "good", p.Model, peer.addr, 1, 100*time.Millisecond, timeout),
				tcpAsset(t, cat, "bad", p.Model, peer.addr, 7, 100*time.Millisecond, timeout),
			}
			c := newCollector()
			r := startPoller(t, Config{BackoffMin: 200 * time.Millisecond, BackoffMax: 400 * time.Millisecond}, assets, c)
			ep := "tcp:" + peer.addr
			waitFor(t, 30*time.Second, "3 rejected replies and readings of both units", func() bool {
				return requestErrors(t, r.reg, ep)[tc.reason] >= 3 && c.count("good") >= 3 && c.count("bad") >= 3
			})
			// The poller goes on polling both.
			good, bad := c.count("good"), c.count("bad")
			waitFor(t, 30*time.Second, "more readings of both units", func() bool {
				return c.count("good") >= good+3 && c.count("bad") >= bad+3
			})
			r.stop()
			errs := requestErrors(t, r.reg, ep)
			stGood, stBad := r.status("good"), r.status("bad")

			prefix := fmt.Sprintf("asset bad unit 7: reading %s: ", reqs[hi])
			if !strings.Contains(stBad.LastError, prefix) || !strings.Contains(stBad.LastError, tc.text) {
				t.Errorf("last error %q, want %q and %q", stBad.LastError, prefix, tc.text)
			}
			n := errs[tc.reason]
			// A stray timeout is a loaded machine's doing (a bad reply
			// taken for a good one would show as another reason).
			stray := 0.0
			if tc.reason != reasonTimeout {
				stray = errs[reasonTimeout]
			}
			for reason, v := range errs {
				if reason != tc.reason && v > 0 && reason != reasonTimeout {
					t.Errorf("request_errors_total{reason=%s} = %v, want only %s (%v)", reason, v, tc.reason, n)
				}
			}
			result := resultError
			switch {
			case strings.HasPrefix(tc.reason, reasonExceptionPrefix):
				result = resultException
			case tc.reason == reasonTimeout:
				result = resultTimeout
			}
			if got := r.requests(t, ep, result); got != n {
				t.Errorf("requests_total{result=%s} = %v, want %v as request_errors_total{reason=%s}", result, got, n, tc.reason)
			}
			// Resynchronising: every rejected reply but an exception
			// closes the connection, and the next poll opens another.
			conns := peer.connections()
			if result == resultException && float64(conns) > 1+stray {
				t.Errorf("%d connections: an exception reply must not cost the connection", conns)
			}
			if result != resultException && float64(conns) < n {
				t.Errorf("%d connections after %v rejected replies: the poller must reconnect after each", conns, n)
			}

			if !stGood.Up || stGood.Failures != 0 {
				t.Errorf("healthy unit status %+v, want up", stGood)
			}
			got, _ := c.last("good")
			checkReading(t, got, p, wantGood)
			// The bad unit's reading has what came before the holding
			// read; what came after only if the device was still
			// talked to (an exception reply).
			if !stBad.Up {
				t.Errorf("bad unit status %+v: it answers its other reads, want up", stBad)
			}
			got, _ = c.last("bad")
			for ri, req := range reqs {
				wantValid := ri < hi || ri > hi && result == resultException
				for _, fi := range req.Fields {
					f := &p.Fields[fi]
					v := got.Values[f.Index]
					switch {
					case wantValid && !v.Equal(wantBad[fi]):
						t.Errorf("bad unit %s (%s) = %v, served %v", f.Name, req, v, wantBad[fi])
					case !wantValid && v.Valid():
						t.Errorf("bad unit %s (%s) = %v, want no value", f.Name, req, v)
					}
				}
			}
			if partial := testutil.ToFloat64(r.p.m.polls.WithLabelValues(pollPartial)); partial < 6 {
				t.Errorf("polls_total{result=partial} = %v, want one per poll of the bad unit (>= 6)", partial)
			}
		})
	}
}

// mixedBus is the bus of issue 5: healthy units of the three shipped Modbus
// profiles and, on the same connection, a dead unit, a unit that answers
// every read with an exception and one that answers later than the timeout.
// Its timing is short, so that a run covers many intervals.
type mixedBus struct {
	healthy           map[uint8]*devices.Profile
	bad               map[uint8]misbehaviour
	interval, timeout time.Duration
	// wire is, on RTU, the longest time one request of a bad unit and its
	// reply take on the line: the link waits that long on top of the
	// timeout (0 on TCP).
	wire time.Duration
}

// badProfile is the profile of the mixed bus's bad units.
const badProfile = "citylight-slc200"

// rtuWire sets bus.wire for an RTU line at baud.
func (bus *mixedBus) rtuWire(cat *devices.Catalog, baud int) {
	l := newRTULink(modbus.NewRTUClientHandler("/dev/null"))
	l.BaudRate = baud
	p := cat.Profile(badProfile)
	for _, r := range Plan(p, ProfilePlanOptions(p)) {
		fc := map[devices.Table]byte{devices.Coil: 1, devices.Discrete: 2, devices.Holding: 3, devices.Input: 4}[r.Table]
		bus.wire = max(bus.wire, l.wireTime(8+5+responseBytes(fc, r.Count)))
	}
}

func newMixedBus(cat *devices.Catalog, interval, timeout time.Duration) mixedBus {
	return mixedBus{
		interval: interval, timeout: timeout,
		healthy: map[uint8]*devices.Profile{
			1: cat.Profile("citylight-slc200"), 2: cat.Profile("citylight-ccu300"), 3: cat.Profile("gasreg-rtu500"),
		},
		bad: map[uint8]misbehaviour{4: dead, 5: exception, 6: slow},
	}
}

// gapBound is the longest gap between two consecutive readings of a
// healthy unit that the poller's design allows on the mixed bus. An endpoint
// polls its units in turn, so a healthy unit's poll can wait for the bad
// units due before it, each at most once (after a poll a unit is not due
// again for at least an interval), each for at most
//
//   - a reconnect after its previous failure: the connect timeout, which is
//     the timeout (on RTU: the wait for a late reply before a unit that timed
//     out is asked again, one timeout), and
//   - one request: a poll stops at its first timeout (the exception unit's
//     replies come at once, but it is counted the same); on RTU the
//     frames' time on the wire comes on top.
//
// A poll late by more than an interval skips the missed slot and keeps its
// phase, so consecutive readings are at most an interval plus that wait
// apart: interval + bad × (2 × timeout + wire). As much again is allowance for a
// loaded test machine (stalls of a second and more were seen with the load
// average at 5 times the cores).
func (bus mixedBus) gapBound() time.Duration {
	return bus.interval + time.Duration(len(bus.bad))*(4*bus.timeout+bus.wire)
}

// checkMixedBus runs the checks of the mixed-bus tests once every healthy
// unit has enough readings.
func checkMixedBus(t *testing.T, bus mixedBus, r *running, c *collector, want map[uint8][]devices.Value, ep, idPrefix string) {
	t.Helper()
	const cycles = 15
	id := func(u uint8) string { return fmt.Sprint(idPrefix, u) }
	waitFor(t, 60*time.Second, fmt.Sprintf("%d readings of every healthy unit and the bad units offline", cycles), func() bool {
		for u := range bus.healthy {
			if c.count(id(u)) < cycles {
				return false
			}
		}
		for u := range bus.bad {
			if st := r.status(id(u)); st.Up || st.Failures < 2 {
				return false
			}
		}
		return true
	})
	// Run removes the per-asset series when it returns: read them first.
	up := map[uint8]float64{}
	for u := range bus.healthy {
		up[u] = testutil.ToFloat64(r.p.m.deviceUp.WithLabelValues(id(u)))
	}
	for u := range bus.bad {
		up[u] = testutil.ToFloat64(r.p.m.deviceUp.WithLabelValues(id(u)))
	}
	devicesUp := testutil.ToFloat64(r.p.m.devicesUp)
	r.stop()

	bound := bus.gapBound()
	for u, p := range bus.healthy {
		c.mu.Lock()
		rs := append([]devices.Reading(nil), c.byID[id(u)]...)
		c.mu.Unlock()
		var worst time.Duration
		for i := 1; i < len(rs); i++ {
			gap := rs[i].Received.Sub(rs[i-1].Received)
			worst = max(worst, gap)
			if gap > bound {
				t.Errorf("%s: readings %d and %d are %v apart, more than %v (interval %v + %d bad units × (4 × timeout %v + wire %v))",
					id(u), i-1, i, gap.Round(time.Millisecond), bound, bus.interval, len(bus.bad), bus.timeout, bus.wire)
			}
		}
		t.Logf("%s: %d readings, longest gap %v (bound %v)", id(u), len(rs), worst.Round(time.Millisecond), bound)
		checkReading(t, rs[len(rs)-1], p, want[u])
		if st := r.status(id(u)); !st.Up {
			t.Errorf("healthy %s status %+v, want up", id(u), st)
		}
		if up[u] != 1 {
			t.Errorf("citygw_modbus_device_up{asset=%s} = %v, want 1", id(u), up[u])
		}
	}
	noReply := fmt.Sprintf("no reply within %v", bus.timeout)
	texts := map[misbehaviour]string{dead: noReply, slow: noReply, exception: "(server device failure)"}
	for u, how := range bus.bad {
		st := r.status(id(u))
		if c.count(id(u)) != 0 {
			t.Errorf("bad %s produced %d readings", id(u), c.count(id(u)))
		}
		prefix := fmt.Sprintf("asset %s unit %d: reading ", id(u), u)
		if st.Up || !strings.HasPrefix(st.LastError, prefix) || !strings.Contains(st.LastError, texts[how]) {
			t.Errorf("bad %s status %+v, want offline with an error %q...%q", id(u), st, prefix, texts[how])
		}
		if up[u] != 0 {
			t.Errorf("citygw_modbus_device_up{asset=%s} = %v, want 0", id(u), up[u])
		}
	}
	if int(devicesUp) != len(bus.healthy) {
		t.Errorf("citygw_modbus_devices_up = %v, want %d", devicesUp, len(bus.healthy))
	}
	// Only the bad units' failures: a late reply taken for the answer to
	// the next request would show as a transaction or unit id mismatch.
	errs := requestErrors(t, r.reg, ep)
	for reason, n := range errs {
		if reason != reasonTimeout && reason != "exception_device_failure" && n > 0 {
			t.Errorf("request_errors_total{reason=%s} = %v: only the dead and slow units' timeouts and the exception unit's replies are expected", reason, n)
		}
	}
	if errs[reasonTimeout] < 4 || errs["exception_device_failure"] < 2 {
		t.Errorf("request_errors_total %v, want >= 4 timeouts (dead and slow, twice each) and >= 2 exceptions", errs)
	}
}

// TestMixedBusTCP: issue 5's bus over Modbus TCP (one port, several unit ids,
// as behind a serial-to-Ethernet converter): the healthy units' readings keep
// their interval within gapBound while the dead, the exception-replying
// and the slow unit are reported offline.
func TestMixedBusTCP(t *testing.T) {
	cat := builtin(t)
	bus := newMixedBus(cat, 200*time.Millisecond, 100*time.Millisecond)
	peer := newBadPeer(t)
	now := time.Now()
	want := map[uint8][]devices.Value{}
	var assets []*devices.Asset
	for u, p := range bus.healthy {
		want[u] = peer.unit(u, p, sampleValues(t, p, int(u), now), peerUnit{})
		assets = append(assets, tcpAsset(t, cat, fmt.Sprint("tcp", u), p.Model, peer.addr, u, bus.interval, bus.timeout))
	}
	p := cat.Profile(badProfile)
	for u, how := range bus.bad {
		peer.unit(u, p, sampleValues(t, p, int(u), now), peerUnit{how: how, code: 4, delay: 3 * bus.timeout})
		assets = append(assets, tcpAsset(t, cat, fmt.Sprint("tcp", u), p.Model, peer.addr, u, bus.interval, bus.timeout))
	}
	c := newCollector()
	// Backoff as short as the interval: the bad units are retried as
	// often as the design allows, the worst case for their neighbours.
	cfg := Config{BackoffMin: bus.interval, BackoffMax: 2 * bus.interval}
	r := startPoller(t, cfg, assets, c)
	checkMixedBus(t, bus, r, c, want, "tcp:"+peer.addr, "tcp")
}

// TestMixedBusRTU: issue 5's bus on a Modbus RTU line, a pseudo-terminal
// pair made by socat with rtuPeer on the far end. The slow unit's replies
// land on the line after its timeout, while the poller talks to the next
// unit; with goburrow's own RTU transport they were taken for that unit's
// reply and failed healthy polls (crc and unit_id errors, gaps of 1.6s).
func TestMixedBusRTU(t *testing.T) {
	socat := testenv.RequireTool(t, "socat", "apt-get install -y socat")
	cat := builtin(t)
	// Longer than over TCP: a reply crosses socat and two ptys, which a
	// loaded machine holds up longer.
	bus := newMixedBus(cat, 500*time.Millisecond, 250*time.Millisecond)
	dir := t.TempDir()
	gw, dev := filepath.Join(dir, "gw"), filepath.Join(dir, "dev")
	testenv.StartProcess(t, socat, "-d", "-d", "pty,raw,echo=0,link="+gw, "pty,raw,echo=0,link="+dev)
	waitFor(t, 10*time.Second, "the pty pair", func() bool {
		_, e1 := os.Stat(gw)
		_, e2 := os.Stat(dev)
		return e1 == nil && e2 == nil
	})
	peer := newRTUPeer(t, dev)
	now := time.Now()
	want := map[uint8][]devices.Value{}
	var assets []*devices.Asset
	add := func(u uint8, p *devices.Profile) {
		assets = append(assets, &devices.Asset{
			ID: fmt.Sprint("rtu", u), Model: p.Model, Kind: p.Kind, Profile: p, Schema: cat.Kinds[p.Kind],
			Modbus: &devices.ModbusAddr{Serial: gw, Unit: u, Interval: yamlconf.Duration(bus.interval), Timeout: yamlconf.Duration(bus.timeout)},
		})
	}
	for u, p := range bus.healthy {
		want[u] = peer.unit(u, p, sampleValues(t, p, int(u), now), peerUnit{})
		add(u, p)
	}
	p := cat.Profile(badProfile)
	for u, how := range bus.bad {
		peer.unit(u, p, sampleValues(t, p, int(u), now), peerUnit{how: how, code: 4, delay: 3 * bus.timeout})
		add(u, p)
	}
	c := newCollector()
	// A pty has no baud-rate timing, but the link allows for it.
	const baud = 115200
	bus.rtuWire(cat, baud)
	cfg := Config{BackoffMin: bus.interval, BackoffMax: 2 * bus.interval, RTU: SerialDefaults{Baud: baud}}
	r := startPoller(t, cfg, assets, c)
	checkMixedBus(t, bus, r, c, want, "rtu:"+gw, "rtu")
}
