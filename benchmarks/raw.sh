#!/usr/bin/env bash
# Raw KV against client-rust 0.4: get, put and batch_get of 100 keys at concurrency 1, 64 and 256
# (benchmarks/src/raw_workload.rs), run by the published tikv-client 0.4 (benchmarks/peer, its own
# workspace) and, once it exists, by this workspace's client (src/bin/raw.rs). Each client gets a
# fresh tikv-mock in another process: 3 stores, the key range split into 6 regions with leaders
# spread over the stores. Prints one line per (client, workload, concurrency), then our/peer
# ratios when both clients ran.
#
# Usage: bash benchmarks/raw.sh [seconds] [more flags for both binaries, e.g. --concurrency 1,64]
#   (numbers go to stdout, progress to stderr; see docs/benchmarks.md)
# Environment: CARGO_TARGET_DIR is honoured for every build; TIKV_MOCK_BIN=path runs that mock
# binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-5}
shift || true

log() { printf 'raw.sh: %s\n' "$*" >&2; }
abs_dir() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$root/$1" ;; esac; }

# ---- build -------------------------------------------------------------------------------------
if [[ -z "${TIKV_MOCK_BIN:-}" ]]; then
  log "building tikv-mock (release)"
  cargo build --release -q -p tikv-mock
fi
log "building the client-rust 0.4 peer (release, benchmarks/peer, locked)"
cargo build --release -q --locked --manifest-path benchmarks/peer/Cargo.toml
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
  target=$(abs_dir "$CARGO_TARGET_DIR")
  peer_target=$target
else
  target=$root/target
  peer_target=$root/benchmarks/peer/target
fi
mock_bin=${TIKV_MOCK_BIN:-$target/release/tikv-mock}
peer_bin=$peer_target/release/raw-peer
ours_bin=""
if [[ -f benchmarks/src/bin/raw.rs ]]; then
  log "building our raw benchmark (release)"
  cargo build --release -q -p tikv-benchmarks --bin raw
  ours_bin=$target/release/raw
else
  log "benchmarks/src/bin/raw.rs does not exist yet: running the peer only"
fi

# ---- mock lifecycle ----------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/raw-bench.XXXXXX")
mock_pid=""

stop_mock() { # SIGTERM, up to 10 s to exit, then SIGKILL
  [[ -n "$mock_pid" ]] || return 0
  kill -TERM "$mock_pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$mock_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$mock_pid" 2>/dev/null || true
  wait "$mock_pid" 2>/dev/null || true
  mock_pid=""
}
trap 'rc=$?; stop_mock; rm -rf "$work"; exit $rc' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_mock() { # sets mock_pid and pd
  : >"$work/mock.out"
  "$mock_bin" --pd-addr 127.0.0.1:0 --stores 3 --split-keys "$split_keys" \
    >"$work/mock.out" 2>"$work/mock.err" &
  mock_pid=$!
  for _ in $(seq 300); do # up to 30 s for the first complete line
    [[ "$(wc -l <"$work/mock.out")" -ge 1 ]] && break
    if ! kill -0 "$mock_pid" 2>/dev/null; then
      mock_pid=""
      log "tikv-mock exited before printing its PD endpoint:"
      cat "$work/mock.err" >&2
      return 1
    fi
    sleep 0.1
  done
  pd=$(head -n 1 "$work/mock.out")
  [[ -n "$pd" ]] || { log "tikv-mock did not print its PD endpoint"; return 1; }
}

# ---- runs --------------------------------------------------------------------------------------
split_keys=$("$peer_bin" --print-split-keys "$@")
run() { # run NAME BIN [FLAGS...]: one fresh mock, one client
  local name=$1 bin=$2
  shift 2
  start_mock
  log "$name against tikv-mock at $pd (3 stores, split at $split_keys), $seconds s per run"
  "$bin" --pd "$pd" --seconds "$seconds" "$@" | tee "$work/$name.txt"
  stop_mock
}
run peer "$peer_bin" "$@"
if [[ -n "$ours_bin" ]]; then
  run ours "$ours_bin" "$@"
  # ratio WORKLOAD c=N ops/s=ours/peer cpu_us/op=ours/peer
  awk '
    function field(name,   i) { for (i = 4; i <= NF; i++) if (index($i, name "=") == 1) return substr($i, length(name) + 2); return "" }
    FNR == NR { ops[$2 " " $3] = field("ops/s"); cpu[$2 " " $3] = field("cpu_us/op"); next }
    ($2 " " $3) in ops && ops[$2 " " $3] > 0 && cpu[$2 " " $3] > 0 {
      printf "ratio %s %s ops/s=%.2f cpu_us/op=%.2f (ours/client-rust)\n", $2, $3,
        field("ops/s") / ops[$2 " " $3], field("cpu_us/op") / cpu[$2 " " $3]
    }' "$work/peer.txt" "$work/ours.txt"
fi
