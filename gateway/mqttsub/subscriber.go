// Package mqttsub subscribes to device telemetry over MQTT with
// github.com/eclipse/paho.mqtt.golang, decodes each message with its asset's
// profile, hands the reading to a Handler and acknowledges each QoS 1 message
// only after the Handler accepted it.
//
// Topic templates (city/bins/{asset}/telemetry) map a topic level to the
// asset id; without {asset} the exact topic is looked up in the inventory.
//
// Ordering and throughput: paho's router delivers messages one at a time, in
// arrival order (OrderMatters true; false would start a goroutine per message
// and lose the order). The router callback only matches the topic and puts
// the message on the queue of one of Config.Workers workers chosen by a hash
// of the asset id, so one asset's readings reach the Handler in arrival order
// while assets are decoded in parallel. A worker takes whatever its queue
// holds (up to MaxBatch) and, with a BatchHandler, hands the decoded readings
// on in one call: the gateway then appends them to the write-ahead log in one
// write. Batches form only when messages arrive faster than they are handled,
// so a trickle is not delayed. Acknowledgement is manual
// (SetAutoAckDisabled): a message is acknowledged once Handle (HandleBatch)
// returned nil, and, as MQTT 3.1.1 (4.6) requires, in the order the messages
// arrived (ackQueue): a message finished by one worker waits for the older
// messages the other workers are still handling. Mosquitto 2.0.11 reorders
// one asset's messages when the acks come out of order (see ackQueue).
//
// Outcomes of a message:
//   - accepted by the Handler: acknowledged, counted ok (or decode_error when
//     some fields could not be decoded: the good fields were handed on).
//   - refused by the Handler (it returned an error): not acknowledged, counted
//     rejected. The asset's later messages on the same connection are held
//     back the same way (counted rejected, not handed on), so that the
//     redelivery brings them back in order. The broker redelivers only after
//     a reconnect, so when refused messages stay unacknowledged for
//     Config.RedeliverAfter the subscriber reconnects by itself (persistent
//     sessions only). A Handler should refuse only for transient reasons (a
//     full or failing WAL): a reading refused every time comes back forever.
//   - unknown asset, asset whose profile is not MQTT, payload over the size
//     limit, payload that is not a JSON object or carries no decodable field:
//     counted, logged (rate-limited), and acknowledged, because redelivery
//     would bring the same bytes back and they would never get better.
//
// After a lost connection paho reconnects with backoff; the subscriber
// subscribes again on every connect (a broker restarted without persistence
// forgot the subscriptions) and logs the loss and the restoration. Messages
// still queued from a lost connection are dropped unacknowledged: their acks
// could not reach the broker, which redelivers them on the new connection.
package mqttsub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/gateway/mqttconn"
)

// Handler takes a decoded reading. A nil error means the reading is accepted
// (for the gateway: durable in the write-ahead log) and the message may be
// acknowledged. The subscriber reuses r after Handle returns. Handle is
// called concurrently from several workers, but for one asset always from the
// same worker and in arrival order. Handle must return soon after ctx (Run's
// context) is cancelled: Run waits for it before it returns.
type Handler interface {
	Handle(ctx context.Context, r *devices.Reading) error
}

// BatchHandler is a Handler that can also take several readings at once
// (the gateway's pipeline: one write-ahead-log write for all of them). A
// worker hands on what its queue holds in one call, up to MaxBatch readings,
// without waiting for more. A nil error accepts every reading; an error
// refuses them all (none is acknowledged; any of them may have been kept, so
// the redelivery may bring duplicates). The readings of one asset are in
// arrival order; rs and the readings are reused after HandleBatch returns.
type BatchHandler interface {
	Handler
	HandleBatch(ctx context.Context, rs []*devices.Reading) error
}

// MaxBatch is the most readings a worker hands to a BatchHandler at once.
const MaxBatch = 64

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *devices.Reading) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, r *devices.Reading) error { return f(ctx, r) }

// Status is a snapshot of the subscriber's state for the status page.
type Status struct {
	Broker       string
	Connected    bool // connected and subscribed
	LastMessage  time.Time
	Received     uint64
	OK           uint64
	DecodeErrors uint64
	UnknownAsset uint64
	Oversize     uint64
	Rejected     uint64
	RateLimited  uint64
	Stale        uint64 // dropped unacknowledged because their connection was lost
	Reconnects   uint64
	Inflight     int64
}

// Subscriber is an MQTT telemetry source. Create it with New and start it with Run.
type Subscriber struct {
	cfg   Config
	inv   *devices.Inventory
	ids   *assetIndex // inv's assets by id, for the workers' lookups
	h     Handler
	log   *slog.Logger
	m     *metrics
	tmpls []*Template
	tls   *tls.Config // nil: no TLS options

	shards []chan item
	quit   chan struct{}
	acks   ackQueue // acknowledgements, in arrival order

	conn atomic.Pointer[mqttconn.Conn] // the latest connection (dial)

	running    atomic.Bool
	gen        atomic.Uint64 // connection generation: bumped when a connection is gone
	connected  atomic.Bool
	everConn   atomic.Bool
	lastMsg    atomic.Int64 // unix nanoseconds
	received   atomic.Uint64
	counts     [nResults]atomic.Uint64
	stale      atomic.Uint64
	reconnects atomic.Uint64
	inflight   atomic.Int64
	// refusedAt is the receive time (unix ns) of the oldest refused message
	// of the current connection, 0 if none: the trigger for a reconnect that
	// makes the broker redeliver it.
	refusedAt atomic.Int64
}

// item is one received message on its way to a worker.
type item struct {
	msg   mqtt.Message
	recv  time.Time
	tmpl  int    // index of the matching template, -1 if none
	asset string // the {asset} level, a substring of the topic
	gen   uint64
	seq   uint64 // in s.acks
}

// New validates cfg, resolves the topic templates and registers the metrics
// on reg. It does not connect: Run does.
func New(cfg Config, inv *devices.Inventory, h Handler, reg prometheus.Registerer, log *slog.Logger) (*Subscriber, error) {
	if inv == nil || h == nil {
		return nil, errors.New("mqttsub: an inventory and a handler are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("mqtt config: %w", err)
	}
	tmpls, err := parseTemplates(cfg.Subscriptions)
	if err != nil {
		return nil, fmt.Errorf("mqtt config: %w", err)
	}
	tlsConf, err := cfg.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("mqtt config: %w", err)
	}
	m, err := newMetrics(reg, &cfg, inv)
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	s := &Subscriber{cfg: cfg, inv: inv, ids: newAssetIndex(inv), h: h, log: log.With("broker", cfg.Broker), m: m, tmpls: tmpls, tls: tlsConf, quit: make(chan struct{})}
	s.acks.unacked = m.unacked
	s.shards = make([]chan item, cfg.Workers)
	for i := range s.shards {
		s.shards[i] = make(chan item, cfg.QueueSize)
	}
	return s, nil
}

// Connected reports whether the subscriber is connected and subscribed.
func (s *Subscriber) Connected() bool { return s.connected.Load() }

// Status returns a snapshot of the subscriber's state.
func (s *Subscriber) Status() Status {
	st := Status{
		Broker:       s.cfg.Broker,
		Connected:    s.connected.Load(),
		Received:     s.received.Load(),
		OK:           s.counts[resultOK].Load(),
		DecodeErrors: s.counts[resultDecodeError].Load(),
		UnknownAsset: s.counts[resultUnknownAsset].Load(),
		Oversize:     s.counts[resultOversize].Load(),
		RateLimited:  s.counts[resultRateLimited].Load(),
		Rejected:     s.counts[resultRejected].Load(),
		Stale:        s.stale.Load(),
		Reconnects:   s.reconnects.Load(),
		Inflight:     s.inflight.Load(),
	}
	if ns := s.lastMsg.Load(); ns != 0 {
		st.LastMessage = time.Unix(0, ns)
	}
	return st
}

// onMessage is paho's publish handler for every subscription. It runs on
// paho's single router goroutine, so it only routes: match the topic, pick
// the asset's worker, queue. A full queue blocks it, and with it the reads
// from the broker: backpressure, the broker holds the backlog.
func (s *Subscriber) onMessage(_ mqtt.Client, msg mqtt.Message) {
	it, key := s.admit(msg)
	select {
	case s.shards[shardOf(key, len(s.shards))] <- it:
	case <-s.quit:
		s.finish(it, false) // shutting down: not acknowledged, the broker keeps it
	}
}

// admit takes a message in, in arrival order: it matches the topic, counts
// the message in flight and registers it for its acknowledgement. key is
// what picks the worker (the asset, or the topic without one).
func (s *Subscriber) admit(msg mqtt.Message) (_ item, key string) {
	it := item{msg: msg, recv: time.Now(), tmpl: -1, gen: s.gen.Load()}
	topic := msg.Topic()
	for i, t := range s.tmpls {
		if a, ok := t.Match(topic); ok {
			it.tmpl, it.asset = i, a
			break
		}
	}
	key = it.asset
	if key == "" {
		key = topic
	}
	s.received.Add(1)
	s.lastMsg.Store(it.recv.UnixNano())
	s.inflight.Add(1)
	s.m.inflight.Inc()
	it.seq = s.acks.add(msg)
	return it, key
}

// shardOf hashes key (FNV-1a) onto n workers.
func shardOf(key string, n int) int { return int(fnv1a(key) % uint32(n)) }

// finish marks a message as no longer in flight in the subscriber, to be
// acknowledged (in arrival order) if ack.
func (s *Subscriber) finish(it item, ack bool) {
	s.acks.done(it.seq, ack)
	s.inflight.Add(-1)
	s.m.inflight.Dec()
}

// worker decodes and hands on the messages of the assets that hash to it.
type worker struct {
	logs *rateLog
	// held: assets (by Seq) with a refused message on the connection of
	// the given generation. Their later messages are held back too (not
	// handed on, not acknowledged) so that the redelivery brings the
	// asset's messages back in their original order.
	held map[int]uint64
	// buckets: per-asset token buckets (by Seq) of the rate cap.
	buckets map[int]bucket

	// The batch being processed: the items taken from the queue, and for
	// those decoded, their readings (slots reused batch after batch).
	items []item
	slots [MaxBatch]devices.Reading
	ready []*devices.Reading
	of    []readyItem // ready[k] came from items[of[k].item]
	acked []uint64    // sequence numbers of an accepted batch
}

// readyItem is a decoded message waiting for the handler's answer.
type readyItem struct {
	item int
	res  result // resultOK, or resultDecodeError when some fields were bad
}

// bucket is a token bucket refilled at the cap's rate, holding at most two
// seconds' worth.
type bucket struct {
	tokens float64
	last   time.Time
}

// allow takes a token from the asset's bucket.
func (w *worker) allow(seq int, now time.Time, rate float64) bool {
	b, ok := w.buckets[seq]
	if !ok {
		b = bucket{tokens: 2 * rate, last: now}
	}
	b.tokens = min(2*rate, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	ok = b.tokens >= 1
	if ok {
		b.tokens--
	}
	w.buckets[seq] = b
	return ok
}

func newWorker(logEvery time.Duration) *worker {
	return &worker{logs: newRateLog(logEvery), held: map[int]uint64{}, buckets: map[int]bucket{},
		items: make([]item, 0, MaxBatch), ready: make([]*devices.Reading, 0, MaxBatch), of: make([]readyItem, 0, MaxBatch),
		acked: make([]uint64, 0, MaxBatch)}
}

// batchWait is how long a busy worker waits for a batch to fill: one that
// handled its previous batch less than batchWait ago (messages are
// arriving faster than one per batchWait) waits up to batchWait for more,
// up to MaxBatch. A message arriving after a quiet spell is handled at
// once, so an alarm at a calm moment waits for nothing; under load a
// message waits at most a millisecond and shares its WAL write (a system
// call) and the rest of a batch's fixed costs with others: in the city
// benchmark's burst a worker otherwise took one message at a time, and the
// WAL's per-message writes were 7% of the gateway's CPU.
const batchWait = time.Millisecond

// work takes messages from the worker's queue: whatever the queue holds, up
// to MaxBatch, and when the worker is busy (see batchWait) what arrives
// within batchWait.
func (s *Subscriber) work(ctx context.Context, ch <-chan item) {
	w := newWorker(s.cfg.LogInterval.D())
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	var last time.Time // when the previous batch was taken
	// take adds what the queue holds without blocking: this worker is the
	// queue's only reader, so what len reports is there.
	take := func() {
		for len(w.items) < MaxBatch && len(ch) > 0 {
			w.items = append(w.items, <-ch)
		}
	}
	for {
		select {
		case it := <-ch:
			w.items = append(w.items[:0], it)
			take()
			now := time.Now()
			if len(w.items) < MaxBatch && now.Sub(last) < batchWait {
				wait.Reset(batchWait)
			fill:
				for len(w.items) < MaxBatch {
					select {
					case it := <-ch:
						w.items = append(w.items, it)
						take()
					case <-wait.C:
						break fill
					case <-s.quit:
						break fill
					}
				}
				wait.Stop()
				now = time.Now()
			}
			last = now
			s.processBatch(ctx, w)
		case <-s.quit:
			return
		}
	}
}

// process handles one message: find the asset, decode, hand on, acknowledge.
func (s *Subscriber) process(ctx context.Context, w *worker, it item) {
	w.items = append(w.items[:0], it)
	s.processBatch(ctx, w)
}

// processBatch handles w.items: each is checked and decoded (or dropped),
// the decoded readings are handed on, in one call to a BatchHandler, and
// acknowledged once accepted.
func (s *Subscriber) processBatch(ctx context.Context, w *worker) {
	w.ready, w.of = w.ready[:0], w.of[:0]
	for k := range w.items {
		if r, res, ok := s.decode(w, w.items[k], &w.slots[len(w.ready)]); ok {
			w.ready = append(w.ready, r)
			w.of = append(w.of, readyItem{item: k, res: res})
		}
	}
	if len(w.ready) == 0 {
		return
	}
	start := time.Now()
	var err error
	if bh, ok := s.h.(BatchHandler); ok && len(w.ready) > 1 {
		err = bh.HandleBatch(ctx, w.ready)
		s.m.handleDur.Observe(time.Since(start).Seconds())
		if err != nil {
			for k, ri := range w.of {
				s.handled(w, w.items[ri.item], w.ready[k].Asset, ri.res, err)
			}
			return
		}
		// Accepted: handled's work for each, with the acknowledgements,
		// the shared counters and the in-flight gauge done once for the
		// batch.
		var n [nResults]uint64
		w.acked = w.acked[:0]
		for k, ri := range w.of {
			w.acked = append(w.acked, w.items[ri.item].seq)
			n[ri.res]++
			s.m.readings[w.ready[k].Asset.Seq].Inc()
		}
		s.acks.doneAll(w.acked)
		for r, c := range n {
			if c > 0 {
				s.counts[r].Add(c)
				s.m.messages[r].Add(float64(c))
			}
		}
		s.inflight.Add(-int64(len(w.of)))
		s.m.inflight.Sub(float64(len(w.of)))
		return
	}
	for k, r := range w.ready {
		if g, ok := w.held[r.Asset.Seq]; ok && g == w.items[w.of[k].item].gen {
			// Behind a message of its asset refused earlier in this
			// batch: held back for the redelivery, as decode holds back
			// those of later batches.
			s.count(resultRejected)
			s.finish(w.items[w.of[k].item], false)
			continue
		}
		if k > 0 {
			start = time.Now()
		}
		err = s.h.Handle(ctx, r)
		s.m.handleDur.Observe(time.Since(start).Seconds())
		s.handled(w, w.items[w.of[k].item], r.Asset, w.of[k].res, err)
	}
}

// handled acknowledges a handed-on message the handler accepted (err nil),
// or holds its asset back.
func (s *Subscriber) handled(w *worker, it item, a *devices.Asset, res result, err error) {
	if err != nil {
		s.finish(it, false)
		s.count(resultRejected)
		w.held[a.Seq] = it.gen
		s.refusedAt.CompareAndSwap(0, it.recv.UnixNano())
		w.logs.log(s.log, rateKey{resultRejected, a.ID}, it.recv, "handler refused an mqtt reading; not acknowledged", "asset", a.ID, "err", err)
		return
	}
	s.finish(it, true)
	s.count(res)
	s.m.readings[a.Seq].Inc()
}

// decode checks one message and decodes it into r. ok: r is ready to be
// handed on; otherwise the message was dealt with (dropped and
// acknowledged, held back, or stale) and finished.
func (s *Subscriber) decode(w *worker, it item, r *devices.Reading) (_ *devices.Reading, _ result, ok bool) {
	if it.gen != s.gen.Load() {
		// The connection it came on is gone; an ack could not reach the
		// broker, which redelivers the message on the new connection.
		s.stale.Add(1)
		s.finish(it, false)
		return nil, 0, false
	}
	topic := it.msg.Topic()
	var a *devices.Asset
	if it.tmpl >= 0 && s.tmpls[it.tmpl].HasAsset() {
		if it.asset != "" {
			a = s.ids.lookup(it.asset)
		}
	} else {
		a = s.inv.ByTopic(topic)
	}
	switch {
	case it.tmpl < 0:
		s.drop(w, it, resultUnknownAsset, clip(topic), "mqtt message on a topic no template matches", "topic", clip(topic))
		return nil, 0, false
	case a == nil:
		who := it.asset
		if who == "" {
			who = topic
		}
		s.drop(w, it, resultUnknownAsset, clip(who), "mqtt message for an unknown asset", "topic", clip(topic), "asset", clip(it.asset))
		return nil, 0, false
	case a.Profile == nil || a.Profile.Transport != devices.MQTT:
		s.drop(w, it, resultUnknownAsset, a.ID, "mqtt message for an asset that is not read over MQTT", "topic", topic, "asset", a.ID, "profile", a.Model)
		return nil, 0, false
	}
	if g, ok := w.held[a.Seq]; ok {
		if g == it.gen {
			s.count(resultRejected) // behind a refused message of the asset: wait for the redelivery
			s.finish(it, false)
			return nil, 0, false
		}
		delete(w.held, a.Seq)
	}
	if rate := s.cfg.MaxMessagesPerAsset; rate > 0 && !w.allow(a.Seq, it.recv, rate) {
		s.drop(w, it, resultRateLimited, a.ID, "mqtt messages of one asset over the rate cap dropped", "asset", a.ID, "cap_per_second", rate)
		return nil, 0, false
	}
	payload := it.msg.Payload()
	if len(payload) > s.cfg.MaxPayloadBytes {
		s.drop(w, it, resultOversize, a.ID, "mqtt payload over the size limit dropped", "asset", a.ID, "bytes", len(payload), "limit", s.cfg.MaxPayloadBytes)
		return nil, 0, false
	}
	r.Reset(a)
	ts, err := a.Profile.DecodeJSON(payload, r)
	res := resultOK
	if err == nil && r.NumValid() == 0 {
		// Valid JSON without any of the profile's fields: nothing to store
		// (InfluxDB refuses a point without fields).
		err = errors.New("payload carries none of the profile's fields")
	}
	if err != nil {
		res = resultDecodeError
		s.m.decodeErrs[a.Seq].Add(float64(countErrors(err)))
		if r.NumValid() == 0 {
			s.drop(w, it, resultDecodeError, a.ID, "mqtt payload not decodable", "asset", a.ID, "err", err)
			return nil, 0, false
		}
		w.logs.log(s.log, rateKey{resultDecodeError, a.ID}, it.recv, "mqtt payload partly decodable; handing on the good fields", "asset", a.ID, "err", err)
	}
	r.Received = it.recv
	r.Time = it.recv
	if !ts.IsZero() {
		if devices.PlausibleTime(ts, it.recv, s.cfg.MaxClockSkew.D(), s.cfg.MaxClockAge.D()) {
			r.Time = ts
		} else {
			w.logs.log(s.log, rateKey{problemClock, a.ID}, it.recv, "mqtt payload timestamp implausible; using the receive time", "asset", a.ID, "device_time", ts, "received", it.recv)
		}
	}
	return r, res, true
}

// clip bounds text that comes from outside (topics, unknown ids) before it
// goes into a log line or a rate-limit key.
func clip(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// countErrors counts the field errors DecodeJSON joined (1 for a payload error).
func countErrors(err error) int {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return len(j.Unwrap())
	}
	return 1
}

// drop acknowledges a message that cannot be used and will not get better.
func (s *Subscriber) drop(w *worker, it item, res result, who, msg string, attrs ...any) {
	s.finish(it, true)
	s.count(res)
	w.logs.log(s.log, rateKey{res, who}, it.recv, msg, attrs...)
}

func (s *Subscriber) count(r result) {
	s.counts[r].Add(1)
	s.m.messages[r].Inc()
}

// startWorkers starts the decode workers; wait for them with the WaitGroup
// after closing s.quit.
func (s *Subscriber) startWorkers(ctx context.Context, wg *sync.WaitGroup) {
	for _, ch := range s.shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.work(ctx, ch)
		}()
	}
}
