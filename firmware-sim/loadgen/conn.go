package loadgen

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// paho reads every packet unbuffered (its fixed header a byte at a time) and
// writes every packet with its own system call: three or four system calls
// per message, which dominated the publisher's and the counter's CPU. Both
// dial through dial instead: reads are buffered and writes coalesced for up
// to flushDelay (the in-flight window is far larger than a millisecond of
// messages, so the delay costs no throughput). citygw's subscriber does the
// same (gateway/mqttsub/conn.go), so the ceiling is measured on equal terms.
const (
	readBuffer = 64 << 10
	flushDelay = time.Millisecond
	flushBytes = 32 << 10
)

// dial opens a tcp:// (or mqtt://) broker connection with buffering.
func dial(uri *url.URL, o mqtt.ClientOptions) (net.Conn, error) {
	switch uri.Scheme {
	case "tcp", "mqtt":
	default:
		return nil, fmt.Errorf("broker scheme %q: the load generator speaks plain tcp:// only", uri.Scheme)
	}
	c, err := (&net.Dialer{Timeout: o.ConnectTimeout}).Dial("tcp", uri.Host)
	if err != nil {
		return nil, err
	}
	return &bufConn{Conn: c, r: bufio.NewReaderSize(c, readBuffer)}, nil
}

// bufConn buffers reads and coalesces writes: a Write appends to pending,
// which is written flushDelay after the first append, or at once past
// flushBytes. The first write error is returned by the next Write.
type bufConn struct {
	net.Conn
	r *bufio.Reader

	writeMu sync.Mutex // serialises writes to Conn, keeping their order

	mu      sync.Mutex
	pending []byte
	spare   []byte
	armed   bool
	err     error
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *bufConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
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
		time.AfterFunc(flushDelay, func() { c.flush() })
	}
	return len(p), nil
}

// flush writes what is pending.
func (c *bufConn) flush() error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	buf := c.pending
	c.pending, c.spare = c.spare[:0], nil
	c.armed = false
	c.mu.Unlock()
	var err error
	if len(buf) > 0 {
		_, err = c.Conn.Write(buf)
	}
	c.mu.Lock()
	if err != nil && c.err == nil {
		c.err = err
	}
	c.spare = buf[:0]
	err = c.err
	c.mu.Unlock()
	return err
}

// Close writes what is pending (paho closes right after DISCONNECT), then
// closes.
func (c *bufConn) Close() error {
	c.Conn.SetWriteDeadline(time.Now().Add(250 * time.Millisecond))
	c.flush()
	return c.Conn.Close()
}
