// Package loadgen publishes waste-bin telemetry (the binsense-ws3 JSON
// payload) to an MQTT broker at benchmark rates, over QoS 1 with
// github.com/eclipse/paho.mqtt.golang, and counts what a broker delivers.
//
// Two plans:
//
//   - burst: M messages as fast as the broker takes them, round-robin over
//     the assets. Message k of an asset that sends n carries the device time
//     end − (n−k)·step (step 1 s, less when n is very large), so every message
//     of an asset has a distinct timestamp in the past (InfluxDB would
//     overwrite points of one series with equal timestamps).
//   - steady: every asset once per simulated interval for a simulated
//     duration, the assets spread evenly over the interval, the simulated
//     clock running speed times faster than the wall clock and ending at the
//     wall time the run started, so no timestamp lies in the future.
//
// Publishing is cheap on purpose, because the publisher shares the machine
// with the broker, the database and the system under test: a few
// connections, each owning a fixed subset of the assets (so one asset's
// messages go out in order on one connection) with a bounded window of
// messages not yet acknowledged (PUBACK), payloads appended into pooled
// buffers that return to the pool on acknowledgement, and one acknowledging
// goroutine per connection rather than one per message.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/citygw/citygw/gateway/mqttconn"
)

// flushBytes is how much the publisher's and the counter's connections
// gather before writing (gateway/mqttconn); they write far more than the
// gateway, whose writes are acknowledgements. citygw's subscriber uses the
// same connection, so the ceiling is measured on equal terms.
const flushBytes = 32 << 10

// Source supplies the assets and their payloads.
type Source interface {
	// Len is the number of assets.
	Len() int
	// Topic is asset i's MQTT topic.
	Topic(i int) string
	// Payload appends asset i's message with device time ts to buf. One
	// asset is always asked from the same goroutine; different assets from
	// different goroutines at once.
	Payload(i int, ts time.Time, buf []byte) []byte
}

// Config configures Run.
type Config struct {
	Broker   string // tcp://host:port
	ClientID string // prefix of the connections' client ids (default "citygw-loadgen"); connection c gets "-c"
	Username string
	Password string
	// Conns is the number of MQTT connections (default 2).
	Conns int
	// InFlight bounds each connection's messages published but not yet
	// acknowledged (default 1000, at most 65535).
	InFlight int

	// Burst, when positive, selects the burst plan: this many messages.
	Burst int
	// Steady plan (Burst 0): each asset once per Interval of simulated time
	// for Duration of simulated time, Speed simulated seconds per wall
	// second (default 1).
	Interval time.Duration
	Duration time.Duration
	Speed    float64

	// End is the latest device timestamp (default: the time Run starts).
	End time.Time
	// Progress, when set, gets a line a second: sent, acked, failed, rate.
	Progress io.Writer
	Log      *slog.Logger
}

// Summary is what a run did. Its JSON form is the line `firmware-sim load`
// prints at the end.
type Summary struct {
	Assets       int       `json:"assets"`
	Messages     int64     `json:"messages"` // published (handed to the client)
	Acked        int64     `json:"acked"`
	Failed       int64     `json:"failed"`
	FirstPublish time.Time `json:"first_publish"`
	LastAck      time.Time `json:"last_ack"`
	Duration     float64   `json:"duration"`   // seconds from the first publish to the last acknowledgement
	MsgsPerS     float64   `json:"msgs_per_s"` // acked / duration
}

// Plan returns how many messages the plan sends in all.
func (c *Config) Plan(assets int) (int64, error) {
	if assets <= 0 {
		return 0, errors.New("no assets")
	}
	if c.Burst > 0 {
		return int64(c.Burst), nil
	}
	if c.Interval <= 0 || c.Duration <= 0 {
		return 0, errors.New("want a burst (messages > 0) or a steady plan (interval and duration > 0)")
	}
	if c.Duration >= 24*time.Hour {
		return 0, fmt.Errorf("steady duration %v: the gateway ignores device times more than 24h old", c.Duration)
	}
	if c.Interval < time.Millisecond {
		return 0, fmt.Errorf("steady interval %v: below the payload's millisecond resolution", c.Interval)
	}
	return int64(assets) * int64(c.Duration/c.Interval), nil
}

// burstStep is the spacing of one asset's burst timestamps: 1 s, or less so
// that n messages stay within 23 hours (the gateway accepts 24 h of age).
func burstStep(n int) time.Duration {
	step := time.Second
	if n > 0 && time.Duration(n)*step > 23*time.Hour {
		step = (23 * time.Hour / time.Duration(n)).Truncate(time.Millisecond)
	}
	return step
}

// Run publishes the plan and returns when every message is acknowledged or
// failed, or ctx ends.
func Run(ctx context.Context, cfg Config, src Source) (Summary, error) {
	n := src.Len()
	total, err := cfg.Plan(n)
	if err != nil {
		return Summary{}, err
	}
	if cfg.ClientID == "" {
		cfg.ClientID = "citygw-loadgen"
	}
	if cfg.Conns <= 0 {
		cfg.Conns = 2
	}
	if cfg.Conns > n {
		cfg.Conns = n
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 1000
	}
	if cfg.InFlight > 65535 {
		return Summary{}, fmt.Errorf("in-flight window %d: MQTT has 65535 packet ids", cfg.InFlight)
	}
	if cfg.Speed <= 0 {
		cfg.Speed = 1
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	if cfg.End.IsZero() {
		cfg.End = start
	}

	conns := make([]*conn, cfg.Conns)
	for c := range conns {
		conns[c] = newConn(cfg, c)
	}
	defer func() {
		for _, c := range conns {
			c.client.Disconnect(250)
		}
	}()
	for _, c := range conns {
		if err := c.connect(ctx); err != nil {
			return Summary{}, err
		}
	}

	var wg sync.WaitGroup
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		progress(cfg.Progress, conns, stopProgress)
	}()
	for c, cn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cn.run(ctx, cfg, src, c, n)
		}()
	}
	wg.Wait()
	close(stopProgress)
	<-progressDone

	s := Summary{Assets: n}
	for _, c := range conns {
		s.Messages += c.sent.Load()
		s.Acked += c.acked.Load()
		s.Failed += c.failed.Load()
		if f := c.first; !f.IsZero() && (s.FirstPublish.IsZero() || f.Before(s.FirstPublish)) {
			s.FirstPublish = f
		}
		if l := c.lastAck; l.After(s.LastAck) {
			s.LastAck = l
		}
	}
	if !s.FirstPublish.IsZero() && s.LastAck.After(s.FirstPublish) {
		d := s.LastAck.Sub(s.FirstPublish)
		s.Duration = d.Seconds()
		s.MsgsPerS = float64(s.Acked) / d.Seconds()
	}
	if err := ctx.Err(); err != nil {
		return s, fmt.Errorf("load interrupted after %d of %d messages: %w", s.Messages, total, err)
	}
	return s, nil
}

// conn is one MQTT connection and the assets it owns (i ≡ index mod Conns).
type conn struct {
	client  mqtt.Client
	broker  string
	pending chan pending
	free    chan *[]byte

	sent, acked, failed atomic.Int64

	first   time.Time // set by the publishing goroutine before the first publish
	lastAck time.Time // written by the acknowledging goroutine, read after it ends
}

type pending struct {
	tok mqtt.Token
	buf *[]byte
}

func newConn(cfg Config, c int) *conn {
	cn := &conn{broker: cfg.Broker, pending: make(chan pending, cfg.InFlight), free: make(chan *[]byte, cfg.InFlight+1)}
	log := cfg.Log.With("conn", c)
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(fmt.Sprintf("%s-%d", cfg.ClientID, c)).
		SetUsername(cfg.Username).
		SetPassword(cfg.Password).
		// A persistent session and the client's store resend what was in
		// flight if the connection drops, so every token completes.
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(2 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetWriteTimeout(30 * time.Second).
		SetMaxResumePubInFlight(cfg.InFlight).
		SetCustomOpenConnectionFn(mqttconn.Dialer(flushBytes)). // buffered, see gateway/mqttconn
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			log.Warn("mqtt connection lost", "broker", cfg.Broker, "err", err)
		})
	cn.client = mqtt.NewClient(opts)
	return cn
}

func (cn *conn) connect(ctx context.Context) error {
	t := cn.client.Connect()
	select {
	case <-t.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("connecting to %s: %w", cn.broker, err)
	}
	return nil
}

// run publishes the connection's share of the plan, then waits for every
// acknowledgement.
func (cn *conn) run(ctx context.Context, cfg Config, src Source, c, n int) {
	ackDone := make(chan struct{})
	go func() {
		defer close(ackDone)
		cn.ack()
	}()
	defer func() {
		close(cn.pending)
		<-ackDone
	}()
	conns := cfg.Conns
	if cfg.Burst > 0 {
		// Asset i sends per (+1 for the first extra assets); all assets of
		// one round share a timestamp.
		per, extra := cfg.Burst/n, cfg.Burst%n
		rounds := per
		if extra > 0 {
			rounds++
		}
		for k := 0; k < rounds; k++ {
			for i := c; i < n; i += conns {
				cnt := per
				if i < extra {
					cnt++
				}
				if k >= cnt {
					continue
				}
				ts := cfg.End.Add(-time.Duration(cnt-k) * burstStep(cnt))
				if !cn.publish(ctx, src, i, ts) {
					return
				}
			}
		}
		return
	}
	// Steady: simulated time runs from End−Duration to End; asset i reports
	// at offset Interval·i/n within each interval.
	simStart := cfg.End.Add(-cfg.Duration)
	wallStart := time.Now()
	rounds := int(cfg.Duration / cfg.Interval)
	for k := 0; k < rounds; k++ {
		for i := c; i < n; i += conns {
			off := time.Duration(k)*cfg.Interval + time.Duration(int64(cfg.Interval)*int64(i)/int64(n))
			due := wallStart.Add(time.Duration(float64(off) / cfg.Speed))
			if d := time.Until(due); d > time.Millisecond {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			}
			if !cn.publish(ctx, src, i, simStart.Add(off)) {
				return
			}
		}
	}
}

// publish sends asset i's message stamped ts, waiting for a free slot in the
// in-flight window and for the connection. It returns false when ctx ended.
func (cn *conn) publish(ctx context.Context, src Source, i int, ts time.Time) bool {
	for !cn.client.IsConnectionOpen() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	var buf *[]byte
	select {
	case buf = <-cn.free:
	default:
		b := make([]byte, 0, 320)
		buf = &b
	}
	*buf = src.Payload(i, ts, (*buf)[:0])
	if cn.first.IsZero() {
		cn.first = time.Now()
	}
	// The client keeps the payload until the broker acknowledges it; the
	// buffer returns to the pool only then.
	tok := cn.client.Publish(src.Topic(i), 1, false, *buf)
	cn.sent.Add(1)
	select {
	case cn.pending <- pending{tok, buf}:
		return true
	case <-ctx.Done():
		return false
	}
}

// ack counts each publish's outcome in publishing order and recycles its
// buffer.
func (cn *conn) ack() {
	for p := range cn.pending {
		<-p.tok.Done()
		if p.tok.Error() != nil {
			cn.failed.Add(1)
		} else {
			cn.acked.Add(1)
			cn.lastAck = time.Now()
		}
		select {
		case cn.free <- p.buf:
		default:
		}
	}
}

func progress(w io.Writer, conns []*conn, stop <-chan struct{}) {
	if w == nil {
		<-stop
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	start := time.Now()
	var prev int64
	prevT := start
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			var sent, acked, failed int64
			for _, c := range conns {
				sent += c.sent.Load()
				acked += c.acked.Load()
				failed += c.failed.Load()
			}
			rate := float64(acked-prev) / now.Sub(prevT).Seconds()
			prev, prevT = acked, now
			fmt.Fprintf(w, "loadgen: %.0fs sent %d acked %d failed %d rate %.0f msg/s\n",
				now.Sub(start).Seconds(), sent, acked, failed, rate)
		}
	}
}

// TopicFor expands a topic template's {asset} placeholder.
func TopicFor(template, asset string) string {
	return strings.ReplaceAll(template, "{asset}", asset)
}
