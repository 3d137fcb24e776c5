package mqttsub

import (
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// discardStore is paho's message store for the subscriber: it keeps
// nothing. paho's default in-memory store puts every incoming QoS 1
// PUBLISH in a locked map and deletes it when the PUBACK goes out (with a
// debug line boxed per delete), 5.6% of the gateway's CPU in the city
// benchmark's burst; it is there to resend a client's own unacknowledged
// PUBLISH, SUBSCRIBE and QoS 2 state after a reconnect. The subscriber
// publishes nothing, subscribes again on every connect (SetResumeSubs
// false, see run.go) and takes QoS 0 and 1 only; an incoming message it
// has not acknowledged when the connection drops is the broker's to
// deliver again, from the persistent session — the store in memory would
// not outlive the process anyway.
type discardStore struct{}

var _ mqtt.Store = discardStore{}

func (discardStore) Open()                             {}
func (discardStore) Put(string, packets.ControlPacket) {}
func (discardStore) Get(string) packets.ControlPacket  { return nil }
func (discardStore) All() []string                     { return nil }
func (discardStore) Del(string)                        {}
func (discardStore) Close()                            {}
func (discardStore) Reset()                            {}
