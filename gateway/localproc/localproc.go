// Package localproc starts and watches the local helper processes and tools
// that citygw's tests and benchmarks run against (Mosquitto, InfluxDB 1.8,
// firmware-sim, citygw's own binaries): finding a tool, picking a free
// loopback port, starting a child in its own process group with its output
// kept, stopping it, and waiting for a server to listen.
//
// It does not import "testing": gateway/testenv wraps it for tests (failing
// the test, cleaning up when it ends), and gateway/citybench, which is linked
// into a command, uses it directly.
package localproc

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// How missing tools are installed, for the messages that report them.
const (
	MosquittoInstall = "apt-get install -y mosquitto mosquitto-clients"
	InfluxDBInstall  = "bash scripts/tools.sh (or GOBIN=${CITYGW_TOOLS:-$HOME/.cache/citygw/bin} go install github.com/influxdata/influxdb/cmd/influxd@v1.8.10)"
)

// ToolsDir is where scripts/tools.sh (`make tools`) installs binaries that
// are not on PATH: $CITYGW_TOOLS, by default $HOME/.cache/citygw/bin.
func ToolsDir() string {
	if d := os.Getenv("CITYGW_TOOLS"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".tools"
	}
	return filepath.Join(home, ".cache", "citygw", "bin")
}

// LookTool finds an executable on PATH, in ToolsDir, or in /usr/sbin or
// /usr/local/sbin (Debian installs mosquitto there, often not on a user's
// PATH).
func LookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{ToolsDir(), "/usr/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH, in %s or /usr/sbin", name, ToolsDir())
}

// RequireTool is LookTool, failing with how to install the tool.
func RequireTool(name, install string) (string, error) {
	p, err := LookTool(name)
	if err != nil {
		return "", fmt.Errorf("%w; install it with: %s", err, install)
	}
	return p, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitTCP waits until something accepts connections on addr.
func WaitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %v: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
