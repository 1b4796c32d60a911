#!/usr/bin/env bash
# Compatibility check: the published Rust client tikv-client 0.4 (tikv/client-rust, which nobody
# on this project wrote) against the tikv-mock binary: raw KV once per API version, then
# transactions (TransactionClient) over API V1.
#
#   bash tikv-mock/compat/run.sh
#
# For each scenario it starts a fresh mock on a random loopback port, reads the PD endpoint from
# the mock's first line of stdout, runs the compat program against it, then stops the mock with
# SIGTERM and requires exit status 0. It ends with "compat: N passed, M failed" and exits non-zero
# if anything failed.
#
# Environment:
#   TIKV_MOCK_BIN    use this mock binary instead of building it from the workspace
#   CARGO_TARGET_DIR honoured for both builds
#   COMPAT_KEEP_LOGS=1  keep the mock's logs (their directory is printed) even when all passed
#   COMPAT_PESSIMISTIC=0  skip the pessimistic-transaction steps of the txn scenario
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

abs_dir() { # make a possibly relative CARGO_TARGET_DIR absolute (cargo resolves it against $PWD)
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$PWD/$1" ;;
  esac
}

log() { printf 'compat: %s\n' "$*" >&2; }

# ---- build ---------------------------------------------------------------------------------
if [[ -n "${TIKV_MOCK_BIN:-}" ]]; then
  mock_bin="$TIKV_MOCK_BIN"
  log "using TIKV_MOCK_BIN=$mock_bin"
else
  log "building tikv-mock (release) from the workspace"
  cargo build --release -p tikv-mock --manifest-path "$root/Cargo.toml"
  if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    mock_bin="$(abs_dir "$CARGO_TARGET_DIR")/release/tikv-mock"
  else
    mock_bin="$root/target/release/tikv-mock"
  fi
fi
[[ -x "$mock_bin" ]] || { log "no executable mock binary at $mock_bin"; exit 1; }

log "building the compat program (tikv-client 0.4, own Cargo.lock)"
cargo build --locked --manifest-path "$here/Cargo.toml"
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
  compat_bin="$(abs_dir "$CARGO_TARGET_DIR")/debug/tikv-mock-compat"
else
  compat_bin="$here/target/debug/tikv-mock-compat"
fi
[[ -x "$compat_bin" ]] || { log "no compat binary at $compat_bin"; exit 1; }

# ---- mock lifecycle --------------------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/tikv-mock-compat.XXXXXX")"
mock_pid=""

# The mock runs in a session (and process group) of its own when setsid is available, so the
# last-resort SIGKILL also reaches anything it started. SIGTERM goes to the mock process only.
if command -v setsid >/dev/null 2>&1; then own_group=(setsid); else own_group=(); fi

kill_mock() { # stop a mock that is still running, whatever state we are in
  if [[ -n "$mock_pid" ]] && kill -0 "$mock_pid" 2>/dev/null; then
    kill -TERM "$mock_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$mock_pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  if [[ -n "$mock_pid" ]]; then
    if [[ ${#own_group[@]} -gt 0 ]]; then
      kill -KILL -- "-$mock_pid" 2>/dev/null || true
    fi
    kill -KILL "$mock_pid" 2>/dev/null || true
    wait "$mock_pid" 2>/dev/null || true
  fi
  mock_pid=""
}

cleanup() {
  local rc=$?
  kill_mock
  if [[ $rc -eq 0 && "${COMPAT_KEEP_LOGS:-0}" != 1 ]]; then
    rm -rf "$work"
  else
    log "mock logs kept in $work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_logs() { # $1 = scenario name
  log "---- mock stderr ($1), last 40 lines ----"
  tail -n 40 "$work/$1.stderr" >&2 || true
  log "---- end ----"
}

# start_mock NAME ARGS... : starts the mock, sets mock_pid and pd_endpoint.
start_mock() {
  local name="$1"
  shift
  : >"$work/$name.stdout"
  log "starting: tikv-mock $*"
  ${own_group[@]+"${own_group[@]}"} "$mock_bin" "$@" >"$work/$name.stdout" 2>"$work/$name.stderr" &
  mock_pid=$!
  # Wait (up to 30 s) for a complete first line on stdout.
  for _ in $(seq 300); do
    if [[ "$(wc -l <"$work/$name.stdout")" -ge 1 ]]; then
      break
    fi
    if ! kill -0 "$mock_pid" 2>/dev/null; then
      local rc=0
      wait "$mock_pid" || rc=$?
      mock_pid=""
      log "the mock exited (status $rc) before printing its PD endpoint"
      show_logs "$name"
      return 1
    fi
    sleep 0.1
  done
  pd_endpoint="$(head -n 1 "$work/$name.stdout" | tr -d '\r')"
  if [[ ! "$pd_endpoint" =~ ^[^[:space:]]+:[0-9]+$ || "$pd_endpoint" =~ :0$ ]]; then
    log "first stdout line is not a HOST:PORT endpoint: '${pd_endpoint}'"
    show_logs "$name"
    kill_mock
    return 1
  fi
  log "mock pid $mock_pid serves PD at $pd_endpoint"
}

# stop_mock NAME : SIGTERM, then the mock must exit 0 within 10 s.
stop_mock() {
  local name="$1" rc=0
  kill -TERM "$mock_pid"
  for _ in $(seq 100); do
    kill -0 "$mock_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$mock_pid" 2>/dev/null; then
    log "the mock did not exit within 10 s of SIGTERM"
    show_logs "$name"
    kill_mock
    return 1
  fi
  wait "$mock_pid" || rc=$?
  mock_pid=""
  if [[ $rc -ne 0 ]]; then
    log "the mock exited with status $rc on SIGTERM (want 0)"
    show_logs "$name"
    return 1
  fi
}

# run_scenario NAME COMPAT_ARGS -- MOCK_ARGS... : one fresh mock, one compat run (COMPAT_ARGS is
# a space-separated word list). Returns non-zero on any failure and never leaves the mock
# running. (Called from `if`, where set -e does not apply, so every step checks its own status.)
run_scenario() {
  local name="$1" compat_args
  read -r -a compat_args <<<"$2"
  shift 2
  [[ "${1:-}" == "--" ]] && shift
  log "==== $name ===="
  start_mock "$name" "$@" || return 1
  local rc=0
  # The compat program bounds every client call itself; `timeout` is the last line of defence.
  timeout --kill-after=10 600 "$compat_bin" --pd "$pd_endpoint" "${compat_args[@]}" || rc=$?
  if [[ $rc -ne 0 ]]; then
    log "compat program failed for $name (status $rc)"
    show_logs "$name"
    kill_mock
    return 1
  fi
  stop_mock "$name" || return 1
  log "$name passed"
}

split_keys="$("$compat_bin" --print-split-keys)"
txn_split_keys="$("$compat_bin" --print-txn-split-keys)"
passed=0
failed=0

record() { # record NAME STATUS
  if [[ $2 -eq 0 ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

rc=0
run_scenario v1 "--api-version 1" -- \
  --pd-addr 127.0.0.1:0 --stores 3 --api-version 1 --split-keys "$split_keys" || rc=$?
record v1 $rc

rc=0
run_scenario v2 "--api-version 2" -- --pd-addr 127.0.0.1:0 --stores 3 --api-version 2 || rc=$?
record v2 $rc

# Transactions over API V1 on two regions, pessimistic steps included unless COMPAT_PESSIMISTIC=0.
txn_args="--txn --with-pessimistic"
if [[ "${COMPAT_PESSIMISTIC:-1}" == 0 ]]; then txn_args="--txn"; fi
rc=0
run_scenario txn "$txn_args" -- \
  --pd-addr 127.0.0.1:0 --stores 3 --api-version 1 --split-keys "$txn_split_keys" || rc=$?
record txn $rc

printf 'compat: %d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
