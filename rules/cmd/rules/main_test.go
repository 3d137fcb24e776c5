package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("rules:\n  - id: x.y\n    kind: cabinet\n    when: leakage > 1\n    severity: minor\n    case: {service: s, title: t}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good, _ := filepath.Glob("../../../configs/rules/*.yaml")
	tests, _ := filepath.Glob("../../../configs/rules/tests/*.yaml")
	if len(good) == 0 || len(tests) == 0 {
		t.Fatal("shipped rules not found")
	}
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"usage", []string{"check"}, 2},
		{"unknown command", []string{"lint", "x"}, 2},
		{"check good", append([]string{"check"}, good...), 0},
		{"check bad", []string{"check", bad}, 1},
		{"check missing file", []string{"check", filepath.Join(dir, "nope.yaml")}, 1},
		{"test shipped", append([]string{"test"}, tests...), 0},
		{"test a rule file is an error", []string{"test", bad}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(context.Background(), tc.args, io.Discard, io.Discard); got != tc.want {
				t.Fatalf("exit %d, want %d", got, tc.want)
			}
		})
	}
}
