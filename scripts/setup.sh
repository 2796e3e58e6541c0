#!/usr/bin/env bash
# Installs the system packages diemcau needs to build, run and test on Debian bookworm.
# Safe to run again; run as root (or it uses sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  # build
  build-essential pkg-config git curl ca-certificates
  # GStreamer (media pipelines, WebRTC)
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-nice
  gstreamer1.0-libav gstreamer1.0-alsa gstreamer1.0-x
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  fonts-dejavu-core
  # the district SFU
  janus
  # network namespaces, shaping and loss for tests
  iproute2 nftables
  # fault tests: a daemon's own wall clock, moved while it runs (libfaketime)
  faketime
  # district server stores and the fleet page's browser tests
  sqlite3 postgresql chromium
  # mDNS discovery test against an independent implementation
  python3-zeroconf
  # disk images (image-builder tests)
  fdisk dosfstools mtools e2fsprogs
  # the qemu-virt image and its emulated boot (image-builder/ci/boot-test.sh)
  mmdebstrap qemu-user-static binfmt-support arch-test qemu-system-arm
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing Rust from Debian (rustc-web, cargo-web)"
    $SUDO apt-get install -y -q rustc-web cargo-web
  fi
fi
# Janus is started by our tests with their own config; the packaged service is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet janus 2>/dev/null; then
  $SUDO systemctl disable --now janus || true
fi
echo "setup: ok"
