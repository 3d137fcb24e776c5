// Package mqttpub publishes the simulated bins' telemetry to an MQTT broker
// with github.com/eclipse/paho.mqtt.golang: each bin once per interval, the
// bins' publishes spread evenly across the interval, QoS 1 by default. The
// client reconnects by itself when the broker goes away; QoS 1 messages
// published meanwhile wait in its store and are sent on reconnection. It
// counts, per bin, the messages it attempted, the ones the broker
// acknowledged (PUBACK; for QoS 0, written to the connection) and the ones
// that failed.
package mqttpub

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Source supplies the messages.
type Source interface {
	Len() int
	Topic(i int) string
	// Message appends asset i's message at wall time now to buf; false when
	// the asset publishes nothing now (a silent device).
	Message(i int, now time.Time, buf []byte) ([]byte, bool)
}

// Options configure a publisher.
type Options struct {
	Broker   string // tcp://host:port
	ClientID string
	Username string
	Password string
	QoS      byte
	Interval time.Duration // per asset
	Log      *slog.Logger
}

// Publisher publishes a Source's messages.
type Publisher struct {
	src    Source
	opts   Options
	client mqtt.Client

	attempted []atomic.Int64
	acked     []atomic.Int64
	failed    []atomic.Int64
	pending   chan pending
	connects  atomic.Int64
}

type pending struct {
	i int
	t mqtt.Token
}

// New returns a publisher; Run connects and publishes.
func New(src Source, opts Options) *Publisher {
	if opts.Interval <= 0 {
		opts.Interval = time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	n := src.Len()
	p := &Publisher{src: src, opts: opts, attempted: make([]atomic.Int64, n), acked: make([]atomic.Int64, n),
		failed: make([]atomic.Int64, n), pending: make(chan pending, 8192)}
	log := opts.Log
	co := mqtt.NewClientOptions().
		AddBroker(opts.Broker).
		SetClientID(opts.ClientID).
		SetUsername(opts.Username).
		SetPassword(opts.Password).
		SetCleanSession(false). // keep in-flight QoS 1 messages across reconnects
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(2 * time.Second).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(15 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetOrderMatters(false).
		SetOnConnectHandler(func(mqtt.Client) {
			p.connects.Add(1)
			log.Info("mqtt connected", "broker", opts.Broker)
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			log.Warn("mqtt connection lost", "broker", opts.Broker, "err", err)
		}).
		SetReconnectingHandler(func(mqtt.Client, *mqtt.ClientOptions) {
			log.Debug("mqtt reconnecting", "broker", opts.Broker)
		})
	p.client = mqtt.NewClient(co)
	return p
}

// Counts returns asset i's attempted, acknowledged and failed messages.
func (p *Publisher) Counts(i int) (attempted, acked, failed int64) {
	return p.attempted[i].Load(), p.acked[i].Load(), p.failed[i].Load()
}

// Connected reports whether the connection to the broker is up.
func (p *Publisher) Connected() bool { return p.client.IsConnectionOpen() }

// Connects returns how many times the client connected.
func (p *Publisher) Connects() int64 { return p.connects.Load() }

// Connect starts connecting (retrying in the background) and waits up to
// wait for the first connection.
func (p *Publisher) Connect(wait time.Duration) error {
	t := p.client.Connect()
	if !t.WaitTimeout(wait) {
		return fmt.Errorf("mqtt broker %s: not connected after %v (still retrying)", p.opts.Broker, wait)
	}
	if err := t.Error(); err != nil {
		return fmt.Errorf("mqtt broker %s: %w", p.opts.Broker, err)
	}
	return nil
}

// Run publishes until ctx ends, then disconnects. Call Connect first.
func (p *Publisher) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		p.ack(ctx)
		close(done)
	}()
	defer func() {
		close(p.pending)
		<-done
		p.client.Disconnect(250)
	}()
	n := p.src.Len()
	if n == 0 {
		<-ctx.Done()
		return
	}
	cycle := time.Now()
	next := 0
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var buf []byte
	for {
		now := time.Now()
		for i := 0; i < n; i++ { // at most one round per wake-up
			due := cycle.Add(time.Duration(int64(p.opts.Interval) * int64(next) / int64(n)))
			if due.After(now) {
				break
			}
			buf = p.publish(ctx, next, now, buf[:0])
			next++
			if next == n {
				next = 0
				cycle = cycle.Add(p.opts.Interval)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (p *Publisher) publish(ctx context.Context, i int, now time.Time, buf []byte) []byte {
	buf, ok := p.src.Message(i, now, buf)
	if !ok {
		return buf
	}
	payload := append([]byte(nil), buf...) // the client keeps it until acknowledged
	p.attempted[i].Add(1)
	t := p.client.Publish(p.src.Topic(i), p.opts.QoS, false, payload)
	select {
	case p.pending <- pending{i, t}:
	case <-ctx.Done():
	}
	return buf
}

// ack waits for each publish's outcome, in order.
func (p *Publisher) ack(ctx context.Context) {
	for pd := range p.pending {
		for !pd.t.WaitTimeout(time.Second) {
			if ctx.Err() != nil {
				return
			}
		}
		if err := pd.t.Error(); err != nil {
			p.failed[pd.i].Add(1)
			p.opts.Log.Debug("mqtt publish failed", "topic", p.src.Topic(pd.i), "err", err)
			continue
		}
		p.acked[pd.i].Add(1)
	}
}
