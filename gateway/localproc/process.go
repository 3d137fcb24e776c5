package localproc

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers: a
// Tee for a child's two output streams, or a logger's output read by
// whoever watches it.
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

// DefaultStopGrace is how long Stop waits after SIGTERM before SIGKILL when
// Process.StopGrace is zero.
const DefaultStopGrace = 10 * time.Second

// Process is a child process in its own process group (so that Stop reaches
// its children too). Set the exported fields before Start. Its output goes
// to LogFile and Tee when set; the last complete line of stdout and of
// stderr, and all of stdout, are kept for reading progress and summaries.
// After it stopped or exited it can be started again with the same fields
// (an outage, a crash and restart).
type Process struct {
	Name string   // in messages; filepath.Base(Path) when empty
	Path string   // the executable
	Args []string // its arguments
	Dir  string   // working directory; the caller's when empty
	Env  []string // added to the caller's environment

	LogFile string    // when set, both streams are appended to this file
	Tee     io.Writer // when set, both streams are copied here too, with a line at each start and stop

	StopGrace      time.Duration // Stop's wait between SIGTERM and SIGKILL; DefaultStopGrace when zero
	KillWithParent bool          // SIGKILL the child when the caller dies (Linux's parent-death signal)

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{} // closed when the current run exited
	state *os.ProcessState

	outMu  sync.Mutex // the streams, log and Tee
	log    *os.File
	stdout stream
	stderr stream
}

// stream is one of the child's output streams: copied to the log and Tee,
// its last complete line remembered, and everything kept when all is set.
type stream struct {
	p    *Process
	keep bool
	part []byte // after the last newline
	last string
	all  bytes.Buffer
}

func (s *stream) Write(b []byte) (int, error) {
	p := s.p
	p.outMu.Lock()
	defer p.outMu.Unlock()
	p.writeSinks(b)
	if s.keep {
		s.all.Write(b)
	}
	s.part = append(s.part, b...)
	if i := bytes.LastIndexByte(s.part, '\n'); i >= 0 {
		lines := s.part[:i]
		if j := bytes.LastIndexByte(lines, '\n'); j >= 0 {
			lines = lines[j+1:]
		}
		s.last = string(lines)
		s.part = append(s.part[:0], s.part[i+1:]...)
	}
	return len(b), nil
}

// writeSinks writes to the log and Tee; outMu is held. Their errors are
// the child's output lost, not the child's failure: ignored.
func (p *Process) writeSinks(b []byte) {
	if p.log != nil {
		p.log.Write(b)
	}
	if p.Tee != nil {
		p.Tee.Write(b)
	}
}

// note writes one of our own lines (start, stop) to the log and Tee.
func (p *Process) note(format string, args ...any) {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	p.writeSinks([]byte(fmt.Sprintf("=== "+time.Now().Format(time.RFC3339Nano)+" "+format+"\n", args...)))
}

func (p *Process) name() string {
	if p.Name != "" {
		return p.Name
	}
	return filepath.Base(p.Path)
}

// Start starts the process; it fails when it is running already.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !closed(p.done) {
		return fmt.Errorf("%s already running", p.name())
	}
	p.outMu.Lock()
	p.stdout.p, p.stderr.p, p.stdout.keep = p, p, true
	if p.LogFile != "" && p.log == nil {
		f, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			p.outMu.Unlock()
			return fmt.Errorf("starting %s: %w", p.name(), err)
		}
		p.log = f
	}
	p.outMu.Unlock()
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Dir = p.Dir
	if p.Env != nil {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	cmd.Stdout, cmd.Stderr = &p.stdout, &p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.KillWithParent {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		p.closeLog()
		return fmt.Errorf("starting %s: %w", p.name(), err)
	}
	p.note("started %s %s (pid %d)", p.Path, strings.Join(p.Args, " "), cmd.Process.Pid)
	done := make(chan struct{})
	p.cmd, p.done, p.state = cmd, done, nil
	go func() {
		cmd.Wait()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// doneChan is closed when the current run exited (at once before Start).
func (p *Process) doneChan() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

// Pid returns the process id of the current or last run (0 before Start).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited reports whether the process is not running: never started, or
// its last run ended.
func (p *Process) Exited() bool { return closed(p.doneChan()) }

// Running reports whether the process is started and has not exited.
func (p *Process) Running() bool { return !p.Exited() }

// Wait waits up to timeout for the process to exit by itself and returns
// its exit error (nil when it exited with status 0 or was never started).
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.doneChan():
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %v", p.name(), timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != nil && !p.state.Success() {
		if p.LogFile != "" {
			return fmt.Errorf("%s: %v (log %s)", p.name(), p.state, p.LogFile)
		}
		return fmt.Errorf("%s: %v", p.name(), p.state)
	}
	return nil
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	pid := p.Pid()
	if pid == 0 || p.Exited() {
		return fmt.Errorf("%s not running", p.name())
	}
	return syscall.Kill(-pid, sig)
}

// Stop sends SIGTERM to the process group, waits up to StopGrace, then
// SIGKILL, and closes the log. A process not running is left alone.
func (p *Process) Stop() { p.stop(syscall.SIGTERM) }

// Kill sends SIGKILL (a crash, not a shutdown) and waits for the exit.
func (p *Process) Kill() { p.stop(syscall.SIGKILL) }

func (p *Process) stop(sig syscall.Signal) {
	defer p.closeLog()
	pid, done := p.Pid(), p.doneChan()
	if pid == 0 || closed(done) {
		return
	}
	grace := p.StopGrace
	if grace <= 0 {
		grace = DefaultStopGrace
	}
	syscall.Kill(-pid, sig)
	select {
	case <-done:
	case <-time.After(grace):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-done
	}
	p.note("stopped %s with %v", p.name(), sig)
}

func (p *Process) closeLog() {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	if p.log != nil {
		p.log.Close()
		p.log = nil
	}
}

// LastStdout and LastStderr return the last complete line of each stream.
func (p *Process) LastStdout() string { return p.last(&p.stdout) }
func (p *Process) LastStderr() string { return p.last(&p.stderr) }

func (p *Process) last(s *stream) string {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	return s.last
}

// Stdout returns everything the process wrote on stdout, over all its runs.
func (p *Process) Stdout() string {
	p.outMu.Lock()
	defer p.outMu.Unlock()
	return p.stdout.all.String()
}

// Usage returns the CPU seconds and peak RSS of a run that exited, from the
// kernel's rusage (the whole life of the process); ok is false while it
// runs or before it started.
func (p *Process) Usage() (cpu float64, peakRSS int64, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == nil {
		return 0, 0, false
	}
	cpu = (p.state.UserTime() + p.state.SystemTime()).Seconds()
	if ru, ok := p.state.SysUsage().(*syscall.Rusage); ok {
		peakRSS = ru.Maxrss * 1024 // kilobytes on Linux
	}
	return cpu, peakRSS, true
}
