#!/usr/bin/env bash
# Coverage gate: runs the workspace's tests under cargo-llvm-cov, prints line coverage per crate,
# per tikv-client module (a top-level directory or file of tikv-client/src: `pd/`, `cluster.rs`)
# and per file for the files under the floor, and fails when tikv-client is under 90% of its
# lines or any of its modules under 75%. The 75% floor holds for each source file too (a Rust
# module of its own): a well-tested directory must not hide an untested file in its average.
#
# This run IS the README's test command (`cargo test --workspace`), not a second run beside it:
# instrumented tests take about as long as plain ones, and running the suite twice would double
# CI's longest step for no added check. So it runs the same targets `cargo test --workspace`
# runs (libraries, binaries, integration tests; examples built) under instrumentation, then the
# doctests plain (cargo-llvm-cov measures doctests only on nightly), with --no-fail-fast so that
# one failing binary does not hide the others' results. Its output has every "test result:"
# line cargo prints, so .ci/run summarises it as it would summarise `cargo test --workspace`.
#
# Not measured (--ignore-filename-regex): test-only files (`tests.rs`, `*_tests.rs`, `tests/`
# directories, `testing.rs`), generated code (`generated/`) and build scripts. Unit-test modules
# inline in a source file are counted with that file, as llvm-cov sees them.
#
# Exit status: 0 when every test passed and the gate holds; 1 otherwise (both are reported).
# Needs only the Rust toolchain: cargo-llvm-cov and llvm-tools-preview are installed when
# missing. Usage: scripts/coverage.sh [extra cargo-llvm-cov test flags...]
# COVERAGE_LCOV=<file> skips the run and applies the gate to that lcov report (path prefixes are
# taken relative to this workspace), e.g. to check the gate itself.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly CRATE_FLOOR=90  # percent of tikv-client's lines
readonly MODULE_FLOOR=75 # percent of each tikv-client module's lines
readonly LLVM_COV_VERSION=0.9.1
readonly IGNORE='(^|/)(tests?\.rs|[^/]*_tests\.rs|testing\.rs|build\.rs)$|/(tests|generated)/'

if [ -z "${COVERAGE_LCOV:-}" ] && ! cargo llvm-cov --version >/dev/null 2>&1; then
  echo "==> installing llvm-tools-preview and cargo-llvm-cov $LLVM_COV_VERSION"
  rustup component add llvm-tools-preview
  cargo install --locked "cargo-llvm-cov@$LLVM_COV_VERSION"
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

status=0
if [ -n "${COVERAGE_LCOV:-}" ]; then
  cp "$COVERAGE_LCOV" "$out/lcov.info"
else
  echo "==> cargo llvm-cov --workspace (the README's cargo test --workspace, instrumented)"
  started=$SECONDS
  cargo llvm-cov --workspace --no-report --no-fail-fast "$@" || status=1
  echo "==> cargo test --workspace --doc (doctests, not instrumented)"
  cargo test --workspace --doc --no-fail-fast || status=1
  cargo llvm-cov report --lcov --summary-only --ignore-filename-regex "$IGNORE" \
    --output-path "$out/lcov.info"
  echo "==> coverage measured in $((SECONDS - started)) s"
fi

# lcov: `SF:<path>` opens a file's record, `LF:` counts its instrumented lines, `LH:` those run.
root="$(pwd)/"
awk -v root="$root" -v crate_floor="$CRATE_FLOOR" -v module_floor="$MODULE_FLOOR" '
  function pct(hit, found) { return found ? 100 * hit / found : 100 }
  function row(name, hit, found) { printf "  %-34s %6.2f%%  %7d / %-7d\n", name, pct(hit, found), hit, found }
  /^SF:/ { file = substr($0, 4); if (index(file, root) == 1) file = substr(file, length(root) + 1) }
  /^LF:/ { found[file] = substr($0, 4) + 0 }
  /^LH:/ { hit[file] = substr($0, 4) + 0 }
  END {
    n = 0
    for (f in found) files[++n] = f
    # Insertion sort: POSIX awk has no sort, and there are a few hundred files.
    for (i = 2; i <= n; i++) { v = files[i]; for (j = i - 1; j >= 1 && files[j] > v; j--) files[j + 1] = files[j]; files[j + 1] = v }
    for (i = 1; i <= n; i++) {
      f = files[i]; split(f, part, "/"); crate = part[1]
      if (!(crate in c_found)) crates[++nc] = crate
      c_found[crate] += found[f]; c_hit[crate] += hit[f]
      if (crate == "tikv-client" && part[2] == "src") {
        rest = substr(f, length("tikv-client/src/") + 1)
        m = index(rest, "/") ? substr(rest, 1, index(rest, "/")) : rest
        if (!(m in m_found)) modules[++nm] = m
        m_found[m] += found[f]; m_hit[m] += hit[f]
        mod_of[f] = m
      }
    }
    print "\nline coverage per crate:"
    for (i = 1; i <= nc; i++) row(crates[i], c_hit[crates[i]], c_found[crates[i]])
    printf "\nline coverage per tikv-client module (floor %d%%):\n", module_floor
    fail = 0
    for (i = 1; i <= nm; i++) {
      m = modules[i]; p = pct(m_hit[m], m_found[m])
      row(m, m_hit[m], m_found[m])
      if (p < module_floor) { fail = 1; low = low sprintf("\n  module %s: %.2f%% < %d%%", m, p, module_floor) }
    }
    printf "\nfiles of tikv-client under %d%% (each fails the gate):\n", module_floor
    under = 0
    for (i = 1; i <= n; i++) {
      f = files[i]
      if ((f in mod_of) && pct(hit[f], found[f]) < module_floor) {
        row(substr(f, length("tikv-client/src/") + 1), hit[f], found[f]); under++
        fail = 1; low = low sprintf("\n  file %s: %.2f%% < %d%%", f, pct(hit[f], found[f]), module_floor)
      }
    }
    if (!under) print "  (none)"
    total = pct(c_hit["tikv-client"], c_found["tikv-client"])
    if (!("tikv-client" in c_found)) { fail = 1; low = low "\n  tikv-client: no coverage data" }
    else if (total < crate_floor) { fail = 1; low = low sprintf("\n  tikv-client: %.2f%% < %d%%", total, crate_floor) }
    if (fail) { printf "\ncoverage gate FAILED:%s\n", low; exit 1 }
    printf "\ncoverage gate passed: tikv-client %.2f%% (floor %d%%), every module and file at least %d%%\n", total, crate_floor, module_floor
  }' "$out/lcov.info" || status=1

exit "$status"
