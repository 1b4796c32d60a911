#!/usr/bin/env bash
# Fails when tikv-client's public API names a tikv-proto or prost type.
#
# Documents tikv-proto and prost beside tikv-client (stable rustdoc, no network once the
# dependencies are fetched), without the `unstable-internals` feature, so that rustdoc links
# every use of their types in tikv-client's pages to their pages; then searches tikv-client's
# rendered pages (not its rendered sources) for such links. tonic is not documented here on
# purpose: its blanket `IntoRequest` impl would show up on every type; tonic types reach the
# API only through an error source, which `ErrorSource` keeps opaque.
#
# The compile-fail doctests of tikv-client/src/public_api.rs keep the internal modules
# private; this script catches a proto type reaching a public signature any other way.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
# rustdoc links a foreign type to its page only when that crate's documentation is already in
# the output directory: document tikv-proto and prost first, then tikv-client again (the touch
# makes cargo re-run rustdoc even when tikv-client's documentation is otherwise fresh).
cargo doc -p tikv-proto -p prost --no-deps --quiet
touch tikv-client/src/lib.rs
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc -p tikv-client --no-deps --quiet
docs="$target/doc/tikv_client"
if [ ! -d "$docs" ]; then
    echo "check-public-api: no documentation at $docs" >&2
    exit 2
fi
pattern='href="(\.\./)+(tikv_proto|prost)/'
if leaks="$(grep -rlE "$pattern" "$docs")"; then
    echo "check-public-api: the public API names tikv-proto or prost types in:" >&2
    echo "$leaks" >&2
    grep -rhoE "$pattern[A-Za-z0-9_/.]*" "$docs" | sort -u | head -20 >&2
    exit 1
fi
echo "check-public-api: no tikv-proto or prost type in the public API"
