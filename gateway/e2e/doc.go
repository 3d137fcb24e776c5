// Package e2e holds citygw's end-to-end tests: real Mosquitto and InfluxDB
// 1.8.10 processes on free loopback ports, the firmware-sim binary playing a
// small city, and the gateway binary (built with -race) between them. The
// tests compare what reached InfluxDB with the simulator's ground truth.
//
// Run them alone with `make e2e`, or:
//
//	go test -race -count=1 -v -run TestEndToEnd ./gateway/e2e
//
// They need mosquitto and influxd (`make tools` installs both).
package e2e
