package mqttsub

import (
	"context"
	"errors"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/citygw/citygw/gateway/mqttconn"
)

// Run connects, subscribes and hands readings to the Handler until ctx is
// cancelled; then it stops the workers (messages not yet handled stay
// unacknowledged and the broker keeps them for the next run; those handled
// are acknowledged), disconnects and returns nil. Connection failures are
// retried with backoff and logged, never returned: a gateway must come up
// before its broker. Run may be called once.
func (s *Subscriber) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("mqttsub: Run called twice")
	}
	var wg sync.WaitGroup
	s.startWorkers(ctx, &wg)
	client := mqtt.NewClient(s.options())
	defer func() {
		close(s.quit)
		wg.Wait()
		// What the workers left queued was never handled: give it up (not
		// acknowledged, the broker keeps it), so that the acks of messages
		// handled after it leave before the disconnect instead of being
		// redelivered on the next run.
		for _, ch := range s.shards {
			for len(ch) > 0 {
				s.finish(<-ch, false)
			}
		}
		s.gen.Add(1)
		client.Disconnect(250)
		// Disconnect may return before paho closed the connection: wait,
		// so that the last acks and the DISCONNECT are written before
		// Run returns (and the process perhaps exits).
		if c := s.conn.Load(); c != nil {
			select {
			case <-c.Done():
			case <-time.After(time.Second):
			}
		}
		s.setConnected(false)
		s.log.Info("mqtt subscriber stopped")
	}()
	if err := s.connect(ctx, client); err != nil {
		return nil //nolint:nilerr // cancelled while connecting: a normal stop
	}
	check := s.cfg.RedeliverAfter.D() / 4
	check = min(max(check, 50*time.Millisecond), 5*time.Second)
	tick := time.NewTicker(check)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := s.maybeRedeliver(ctx, client); err != nil {
				return nil //nolint:nilerr // cancelled while reconnecting
			}
		}
	}
}

// dial opens a broker connection (mqttconn) and keeps it, for Run's stop
// to wait for its close.
func (s *Subscriber) dial(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	c, err := mqttconn.Dial(uri, o, 0)
	if err != nil {
		return nil, err
	}
	s.conn.Store(c)
	return c, nil
}

func (s *Subscriber) options() *mqtt.ClientOptions {
	c := &s.cfg
	o := mqtt.NewClientOptions().
		AddBroker(c.Broker).
		SetClientID(c.ClientID).
		SetUsername(c.Username).
		SetPassword(c.Password).
		SetCleanSession(c.CleanSession).
		SetProtocolVersion(4). // MQTT 3.1.1
		SetOrderMatters(true). // one router goroutine, arrival order; see the package doc
		SetAutoAckDisabled(true).
		SetStore(discardStore{}). // keeps nothing: see store.go
		SetKeepAlive(c.KeepAlive.D()).
		SetConnectTimeout(c.ConnectTimeout.D()).
		SetWriteTimeout(c.ConnectTimeout.D()).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(c.MaxReconnectInterval.D()).
		SetConnectRetry(false).            // the first connection is retried by connect, which logs why it failed
		SetResumeSubs(false).              // we subscribe again on every connect
		SetCustomOpenConnectionFn(s.dial). // buffered reads, coalesced writes (gateway/mqttconn)
		SetDefaultPublishHandler(s.onMessage).
		SetOnConnectHandler(s.onConnect).
		SetConnectionLostHandler(s.onConnectionLost).
		SetReconnectingHandler(s.onReconnecting)
	if s.tls != nil {
		o.SetTLSConfig(s.tls)
	}
	return o
}

// connect connects, retrying with backoff until it succeeds or ctx ends.
func (s *Subscriber) connect(ctx context.Context, client mqtt.Client) error {
	backoff := 500 * time.Millisecond
	for {
		tok := client.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
		err := tok.Error()
		if err == nil {
			return nil
		}
		s.log.Warn("mqtt connect failed; retrying", "client_id", s.cfg.ClientID, "err", err, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, s.cfg.MaxReconnectInterval.D())
	}
}

// onConnect runs (in its own goroutine) after every successful connection:
// subscribe, retrying with backoff while the connection lasts.
func (s *Subscriber) onConnect(c mqtt.Client) {
	if s.everConn.Swap(true) {
		s.reconnects.Add(1)
		s.m.reconnects.Inc()
		s.log.Info("mqtt connection restored; subscribing again")
	} else {
		s.log.Info("mqtt connected", "client_id", s.cfg.ClientID, "clean_session", s.cfg.CleanSession)
	}
	filters := make(map[string]byte, len(s.tmpls))
	for i, t := range s.tmpls {
		filters[t.Filter] = s.cfg.Subscriptions[i].qos()
	}
	backoff := 200 * time.Millisecond
	for {
		err := s.subscribe(c, filters)
		if err == nil {
			break
		}
		s.log.Error("mqtt subscribe failed; retrying", "err", err, "retry_in", backoff)
		select {
		case <-s.quit:
			return
		case <-time.After(backoff):
		}
		if !c.IsConnectionOpen() {
			return // the next connection subscribes again
		}
		backoff = min(2*backoff, s.cfg.MaxReconnectInterval.D())
	}
	select {
	case <-s.quit:
		return // Run is stopping; do not report a connection it is closing
	default:
	}
	s.setConnected(true)
	s.log.Info("mqtt subscribed", "topics", len(filters))
}

func (s *Subscriber) subscribe(c mqtt.Client, filters map[string]byte) error {
	tok := c.SubscribeMultiple(filters, nil) // nil: all messages go to the default handler, once
	if !tok.WaitTimeout(s.cfg.ConnectTimeout.D()) {
		return errors.New("no SUBACK within the connect timeout")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	var errs []error
	for topic, granted := range tok.(*mqtt.SubscribeToken).Result() {
		if granted == 0x80 {
			errs = append(errs, errors.New("broker refused the subscription to "+topic))
		}
	}
	return errors.Join(errs...)
}

func (s *Subscriber) onConnectionLost(_ mqtt.Client, err error) {
	s.setConnected(false)
	s.log.Warn("mqtt connection lost; reconnecting", "err", err)
}

// onReconnecting runs on paho's reconnect goroutine before each attempt,
// after the lost connection's router stopped: every message queued until now
// came on a dead connection.
func (s *Subscriber) onReconnecting(mqtt.Client, *mqtt.ClientOptions) {
	s.gen.Add(1)
	s.refusedAt.Store(0) // the new connection brings the refused messages back
}

func (s *Subscriber) setConnected(up bool) {
	s.connected.Store(up)
	if up {
		s.m.connected.Set(1)
	} else {
		s.m.connected.Set(0)
	}
}

// maybeRedeliver reconnects when refused messages waited RedeliverAfter:
// MQTT 3.1.1 brokers resend unacknowledged messages only on a new connection
// of the persistent session.
func (s *Subscriber) maybeRedeliver(ctx context.Context, client mqtt.Client) error {
	at := s.refusedAt.Load()
	if at == 0 || s.cfg.CleanSession || time.Since(time.Unix(0, at)) < s.cfg.RedeliverAfter.D() || !s.connected.Load() {
		return nil
	}
	s.log.Warn("reconnecting so that the broker redelivers the messages the handler refused",
		"oldest_refused", time.Unix(0, at), "refused_total", s.counts[resultRejected].Load())
	s.gen.Add(1) // what is queued now can no longer be acknowledged usefully
	client.Disconnect(250)
	s.gen.Add(1)
	s.refusedAt.Store(0)
	s.setConnected(false)
	return s.connect(ctx, client)
}
