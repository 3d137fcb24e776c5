package mqttsub

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"

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

// bufferedConn reads through a buffer; paho reads from one goroutine at a
// time. Writes are left alone: coalescing acknowledgements through a flusher
// goroutine was measured (BenchmarkThroughMosquitto) to save 1.4 to 2.5
// writes per system call at 15k msg/s, about what the goroutine wake-ups
// cost, so it was not kept.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
