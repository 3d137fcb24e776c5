package localproc

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// InfluxDBOptions shape an influxd 1.8 configuration.
type InfluxDBOptions struct {
	// Dir holds the configuration (influxdb.conf) and the meta, data and
	// wal directories.
	Dir string
	// Flux turns the Flux endpoint (/api/v2/query) on.
	Flux bool
	// MaxBodySize is [http] max-body-size in bytes: larger write bodies
	// (after gzip decoding) get 413. 0: not written, influxd's default
	// (25000000).
	MaxBodySize int
	// UnlimitedTagValues writes max-values-per-tag = 0: a city of 126,000
	// assets is 126,000 values of the asset tag, over the default limit of
	// 100,000, and InfluxDB would refuse their points.
	UnlimitedTagValues bool
	// Pprof turns [http] pprof-enabled on: /debug/pprof on the HTTP API's
	// port (loopback only), for profiling influxd under a benchmark.
	Pprof bool
}

// InfluxDBConfig renders influxd's configuration for opts with the HTTP API
// on 127.0.0.1:httpPort and the RPC service on 127.0.0.1:rpcPort: auth,
// reporting, monitoring, continuous queries and most logging off.
func InfluxDBConfig(opts InfluxDBOptions, httpPort, rpcPort int) string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("reporting-disabled = true")
	line("bind-address = \"127.0.0.1:%d\"", rpcPort)
	line("\n[meta]")
	line("  dir = %q", filepath.Join(opts.Dir, "meta"))
	line("  logging-enabled = false")
	line("\n[data]")
	line("  dir = %q", filepath.Join(opts.Dir, "data"))
	line("  wal-dir = %q", filepath.Join(opts.Dir, "wal"))
	line("  query-log-enabled = false")
	if opts.UnlimitedTagValues {
		line("  max-values-per-tag = 0")
	}
	line("\n[monitor]")
	line("  store-enabled = false")
	line("\n[continuous_queries]")
	line("  enabled = false")
	line("  log-enabled = false")
	line("\n[http]")
	line("  enabled = true")
	line("  bind-address = \"127.0.0.1:%d\"", httpPort)
	line("  auth-enabled = false")
	line("  log-enabled = false")
	line("  flux-enabled = %t", opts.Flux)
	line("  pprof-enabled = %t", opts.Pprof)
	if opts.MaxBodySize > 0 {
		line("  max-body-size = %d", opts.MaxBodySize)
	}
	line("\n[logging]")
	line("  level = \"warn\"")
	line("  suppress-logo = true")
	return b.String()
}

// InfluxDB is an influxd 1.8 on free loopback ports with its configuration
// and data in Dir. Stopped and started again it keeps its ports and data
// (an outage).
type InfluxDB struct {
	*Process // influxd run -config Dir/influxdb.conf, not started by NewInfluxDB
	Dir      string
	Port     int // the HTTP API's
	RPCPort  int
}

// NewInfluxDB finds influxd, picks its ports and writes its configuration
// into opts.Dir. It does not start it: set the Process's output fields,
// then Start and WaitReady.
func NewInfluxDB(opts InfluxDBOptions) (*InfluxDB, error) {
	bin, err := RequireTool("influxd", InfluxDBInstall)
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	rpc, err := FreePort()
	if err != nil {
		return nil, err
	}
	file := filepath.Join(opts.Dir, "influxdb.conf")
	if err := os.WriteFile(file, []byte(InfluxDBConfig(opts, port, rpc)), 0o644); err != nil {
		return nil, fmt.Errorf("writing influxd config: %w", err)
	}
	return &InfluxDB{Dir: opts.Dir, Port: port, RPCPort: rpc,
		Process: &Process{Name: "influxd", Path: bin, Args: []string{"run", "-config", file}}}, nil
}

// URL is the HTTP API's base URL, http://127.0.0.1:port.
func (db *InfluxDB) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", db.Port) }

// WaitReady waits until the server answers /ping, failing early when it
// exits.
func (db *InfluxDB) WaitReady(timeout time.Duration) error {
	c := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get(db.URL() + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return nil
			}
			err = fmt.Errorf("/ping: %s", resp.Status)
		}
		if db.Exited() {
			return fmt.Errorf("influxd exited before answering /ping on %s", db.URL())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("influxd did not answer /ping on %s within %v (last error %v)", db.URL(), timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
