#!/usr/bin/env bash
# Measures tikv-mock's two-phase commit throughput: 1-key KvPrewrite + KvCommit transactions with
# timestamps from PD's Tso stream, from a client in another process.
# Usage: bash benchmarks/mock_2pc.sh [seconds]   (numbers go to stdout; see docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}

cargo build --release -q -p tikv-mock -p tikv-benchmarks
for c in 1 16 64; do
  # A fresh mock per concurrency level, so earlier versions do not slow later runs.
  out=$(mktemp)
  ./target/release/tikv-mock --pd-addr 127.0.0.1:0 --stores 1 >"$out" 2>/dev/null &
  mock=$!
  trap 'kill -TERM "$mock" 2>/dev/null || true; wait "$mock" 2>/dev/null || true; rm -f "$out"' EXIT
  for _ in $(seq 1 100); do
    [ -s "$out" ] && break
    sleep 0.05
  done
  pd=$(head -n 1 "$out")
  [ -n "$pd" ] || { echo "tikv-mock did not print its PD endpoint" >&2; exit 1; }
  ./target/release/mock_2pc --pd "$pd" --concurrency "$c" --connections 4 --seconds "$seconds"
  kill -TERM "$mock" 2>/dev/null || true
  wait "$mock" 2>/dev/null || true
  rm -f "$out"
done
trap - EXIT
