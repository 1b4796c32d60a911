#!/usr/bin/env bash
# Measures the client's TiKV transport: raw get round trips through tikv_client's BatchCommands
# transport and through plain unary tonic calls, at concurrency 1, 64 and 256, against a
# tikv-mock in another process. Prints ops/s, requests per BatchCommands message and client CPU
# microseconds per op.
# Usage: bash benchmarks/transport.sh [seconds]   (numbers go to stdout; see docs/benchmarks.md)
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
  for mode in transport unary; do
    ./target/release/transport --pd "$pd" --mode "$mode" --concurrency "$c" --connections 4 \
      --seconds "$seconds"
  done
done
