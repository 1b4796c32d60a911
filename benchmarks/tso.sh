#!/usr/bin/env bash
# Measures the PD client's TSO path: timestamps per second and TSO messages per 1000 timestamps
# from 1, 64 and 1024 concurrent callers, against tikv-mock running in another process.
# Usage: bash benchmarks/tso.sh [seconds]   (numbers go to stdout; see docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}

cargo build --release -q -p tikv-mock -p tikv-benchmarks
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

./target/release/tso --pd "$pd" --seconds "$seconds" --concurrency 1,64,1024
