package mqttsub

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

// dial opens the network connection to the broker as paho's built-in dialer
// does (tcp, TLS, websockets), and buffers reads: paho reads every packet
// from the socket unbuffered, its fixed header a byte at a time, which costs
// three or four system calls per message and dominated the CPU profile at
// high rates. (Unlike paho's dialer it does not honour proxy environment
// variables.)
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
	return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, readBufferSize)}, nil
}

// Write coalescing.
const (
	// flushDelay is how long a written packet may wait for company. Acks
	// are the bulk of what the subscriber writes; delaying them a
	// millisecond costs nothing (the broker's in-flight window is far
	// larger than a millisecond of messages) and lets tens of them share
	// one system call at high rates.
	flushDelay = time.Millisecond
	// flushBytes: this much pending is written at once.
	flushBytes = 16 << 10
	// closeFlushTimeout bounds the last flush on Close (paho closes right
	// after writing DISCONNECT) and ends a write stuck on a dead peer.
	closeFlushTimeout = 250 * time.Millisecond
)

// bufferedConn buffers reads and coalesces writes. paho reads from one
// goroutine at a time, unbuffered, the fixed header a byte at a time; and it
// writes every packet, every PUBACK, with its own system call. Writes here
// are appended to a pending buffer that is written flushDelay after the
// first of them (or at once past flushBytes), in order. A write error is
// returned by the next Write (paho then drops the connection; the reader
// notices a dead peer too).
type bufferedConn struct {
	net.Conn
	r *bufio.Reader

	writeMu sync.Mutex // held while writing to Conn: flushes go out in order

	mu      sync.Mutex
	pending []byte
	spare   []byte
	armed   bool  // a delayed flush is scheduled
	err     error // first write error
	closed  bool

	closeOnce sync.Once
	closeErr  error
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *bufferedConn) Write(p []byte) (int, error) {
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
	now := len(c.pending) >= flushBytes
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
		time.AfterFunc(flushDelay, func() { _ = c.flush() })
	}
	return len(p), nil
}

// flush writes what is pending.
func (c *bufferedConn) flush() error {
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
func (c *bufferedConn) Close() error {
	c.closeOnce.Do(func() {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeFlushTimeout)) // also ends a stuck flush
		_ = c.flush()
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.closeErr = c.Conn.Close()
	})
	return c.closeErr
}
