// Package modbuspoll polls Modbus TCP and RTU devices with
// github.com/goburrow/modbus and hands decoded readings to a Handler.
//
// Plan turns a device profile into as few read requests as the protocol and
// device caps allow. A Poller runs one goroutine per endpoint (a TCP host:port
// or a serial line); the devices behind an endpoint share its connection and
// are polled in turn, each on its own schedule, so that different endpoints
// never wait for each other and a dead unit costs its neighbours at most one
// timeout per backoff period (two on RTU). Replies are checked against their
// requests (ids, function, byte count, length, CRC) and a reply that may
// leave the connection out of step makes the poller resynchronise.
package modbuspoll
