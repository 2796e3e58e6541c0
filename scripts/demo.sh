#!/usr/bin/env bash
# The main job: a local district conference on this machine. Installs what it
# needs, starts a real Janus VideoRoom and two simulated rooms (test pattern
# and tone, each room's name drawn on its picture) that join it. At a desktop
# each room shows the far room in a window; headless, received frames are
# written as PNG files and the folder is printed. Ctrl-C stops it.
# Extra arguments go to `diemcau-lab demo` (e.g. --duration 30, --rooms 3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p diemcau -p diemcau-tests --bin diemcau --bin diemcau-lab
# The demo runs Janus in a private network namespace, which needs root.
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo -E"; fi
exec $SUDO env DIEMCAU_BIN="$PWD/target/release/diemcau" ./target/release/diemcau-lab demo "$@"
