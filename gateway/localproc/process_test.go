package localproc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func sh(script string) *Process {
	return &Process{Path: "/bin/sh", Args: []string{"-c", script}}
}

func TestProcessOutput(t *testing.T) {
	p := sh(`echo out1; echo err1 >&2; printf 'out2\nout3\npart'; echo err2 >&2`)
	p.LogFile = filepath.Join(t.TempDir(), "p.log")
	tee := &SyncBuffer{}
	p.Tee = tee
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := p.LastStdout(); got != "out3" {
		t.Errorf("LastStdout = %q, want out3 (the last complete line)", got)
	}
	if got := p.LastStderr(); got != "err2" {
		t.Errorf("LastStderr = %q, want err2", got)
	}
	if got, want := p.Stdout(), "out1\nout2\nout3\npart"; got != want {
		t.Errorf("Stdout = %q, want %q", got, want)
	}
	p.Stop() // closes the log
	log, err := os.ReadFile(p.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, sink := range []struct{ name, text string }{{"log", string(log)}, {"tee", tee.String()}} {
		for _, want := range []string{"started /bin/sh -c", "out1\n", "err1\n", "err2\n", "part"} {
			if !strings.Contains(sink.text, want) {
				t.Errorf("%s lacks %q:\n%s", sink.name, want, sink.text)
			}
		}
	}
}

// TestLastLine feeds a stream pieces of output: its last line is the last
// complete one, whatever the pieces.
func TestLastLine(t *testing.T) {
	p := &Process{}
	s := &stream{p: p}
	for _, c := range []struct{ write, want string }{
		{"abc", ""}, {"def\nghi", "abcdef"}, {"\n", "ghi"}, {"x\ny\nz", "y"}, {"\n\n", ""},
	} {
		s.Write([]byte(c.write))
		if got := p.last(s); got != c.want {
			t.Errorf("after %q: last line %q, want %q", c.write, got, c.want)
		}
	}
}

func TestProcessWait(t *testing.T) {
	for _, tc := range []struct {
		script  string
		timeout time.Duration
		want    string // in the error; "" for none
	}{
		{"exit 0", 10 * time.Second, ""},
		{"exit 3", 10 * time.Second, "exit status 3"},
		{"sleep 30", 200 * time.Millisecond, "still running"},
	} {
		t.Run(tc.script, func(t *testing.T) {
			p := sh(tc.script)
			if err := p.Start(); err != nil {
				t.Fatal(err)
			}
			defer p.Stop()
			err := p.Wait(tc.timeout)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Wait: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Wait: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestProcessNotStarted(t *testing.T) {
	p := sh("exit 0")
	if !p.Exited() || p.Running() || p.Pid() != 0 {
		t.Errorf("before Start: Exited %v Running %v Pid %d", p.Exited(), p.Running(), p.Pid())
	}
	if err := p.Wait(time.Second); err != nil {
		t.Errorf("Wait before Start: %v", err)
	}
	if err := p.Signal(syscall.SIGTERM); err == nil {
		t.Error("Signal before Start succeeded")
	}
	if _, _, ok := p.Usage(); ok {
		t.Error("Usage before Start is ok")
	}
	p.Stop() // no-op
}

// TestProcessStopRestart stops a process whose shell has a child (the
// process group is signalled: the child goes too), starts it again, and
// refuses a second Start while it runs.
func TestProcessStopRestart(t *testing.T) {
	p := sh(`sleep 300 & echo child $!; wait`)
	p.StopGrace = 5 * time.Second
	for run := 1; run <= 2; run++ {
		if err := p.Start(); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if err := p.Start(); err == nil || !strings.Contains(err.Error(), "already running") {
			t.Fatalf("run %d: second Start: %v", run, err)
		}
		child := waitChild(t, p, run)
		if !p.Running() || p.Pid() == 0 {
			t.Fatalf("run %d: not running after Start", run)
		}
		p.Stop()
		if !p.Exited() {
			t.Fatalf("run %d: still running after Stop", run)
		}
		if err := syscall.Kill(child, 0); !errors.Is(err, syscall.ESRCH) {
			// A zombie until reaped by init: give it a moment.
			deadline := time.Now().Add(5 * time.Second)
			for !gone(child) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if !gone(child) {
				t.Fatalf("run %d: the shell's child %d survived Stop", run, child)
			}
		}
		if _, _, ok := p.Usage(); !ok {
			t.Errorf("run %d: no Usage after Stop", run)
		}
	}
}

// waitChild returns the pid the script printed in its run-th life.
func waitChild(t *testing.T, p *Process, run int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines := strings.Fields(p.Stdout())
		if len(lines) >= 2*run {
			pid, err := strconv.Atoi(lines[2*run-1])
			if err != nil {
				t.Fatal(err)
			}
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no child pid printed: %q", p.Stdout())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gone reports whether pid no longer runs (gone, or a zombie).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func TestProcessKillAndSignal(t *testing.T) {
	// The shell ignores SIGTERM: Stop would need its grace; Kill does not.
	p := sh(`trap '' TERM; echo ready; while :; do sleep 0.05; done`)
	p.StopGrace = time.Hour
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.LastStdout() != "ready" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(300 * time.Millisecond); err == nil {
		t.Fatal("the shell exited on an ignored SIGTERM")
	}
	p.Kill()
	if !p.Exited() {
		t.Fatal("running after Kill")
	}
	if err := p.Signal(syscall.SIGTERM); err == nil {
		t.Error("Signal after Kill succeeded")
	}
}

func TestStartMissing(t *testing.T) {
	p := &Process{Path: filepath.Join(t.TempDir(), "nothing"), LogFile: filepath.Join(t.TempDir(), "log")}
	if err := p.Start(); err == nil || !strings.Contains(err.Error(), "starting nothing") {
		t.Fatalf("Start: %v", err)
	}
	if !p.Exited() {
		t.Error("a process that failed to start is running")
	}
}

func TestLookTool(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CITYGW_TOOLS", dir)
	t.Setenv("PATH", t.TempDir())
	tool := filepath.Join(dir, "citygw-fake-tool")
	if err := os.WriteFile(tool, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "not-executable"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if ToolsDir() != dir {
		t.Fatalf("ToolsDir = %s, want %s", ToolsDir(), dir)
	}
	for _, tc := range []struct {
		name, want string
	}{
		{"citygw-fake-tool", tool},
		{"not-executable", ""},
		{"citygw-no-such-tool", ""},
	} {
		got, err := LookTool(tc.name)
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("LookTool(%s) = %q, %v; want %q", tc.name, got, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), dir) {
			t.Errorf("LookTool(%s): %v does not name the tools directory", tc.name, err)
		}
	}
}

func TestFreePortWaitTCP(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := WaitTCP(addr, 100*time.Millisecond); err == nil {
		t.Fatalf("WaitTCP(%s) found a listener on a free port", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := WaitTCP(addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
