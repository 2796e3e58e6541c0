#!/usr/bin/env bash
# Runs the whole test suite: format and lint checks, unit tests, and the
# end-to-end tests (real Janus in network namespaces, real GStreamer).
# Needs root for the network namespaces (sudo is used if you are not root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$(id -u)" != 0 ]; then exec sudo -E env "PATH=$PATH" bash "$0" "$@"; fi
export RUST_BACKTRACE=1
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace -- --test-threads=2
