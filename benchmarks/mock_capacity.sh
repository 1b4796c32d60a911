#!/usr/bin/env bash
# Measures tikv-mock's capacity: raw gets per second it serves to a client in another process.
# Usage: bash benchmarks/mock_capacity.sh [seconds]   (numbers go to stdout; see docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}

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

for c in 1 64 256; do
  ./target/release/mock_capacity --pd "$pd" --mode unary --concurrency "$c" --connections 4 --seconds "$seconds"
done
for c in 1 64; do
  ./target/release/mock_capacity --pd "$pd" --mode batch --batch 16 --concurrency "$c" --connections 4 --seconds "$seconds"
done
