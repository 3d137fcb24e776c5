package testenv

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nsChildEnv marks a test binary re-run by AsRoot inside its namespace.
const nsChildEnv = "CITYGW_TESTENV_NS_CHILD"

// AsRoot reports whether the calling test may mount file systems here: true
// as root. Otherwise it runs the test again under `unshare -rm` (a user and
// mount namespace in which it may mount; child processes run there too) and
// reports false (the child did the work; its failure fails the test), or
// skips with the reason when no namespace can be made. Call it first:
//
//	if !testenv.AsRoot(t) { return }
func AsRoot(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() == 0 {
		return true
	}
	if os.Getenv(nsChildEnv) != "" {
		t.Skip("in a user namespace but not root: cannot mount a tmpfs")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skipf("mounting a tmpfs needs root, and there is no unshare(1) to make a user+mount namespace: %v", err)
	}
	cmd := exec.Command(unshare, "-rm", os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v", "-test.timeout=15m")
	cmd.Env = append(os.Environ(), nsChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil && strings.HasPrefix(string(out), "unshare:") {
		t.Skipf("mounting a tmpfs needs root, and unshare -rm failed: %s", strings.TrimSpace(string(out)))
	}
	t.Logf("ran in a user+mount namespace (unshare -rm):\n%s", out)
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("the test failed in its namespace: %v", err)
	}
	return false
}

// MountTmpfs mounts a tmpfs with the given options ("size=4m",
// "size=4m,nr_inodes=64") on a new directory, unmounted at the end of the
// test: a really small disk, to fill. Call AsRoot first.
func MountTmpfs(t testing.TB, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Skipf("cannot mount a tmpfs (%s) on %s: %v", opts, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// FillDisk creates a file in dir that takes all its free space but leave
// bytes (rounded to pages by the file system) and returns its path; delete
// it to free the space again.
func FillDisk(t testing.TB, dir string, leave int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var size int64
	for {
		n, err := f.Write(chunk)
		size += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(max(size-leave, 0)); err != nil {
		t.Fatal(err)
	}
	return path
}
