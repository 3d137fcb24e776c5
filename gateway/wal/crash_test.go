package wal

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/citygw/citygw/gateway/testenv"
)

const crashDirEnv, crashRoundEnv = "CITYGW_WAL_CRASH_DIR", "CITYGW_WAL_CRASH_ROUND"

// TestCrashChild is the child of TestCrashSafety: it appends from several
// goroutines with sync: interval and prints "ok round goroutine i" after
// each Append returned, until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("the child process of TestCrashSafety")
	}
	w, err := Open(Config{Dir: dir, Sync: SyncInterval, SegmentBytes: 256 << 10}, nil, nil)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	round := os.Getenv(crashRoundEnv)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				l := fmt.Sprintf("crash,round=%s,g=%d i=%di %d\n", round, g, i, i+1)
				if err := w.Append(context.Background(), []byte(l)); err != nil {
					fmt.Println("append:", err)
					os.Exit(1)
				}
				mu.Lock()
				os.Stdout.WriteString("ok " + l) // one write(2): whole lines only
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestCrashSafety SIGKILLs a process appending to the log, three times, and
// checks that every line it reported appended (Append had returned) is in
// the log exactly once after each restart.
func TestCrashSafety(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(crashDirEnv, dir)
	p := testenv.StartProcess(t, os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	p.Kill() // started before the round is set: run rounds from here
	reported := map[string]bool{}
	for round := range 3 {
		t.Setenv(crashRoundEnv, fmt.Sprint(round))
		before := strings.Count(p.Output(), "\nok ")
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for strings.Count(p.Output(), "\nok ")-before < 5000 && time.Now().Before(deadline) && p.Running() {
			time.Sleep(20 * time.Millisecond)
		}
		p.Kill()
		for _, l := range strings.Split(p.Output(), "\n") {
			if rest, ok := strings.CutPrefix(l, "ok "); ok && strings.Contains(rest, fmt.Sprintf("round=%d,", round)) {
				reported[rest+"\n"] = true
			}
		}
		if len(reported) == 0 {
			t.Fatalf("the child reported nothing:\n%s", p.Output())
		}
	}
	w, _ := open(t, Config{Dir: dir})
	got := map[string]int{}
	for _, l := range drainAll(t, w) {
		got[l]++
	}
	missing, dup := 0, 0
	for l := range reported {
		if got[l] == 0 {
			missing++
			if missing < 5 {
				t.Errorf("reported appended, not in the log: %q", l)
			}
		}
	}
	for l, n := range got {
		if n > 1 {
			dup++
			t.Errorf("in the log %d times: %q", n, l)
		}
	}
	t.Logf("%d lines reported appended over 3 kills, %d in the log (%d appended but killed before reporting), %d corrupt regions",
		len(reported), len(got), len(got)-len(reported)+missing, w.Stats().Corrupt)
	if missing > 0 {
		t.Fatalf("%d reported lines lost", missing)
	}
}
