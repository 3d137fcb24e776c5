package mqttconn

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestConnKeepsOrderAndFlushesOnClose(t *testing.T) {
	raw, peer := tcpPair(t)
	c := New(raw, DefaultFlushBytes)
	var want bytes.Buffer
	for i := range 5000 {
		// Small packets like PUBACKs, and now and then a big one that is
		// written at once, overtaking nothing.
		p := []byte(fmt.Sprintf("<%d>", i))
		if i%1000 == 999 {
			p = bytes.Repeat([]byte{'x'}, DefaultFlushBytes+1)
		}
		want.Write(p)
		if n, err := c.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write %d: %d, %v", i, n, err)
		}
	}
	// The last packets are still pending (no FlushDelay passed yet when
	// written): Close must send them before closing.
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(peer)
		done <- b
	}()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := <-done
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("peer got %d bytes, want %d (order or content differs)", len(got), want.Len())
	}
	if _, err := c.Write([]byte("late")); err == nil {
		t.Error("Write after Close succeeded")
	}
}

func TestConnFlushesAloneAfterTheDelay(t *testing.T) {
	raw, peer := tcpPair(t)
	c := New(raw, DefaultFlushBytes)
	if _, err := c.Write([]byte{0x40, 0x02, 0x00, 0x01}); err != nil { // a PUBACK
		t.Fatal(err)
	}
	// Nothing else is written: the delayed flush must send it by itself.
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(peer, buf); err != nil {
		t.Fatalf("the lone packet never left: %v", err)
	}
}

func TestConnCloseDoesNotHangOnADeadPeer(t *testing.T) {
	raw, _ := tcpPair(t) // the peer never reads
	c := New(raw, DefaultFlushBytes)
	writerDone := make(chan error, 1)
	go func() {
		big := make([]byte, DefaultFlushBytes)
		for {
			if _, err := c.Write(big); err != nil {
				writerDone <- err
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // let the socket buffers fill and a flush block
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung behind a write to a peer that does not read")
	}
	select {
	case err := <-writerDone:
		if err == nil {
			t.Error("writer ended without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Write blocked on the dead peer did not fail after Close")
	}
}

func TestConnReportsWriteErrors(t *testing.T) {
	raw, _ := tcpPair(t)
	c := New(raw, DefaultFlushBytes)
	raw.Close() // broken underneath
	c.Write([]byte("a"))
	if err := c.flush(); err == nil {
		t.Fatal("flush to a closed socket succeeded")
	}
	if _, err := c.Write([]byte("b")); err == nil {
		t.Error("Write after a failed flush succeeded")
	}
}
