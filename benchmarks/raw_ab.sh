#!/usr/bin/env bash
# A/B of two builds of our raw benchmark binary (e.g. before and after a change) in one run:
# each round starts a fresh tikv-mock (3 stores, 6 regions, as raw.sh) for A, then one for B,
# so both see the same machine state. Prints every line with its label; compare only figures
# from one run.
#
# Usage: bash benchmarks/raw_ab.sh A_BIN B_BIN MOCK_BIN [rounds=3] [seconds=5] [concurrency=256]
set -euo pipefail
a=$1 b=$2 mock=$3 rounds=${4:-3} seconds=${5:-5} conc=${6:-256}
work=$(mktemp -d "${TMPDIR:-/tmp}/raw-ab.XXXXXX")
mock_pid=""
stop_mock() {
  [[ -n "$mock_pid" ]] || return 0
  kill -TERM "$mock_pid" 2>/dev/null || true
  wait "$mock_pid" 2>/dev/null || true
  mock_pid=""
}
trap 'stop_mock; rm -rf "$work"' EXIT
split_keys=$("$a" --print-split-keys)
run() { # run LABEL BIN
  "$mock" --pd-addr 127.0.0.1:0 --stores 3 --split-keys "$split_keys" >"$work/out" 2>"$work/err" &
  mock_pid=$!
  for _ in $(seq 300); do [[ -s "$work/out" ]] && break; sleep 0.1; done
  local pd
  pd=$(head -n 1 "$work/out")
  "$2" --pd "$pd" --seconds "$seconds" --concurrency "$conc" | sed "s/^/$1 /"
  stop_mock
}
for r in $(seq "$rounds"); do
  run "A#$r" "$a"
  run "B#$r" "$b"
done
