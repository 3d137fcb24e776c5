#!/usr/bin/env bash
# instructions.sh PKG BENCH [N] — instructions per operation of one Go
# benchmark, counted by valgrind's callgrind: repeatable on a shared, noisy
# machine where ns/op is not (the same binary and inputs give the same count
# whatever else runs). It runs the benchmark at N and 2N iterations and
# divides the difference by N, so setup cost cancels out.
#   scripts/instructions.sh ./devices BenchmarkDecodeJSON 20000
set -euo pipefail
pkg=${1:?package}; bench=${2:?benchmark}; n=${3:-20000}
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install -y valgrind" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/b.test" "$pkg"
dir=$(go list -f '{{.Dir}}' "$pkg") # tests find their testdata relative to it
count() {
  (cd "$dir" && GODEBUG=asyncpreemptoff=1 GOMAXPROCS=1 valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.$1" \
    "$tmp/b.test" -test.run '^$' -test.bench "^$bench\$" -test.benchtime "${1}x" -test.cpu 1 >/dev/null 2>"$tmp/log.$1") ||
    { cat "$tmp/log.$1" >&2; exit 1; }
  grep -m1 '^summary:' "$tmp/cg.$1" | awk '{print $2}'
}
a=$(count "$n"); b=$(count $((2 * n)))
echo "$bench: $(( (b - a) / n )) instructions/op (callgrind, N=$n)"
