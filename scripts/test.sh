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
# aarch64: the daemon cross-builds with Debian's rustc-web against an arm64
# sysroot and runs --version and a sim-board self-test under qemu-aarch64
# (docs/cross-build.md). A debug build keeps CI short; the release build is
# `bash scripts/cross/build-aarch64.sh`.
export DIEMCAU_CROSS_PROFILE="${DIEMCAU_CROSS_PROFILE:-debug}"
bash scripts/cross/build-aarch64.sh
bash scripts/cross/test-aarch64.sh
# The qemu-virt image: built (cold on a fresh machine, then from the cache in
# /var/cache/diemcau-image), booted under qemu-system-aarch64; its daemon
# enrols with ops and joins a scheduled meeting on Janus, all on this machine
# (image-builder/ci/boot-test.sh, docs/benchmarks-image.md).
bash image-builder/ci/boot-test.sh
