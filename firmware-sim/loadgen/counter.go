package loadgen

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/citygw/citygw/gateway/mqttconn"
)

// Counter is an MQTT subscriber that only counts what it receives: with QoS 1
// and a persistent session it measures what the broker can deliver, the
// ceiling for any system that subscribes. The client calls its handler in
// order on one goroutine and acknowledges after it.
type Counter struct {
	client mqtt.Client
	n      atomic.Int64
	first  atomic.Int64 // unix ns of the first message
	last   atomic.Int64 // unix ns of the latest message
}

// CounterConfig configures StartCounter.
type CounterConfig struct {
	Broker   string
	ClientID string // stable: the persistent session lives under it
	Topic    string // a filter such as city/bins/+/telemetry
	QoS      byte
	// CleanSession drops the session at disconnect (tests); the benchmark
	// keeps it, as the systems it stands in for do.
	CleanSession bool
}

// StartCounter connects, subscribes and counts until Close.
func StartCounter(ctx context.Context, cfg CounterConfig) (*Counter, error) {
	c := &Counter{}
	opts := mqtt.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(cfg.ClientID).
		SetCleanSession(cfg.CleanSession).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(2 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetCustomOpenConnectionFn(mqttconn.Dialer(flushBytes)). // buffered, see gateway/mqttconn
		SetOrderMatters(true)                                   // the handler runs on the client's goroutine: no goroutine per message
	handler := func(_ mqtt.Client, _ mqtt.Message) {
		now := time.Now().UnixNano()
		if c.n.Add(1) == 1 {
			c.first.Store(now)
		}
		c.last.Store(now)
	}
	// Resubscribe on every connection (a lost session would lose it).
	opts.SetOnConnectHandler(func(cl mqtt.Client) {
		cl.Subscribe(cfg.Topic, cfg.QoS, handler)
	})
	c.client = mqtt.NewClient(opts)
	t := c.client.Connect()
	select {
	case <-t.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := t.Error(); err != nil {
		return nil, fmt.Errorf("counter connecting to %s: %w", cfg.Broker, err)
	}
	// The on-connect subscribe is asynchronous; subscribe once more and wait,
	// so that the caller may publish as soon as this returns.
	st := c.client.Subscribe(cfg.Topic, cfg.QoS, handler)
	select {
	case <-st.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := st.Error(); err != nil {
		return nil, fmt.Errorf("counter subscribing to %s: %w", cfg.Topic, err)
	}
	return c, nil
}

// Count returns the messages received so far.
func (c *Counter) Count() int64 { return c.n.Load() }

// First and Last return when the first and the latest message arrived (zero
// before any).
func (c *Counter) First() time.Time { return unixNano(c.first.Load()) }
func (c *Counter) Last() time.Time  { return unixNano(c.last.Load()) }

func unixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Wait waits until at least n messages arrived or ctx ends.
func (c *Counter) Wait(ctx context.Context, n int64) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for c.Count() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("counter: %d of %d messages: %w", c.Count(), n, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Close disconnects.
func (c *Counter) Close() { c.client.Disconnect(250) }
