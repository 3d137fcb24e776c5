package citybench

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a child process of the benchmark. Its stdout and stderr go to
// a log file in the run's directory; the last complete line of each is kept
// for progress parsing.
type Process struct {
	Name    string // short name for tables and messages: mosquitto, influxd, gateway, …
	Path    string
	Args    []string
	Env     []string // added to the benchmark's environment
	LogFile string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	state  *os.ProcessState
	log    *os.File
	stdout lastLine
	stderr lastLine
}

// lastLine is an io.Writer that copies to w and remembers the last complete
// line written.
type lastLine struct {
	mu   sync.Mutex
	w    *os.File
	part []byte
	last string
	all  bytes.Buffer // only when keepAll
	keep bool
}

func (l *lastLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w != nil {
		l.w.Write(p)
	}
	if l.keep {
		l.all.Write(p)
	}
	l.part = append(l.part, p...)
	if i := bytes.LastIndexByte(l.part, '\n'); i >= 0 {
		lines := l.part[:i]
		if j := bytes.LastIndexByte(lines, '\n'); j >= 0 {
			lines = lines[j+1:]
		}
		l.last = string(lines)
		l.part = append(l.part[:0], l.part[i+1:]...)
	}
	return len(p), nil
}

func (l *lastLine) get() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Start starts the process in its own process group.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s already started", p.Name)
	}
	f, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	fmt.Fprintf(f, "=== %s %s %s\n", time.Now().Format(time.RFC3339Nano), p.Path, strings.Join(p.Args, " "))
	p.log = f
	p.stdout.w, p.stderr.w = f, f
	p.stdout.keep = true
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = &p.stdout, &p.stderr
	// Its own process group, so that Stop reaches its children too; killed
	// with the benchmark if the benchmark dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	go func() {
		cmd.Wait()
		p.mu.Lock()
		p.state = cmd.ProcessState
		p.mu.Unlock()
		close(p.done)
	}()
	return nil
}

// Pid returns the process id (0 before Start).
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Exited reports whether the process ended.
func (p *Process) Exited() bool {
	select {
	case <-p.doneChan():
		return true
	default:
		return false
	}
}

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

// Wait waits up to timeout for the process to exit by itself and returns its
// exit error.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.doneChan():
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %v", p.Name, timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != nil && !p.state.Success() {
		return fmt.Errorf("%s: %v (log %s)", p.Name, p.state, p.LogFile)
	}
	return nil
}

// Stop sends SIGTERM to the process group, waits up to 20 s, then SIGKILL.
func (p *Process) Stop() {
	pid := p.Pid()
	if pid == 0 || p.Exited() {
		p.closeLog()
		return
	}
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-p.doneChan():
	case <-time.After(20 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-p.doneChan()
	}
	p.closeLog()
}

func (p *Process) closeLog() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.log != nil {
		p.log.Close()
		p.log = nil
	}
}

// LastStdout and LastStderr return the last complete line of each stream.
func (p *Process) LastStdout() string { return p.stdout.get() }
func (p *Process) LastStderr() string { return p.stderr.get() }

// Stdout returns everything the process wrote on stdout.
func (p *Process) Stdout() string {
	p.stdout.mu.Lock()
	defer p.stdout.mu.Unlock()
	return p.stdout.all.String()
}

// Usage returns the CPU seconds and peak RSS of a process that exited, from
// the kernel's rusage (the whole life of the process).
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

// CPUSample is a process's cumulative CPU time and peak RSS at one moment,
// from /proc.
type CPUSample struct {
	At      time.Time
	CPU     float64 // seconds of user + system time since the process started
	PeakRSS int64   // bytes (VmHWM)
}

// clkTck is USER_HZ, the unit of /proc/PID/stat's times: 100 on every Linux
// architecture Go supports.
const clkTck = 100

// SampleProc reads /proc/PID/stat (utime, stime) and /proc/PID/status
// (VmHWM).
func SampleProc(pid int) (CPUSample, error) {
	s := CPUSample{At: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	s.CPU = float64(ut+st) / clkTck
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return s, fmt.Errorf("/proc/%d/status VmHWM: %w", pid, err)
			}
			s.PeakRSS = kb * 1024
		}
	}
	return s, nil
}

// LookTool finds an executable on PATH, in the tools directory
// ($CITYGW_TOOLS, default ~/.cache/citygw/bin, where scripts/tools.sh
// installs influxd and telegraf) or in /usr/sbin.
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

// ToolsDir is $CITYGW_TOOLS or ~/.cache/citygw/bin.
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

// FreePort returns a loopback TCP port that was free a moment ago.
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
