// Package testenv starts the real third-party processes citygw's integration
// tests run against (Mosquitto, InfluxDB 1.8.10) and citygw's own binaries,
// each on a free loopback port in a temporary directory, stopped when the test
// ends. It is imported only by tests.
//
// Tools are looked up on PATH and in the tools directory ($CITYGW_TOOLS, by
// default $HOME/.cache/citygw/bin), where `make tools` puts the influxd it
// builds. A missing tool fails the test with the command that installs it.
package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ToolsDir is where `make tools` installs binaries that are not on PATH.
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

// LookTool finds an executable on PATH, in ToolsDir, or in /usr/sbin (Debian
// installs mosquitto there, often not on a user's PATH).
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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
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

// Process is a child process whose output is kept for the test log.
type Process struct {
	Name string
	Args []string
	Dir  string
	Env  []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *SyncBuffer
	done chan struct{}
	t    testing.TB
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers: a
// child's two output streams, or a test's logger and its assertions.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartProcess starts name with args; it is killed when the test ends and its
// output is logged if the test failed.
func StartProcess(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Args: args, t: t, out: &SyncBuffer{}}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			out := p.Output()
			if len(out) > 20000 {
				out = "…" + out[len(out)-20000:]
			}
			t.Logf("output of %s:\n%s", filepath.Base(p.Name), out)
		}
	})
	return p
}

// Start (re)starts the process.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s already running", p.Name)
	}
	cmd := exec.Command(p.Name, p.Args...)
	cmd.Dir = p.Dir
	if p.Env != nil {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	fmt.Fprintf(p.out, "=== started %s %s (pid %d)\n", filepath.Base(p.Name), strings.Join(p.Args, " "), cmd.Process.Pid)
	p.cmd = cmd
	p.done = make(chan struct{})
	go func(done chan struct{}) {
		cmd.Wait()
		close(done)
	}(p.done)
	return nil
}

// Running reports whether the process is started and has not exited.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Pid returns the process id, or 0.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%s not running", p.Name)
	}
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Stop sends SIGTERM, waits up to 10 s, then SIGKILL.
func (p *Process) Stop() { p.stop(syscall.SIGTERM, 10*time.Second) }

// Kill sends SIGKILL (a crash, not a shutdown) and waits for the exit.
func (p *Process) Kill() { p.stop(syscall.SIGKILL, 10*time.Second) }

func (p *Process) stop(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-done:
	case <-time.After(grace):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	fmt.Fprintf(p.out, "=== stopped %s with %v\n", filepath.Base(p.Name), sig)
}

// Wait waits for the process to exit by itself.
func (p *Process) Wait(timeout time.Duration) error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %v", p.Name, timeout)
	}
}

// Output returns everything the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// WaitOutput waits until the output contains s.
func (p *Process) WaitOutput(s string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Output(), s) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not print %q within %v", filepath.Base(p.Name), s, timeout)
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
