package citybench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/citygw/citygw/gateway/localproc"
)

// Process is a child process of the benchmark.
type Process = localproc.Process

// stopGrace is how long a benchmark child has to stop after SIGTERM: influxd
// may flush a large cache.
const stopGrace = 20 * time.Second

// child makes p, not started, a child of the benchmark: killed with the
// benchmark if the benchmark dies, stopGrace to stop. Its output goes to
// p.LogFile, in the run's directory; the last complete line of each stream
// and all of stdout are kept for progress and summaries.
func child(p *Process) *Process {
	p.StopGrace, p.KillWithParent = stopGrace, true
	return p
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
	s.PeakRSS, err = procStatus(pid, "VmHWM")
	return s, err
}

// procStatus returns a size from /proc/PID/status in bytes (VmHWM, VmRSS);
// 0 when the process has no such line.
func procStatus(pid int, key string) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status %s: %w", pid, key, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, nil
}
