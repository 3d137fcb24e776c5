package statuspage

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/influx"
	"github.com/citygw/citygw/gateway/modbuspoll"
	"github.com/citygw/citygw/gateway/mqttsub"
	"github.com/citygw/citygw/gateway/pipeline"
	"github.com/citygw/citygw/gateway/wal"
)

// TestHealthAndCases wires the gateway's real parts to the page: the case
// client delivering the firing episode to the reference case desk, a WAL
// with a backlog, and an InfluxDB writer, Modbus poller and MQTT
// subscriber that were never started (nothing listens where they point).
func TestHealthAndCases(t *testing.T) {
	var parts struct {
		w    *wal.WAL
		iw   *influx.Writer
		poll *modbuspoll.Poller
		sub  *mqttsub.Subscriber
	}
	f := newFixtureWith(t, true, func(o *Options) {
		reg := prometheus.NewRegistry()
		var err error
		if parts.w, err = wal.Open(wal.Config{Dir: t.TempDir()}, reg, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { parts.w.Close() })
		for i := 0; i < 3; i++ {
			if err := parts.w.Append(context.Background(), []byte("gas_station,asset=GAS-001 outlet_pressure_kpa=1.2 "+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		if parts.iw, err = influx.NewWriter(influx.WriterConfig{URL: "http://127.0.0.1:1", Bucket: "citygw/autogen"}, reg, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { parts.iw.Close() })
		pipe, err := pipeline.New(influx.NewEncoder("gw-test"), parts.iw, o.Rules.(pipeline.Evaluator), reg)
		if err != nil {
			t.Fatal(err)
		}
		var mb []*devices.Asset
		for _, a := range o.Inventory.Assets {
			if a.Modbus != nil {
				mb = append(mb, a)
			}
		}
		if parts.poll, err = modbuspoll.New(modbuspoll.Config{}, mb, pipe, reg, nil); err != nil {
			t.Fatal(err)
		}
		if parts.sub, err = mqttsub.New(mqttsub.Config{Broker: "tcp://127.0.0.1:1", ClientID: "statuspage-test",
			Subscriptions: []mqttsub.Subscription{{Topic: "city/bins/{asset}/telemetry"}}}, o.Inventory, pipe, reg, nil); err != nil {
			t.Fatal(err)
		}
		o.WAL, o.Influx, o.Modbus, o.MQTT = parts.w, parts.iw, parts.poll, parts.sub
	})
	var episode string
	for _, e := range f.eng.Episodes() {
		if e.Rule == "gas_station.outlet_pressure_out_of_band" {
			episode = e.ID
		}
	}
	cs := f.cases.waitCase(t, episode)
	f.clk.add(time.Hour) // past the refresh interval

	_, _, body := f.get(t, "/")
	modbusTotal := len(parts.poll.Status())
	influxWord := "unreachable"
	if parts.iw.Healthy() {
		influxWord = "reachable"
	}
	for _, want := range []string{
		"0 of " + strconv.Itoa(modbusTotal) + " devices up",
		">not connected</span>", "tcp://127.0.0.1:1",
		">" + influxWord + "</span>",
		`<span class="" id="wal">3 points behind</span>`,
		"1 of 1 healthy", "desk <span class=\"dim\">(open311) breaker closed",
		// The case desk's case number, linked to the desk's page.
		`<a href="` + cs.Link + `" target="_blank" rel="noopener">` + cs.ID + `</a>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("city page lacks %q", want)
		}
	}
	if !strings.HasPrefix(cs.Link, f.cases.url+"/cases/") {
		t.Errorf("case link %q is not the desk's", cs.Link)
	}
	// The asset page links the case from the rule's row.
	_, _, body = f.get(t, "/assets/GAS-001")
	if !strings.Contains(body, `<a href="`+cs.Link+`"`) {
		t.Error("asset page lacks the case link")
	}
	s := f.page.summary(f.page.current(), &filter{kind: -1, dist: -1, grid: -1}, true)
	if h := s.Health; h.WALBacklog != 3 || !h.MQTT || h.MQTTConnected || h.ModbusTotal != modbusTotal || h.SinksOK != 1 {
		t.Errorf("summary health = %+v", h)
	}
	found := false
	for _, e := range s.Episodes {
		for _, c := range e.Cases {
			if c.ID == cs.ID && c.Link == cs.Link {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("summary episodes lack case %s: %+v", cs.ID, s.Episodes)
	}
}
