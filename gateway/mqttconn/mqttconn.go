// Package mqttconn is the network connection under citygw's paho MQTT
// clients (the gateway's subscriber, the simulator's load generator and
// counter). paho reads every packet from the socket unbuffered, its fixed
// header a byte at a time, and writes every packet, every PUBACK, with its
// own system call: three or four system calls per message, which dominated
// the CPU profiles at high rates. A Conn buffers the reads and coalesces
// the writes for up to a millisecond.
package mqttconn

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// readBufferSize is the read buffer in front of the broker connection.
const readBufferSize = 64 << 10

// Dialer returns a paho connection function (for
// ClientOptions.SetCustomOpenConnectionFn) that opens the connection as
// paho's built-in dialer does and wraps it in a Conn writing at once past
// flushBytes of pending packets (DefaultFlushBytes when 0).
func Dialer(flushBytes int) mqtt.OpenConnectionFunc {
	return func(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
		c, err := Dial(uri, o, flushBytes)
		if err != nil {
			return nil, err // not a nil *Conn in a non-nil net.Conn
		}
		return c, nil
	}
}

// Dial opens a connection as Dialer's function does, for a client that
// keeps the Conn (to wait for its Done).
func Dial(uri *url.URL, o mqtt.ClientOptions, flushBytes int) (*Conn, error) {
	c, err := dial(uri, o)
	if err != nil {
		return nil, err
	}
	return New(c, flushBytes), nil
}

// New wraps an open broker connection: reads buffered, writes coalesced
// for up to FlushDelay or flushBytes.
func New(c net.Conn, flushBytes int) *Conn {
	if flushBytes <= 0 {
		flushBytes = DefaultFlushBytes
	}
	return &Conn{Conn: c, r: bufio.NewReaderSize(c, readBufferSize), flushBytes: flushBytes, done: make(chan struct{})}
}

// dial opens the network connection to the broker as paho's built-in dialer
// does (tcp, TLS, websockets). (Unlike paho's dialer it does not honour
// proxy environment variables.)
func dial(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	d := &net.Dialer{Timeout: o.ConnectTimeout}
	var conn net.Conn
	var err error
	switch uri.Scheme {
	case "tcp", "mqtt":
		conn, err = d.Dial("tcp", uri.Host)
	case "ssl", "tls", "mqtts", "tcps":
		conn, err = tls.DialWithDialer(d, "tcp", uri.Host, o.TLSConfig)
	case "ws", "wss":
		u := *uri
		u.User = nil
		var tlsc *tls.Config
		if uri.Scheme == "wss" {
			tlsc = o.TLSConfig
		}
		conn, err = mqtt.NewWebsocket(u.String(), tlsc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	default:
		return nil, fmt.Errorf("unsupported broker scheme %q", uri.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// Write coalescing.
const (
	// FlushDelay is how long a written packet may wait for company. Acks
	// are the bulk of what the subscriber writes; delaying them a
	// millisecond costs nothing (the broker's in-flight window is far
	// larger than a millisecond of messages) and lets tens of them share
	// one system call at high rates.
	FlushDelay = time.Millisecond
	// DefaultFlushBytes: this much pending is written at once.
	DefaultFlushBytes = 16 << 10
	// closeFlushTimeout bounds the last flush on Close (paho closes right
	// after writing DISCONNECT) and ends a write stuck on a dead peer.
	closeFlushTimeout = 250 * time.Millisecond
)

// Conn buffers reads and coalesces writes. paho reads from one
// goroutine at a time, unbuffered, the fixed header a byte at a time; and it
// writes every packet, every PUBACK, with its own system call. Writes here
// are appended to a pending buffer that is written flushDelay after the
// first of them (or at once past its flushBytes), in order. A write error is
// returned by the next Write (paho then drops the connection; the reader
// notices a dead peer too).
type Conn struct {
	net.Conn
	r          *bufio.Reader
	flushBytes int

	writeMu sync.Mutex // held while writing to Conn: flushes go out in order

	mu      sync.Mutex
	pending []byte
	spare   []byte
	armed   bool  // a delayed flush is scheduled
	err     error // first write error
	closed  bool

	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed once Close has flushed and closed
}

func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil || c.closed {
		err := c.err
		c.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return 0, err
	}
	c.pending = append(c.pending, p...)
	now := len(c.pending) >= c.flushBytes
	arm := !now && !c.armed
	if arm {
		c.armed = true
	}
	c.mu.Unlock()
	if now {
		if err := c.flush(); err != nil {
			return 0, err
		}
	} else if arm {
		time.AfterFunc(FlushDelay, func() { _ = c.flush() })
	}
	return len(p), nil
}

// flush writes what is pending.
func (c *Conn) flush() error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	out := c.pending
	c.pending, c.spare = c.spare[:0], nil
	c.armed = false
	err := c.err
	c.mu.Unlock()
	if err == nil && len(out) > 0 {
		_, err = c.Conn.Write(out)
	}
	c.mu.Lock()
	c.spare = out[:0]
	if err != nil && c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	return err
}

// Close writes what is pending (within closeFlushTimeout) and closes.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout)) // also ends a stuck flush
		_ = c.flush()
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.closeErr = c.Conn.Close()
		close(c.done)
	})
	return c.closeErr
}

// Done is closed once the connection is closed, after what was pending was
// written (or failed to be). paho's Disconnect returns after its quiesce
// time even when its own goroutine has not closed the connection yet; a
// client that must not exit before its last acknowledgements and its
// DISCONNECT went out waits for Done.
func (c *Conn) Done() <-chan struct{} { return c.done }
