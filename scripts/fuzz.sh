#!/usr/bin/env bash
# fuzz.sh DURATION — every fuzz target of the module in turn, each for
# DURATION (go test -fuzztime). The seed corpora also run in `make test`.
#
# A target fails on a finding: go test writes the failing input to
# testdata/fuzz/<target>/ and says so. Go 1.26's fuzzing coordinator also
# fails a target with a bare "context deadline exceeded" when -fuzztime runs
# out while a worker is busy (golang/go#75804, fixed in Go 1.27): no input
# is written and nothing reproduces. That ending is reported and passed over;
# anything else that fails still fails the run.
set -uo pipefail
fuzztime=${1:-10s}
go=${GO:-go}
out=$(mktemp); trap 'rm -f "$out"' EXIT
for pkg in $($go list ./...); do
  for f in $($go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz'); do
    echo "fuzz $pkg $f"
    if $go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$out"; then
      continue
    fi
    if grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written to' "$out" &&
       [ "$(grep -c -- '--- FAIL' "$out")" = 1 ]; then
      echo "fuzz $pkg $f: ended by Go's fuzztime deadline race (golang/go#75804), no failing input; not a finding"
      continue
    fi
    exit 1
  done
done
