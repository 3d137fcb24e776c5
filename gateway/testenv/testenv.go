// Package testenv starts the real third-party processes citygw's integration
// tests run against (Mosquitto, InfluxDB 1.8.10) and citygw's own binaries,
// each on a free loopback port in a temporary directory, stopped when the test
// ends. It is imported only by tests.
//
// Tools are looked up on PATH and in the tools directory ($CITYGW_TOOLS, by
// default $HOME/.cache/citygw/bin), where `make tools` puts the influxd it
// builds. A missing tool fails the test with the command that installs it.
//
// The work itself (tools, ports, child processes, influxd's configuration)
// is gateway/localproc's, shared with the city benchmark; testenv adds what
// a test needs: failing it, cleaning up when it ends, logging output.
package testenv

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/citygw/citygw/gateway/localproc"
)

// ToolsDir is where `make tools` installs binaries that are not on PATH
// ($CITYGW_TOOLS, by default $HOME/.cache/citygw/bin).
func ToolsDir() string { return localproc.ToolsDir() }

// LookTool finds an executable on PATH, in ToolsDir, or in /usr/sbin (Debian
// installs mosquitto there, often not on a user's PATH).
func LookTool(name string) (string, error) { return localproc.LookTool(name) }

// RequireTool returns the tool's path or fails the test saying how to install it.
func RequireTool(t testing.TB, name, install string) string {
	t.Helper()
	p, err := LookTool(name)
	if err != nil {
		t.Fatalf("%v; install it with: %s (or run `make tools`)", err, install)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := localproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// WaitTCP waits until something accepts connections on addr.
func WaitTCP(addr string, timeout time.Duration) error { return localproc.WaitTCP(addr, timeout) }

// Process is a child process (see localproc.Process: Start, Stop, Kill,
// Signal, Running, Pid, and the fields Dir and Env to change before a
// Start) whose output is kept for the test log.
type Process struct {
	*localproc.Process
	out *SyncBuffer
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers: a
// child's two output streams, or a test's logger and its assertions.
type SyncBuffer = localproc.SyncBuffer

// StartProcess starts name with args; it is killed when the test ends and its
// output is logged if the test failed.
func StartProcess(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	p := watch(t, &localproc.Process{Path: name, Args: args})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	return p
}

// watch keeps lp's output for the test (lp not started yet): stopped when
// the test ends, its output logged if the test failed.
func watch(t testing.TB, lp *localproc.Process) *Process {
	p := &Process{Process: lp, out: &SyncBuffer{}}
	lp.Tee = p.out
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			out := p.Output()
			if len(out) > 20000 {
				out = "…" + out[len(out)-20000:]
			}
			t.Logf("output of %s:\n%s", filepath.Base(p.Path), out)
		}
	})
	return p
}

// Wait waits for the process to exit by itself; how it exited does not
// matter here (its output tells).
func (p *Process) Wait(timeout time.Duration) error {
	if err := p.Process.Wait(timeout); err != nil && p.Running() {
		return err
	}
	return nil
}

// Output returns everything the process printed so far, over all its runs,
// with a line at each start and stop.
func (p *Process) Output() string { return p.out.String() }

// WaitOutput waits until the output contains s.
func (p *Process) WaitOutput(s string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Output(), s) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not print %q within %v", filepath.Base(p.Path), s, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

var buildMu sync.Mutex

// BuildBinary builds the main package pkg (an import path such as
// github.com/citygw/citygw/firmware-sim) into dir and returns its path. With
// race true it builds with -race.
func BuildBinary(t testing.TB, pkg, dir string, race bool) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	out := filepath.Join(dir, filepath.Base(pkg))
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, pkg)
	cmd := exec.Command("go", args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}
