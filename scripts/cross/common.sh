# Shared by build-aarch64.sh and test-aarch64.sh: sourced, not run.
# Cross-builds the diemcau daemon for aarch64-unknown-linux-gnu on a Debian
# bookworm amd64 host, with Debian's rustc-web and an arm64 sysroot made by
# mmdebstrap (see docs/cross-build.md).

set -euo pipefail

TARGET=aarch64-unknown-linux-gnu
MULTIARCH=aarch64-linux-gnu
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Its own target dir by default (under the ignored target/), so that it never
# waits on the native build's lock.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target/cross-aarch64}"
CROSS_CACHE="${DIEMCAU_CROSS_CACHE:-/var/cache/diemcau}"
PROFILE="${DIEMCAU_CROSS_PROFILE:-release}"   # release | debug
SUITE=bookworm
MIRRORS=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)

# Host packages (amd64, plus Debian's Rust standard library for arm64).
# No arm64 -dev package goes on the host: libgstreamer-plugins-base1.0-dev is
# not multi-arch, and the native build needs its amd64 twin.
HOST_PACKAGES=(
  rustc-web cargo-web "libstd-rust-web-dev:arm64"
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  pkg-config file binutils-aarch64-linux-gnu
  mmdebstrap debian-archive-keyring qemu-user-static
)

# What goes into the arm64 sysroot: headers and .pc files to build against,
# plus the runtime (plugins, fonts) to run the self-test under qemu-user.
# Changing this list makes a new sysroot (the cache is keyed by its hash).
SYSROOT_PACKAGES=(
  libc6-dev libglib2.0-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-x gstreamer1.0-nice libnice10
  gstreamer1.0-libav fontconfig-config fonts-dejavu-core
)
SYSROOT_FORMAT=2   # bump when the way the sysroot is made changes

_t0=$(date +%s)
log() { printf '[cross %4ss] %s\n' "$(( $(date +%s) - _t0 ))" "$*" >&2; }
die() { printf '[cross] ERROR: %s\n' "$*" >&2; exit 1; }

sysroot_key() {
  { echo "format=$SYSROOT_FORMAT suite=$SUITE arch=arm64"
    printf '%s\n' "${MIRRORS[@]}"
    printf '%s\n' "${SYSROOT_PACKAGES[@]}" | LC_ALL=C sort -u
  } | sha256sum | cut -c1-12
}
SYSROOT="${DIEMCAU_SYSROOT:-$CROSS_CACHE/sysroot-arm64-$(sysroot_key)}"
# The build refers to the sysroot through this stable link, so that a new
# package list (a new hashed folder) does not change the compiler flags and
# rebuild every crate.
BUILD_SYSROOT="$SYSROOT"
[ -n "${DIEMCAU_SYSROOT:-}" ] || BUILD_SYSROOT="$CROSS_CACHE/sysroot-arm64"

out_dir() { echo "$CARGO_TARGET_DIR/$TARGET/$PROFILE"; }
BINARY="$(out_dir)/diemcau"

# Debian's rustc (rustc-web), never rustup's: rustup's has no aarch64 std here.
find_debian_rust() {
  DEB_RUSTC=""
  DEB_CARGO=""
  if dpkg-query -W -f='${Status}' rustc-web 2>/dev/null | grep -q "install ok installed"; then
    DEB_RUSTC="$(dpkg -L rustc-web | grep -E '/bin/rustc$' | head -n1)"
  fi
  if dpkg-query -W -f='${Status}' cargo-web 2>/dev/null | grep -q "install ok installed"; then
    DEB_CARGO="$(dpkg -L cargo-web | grep -E '^/usr/bin/cargo$' | head -n1)"
  fi
  [ -n "$DEB_RUSTC" ] && [ -x "$DEB_RUSTC" ] || die "Debian's rustc-web is not installed (run scripts/cross/build-aarch64.sh as root to install it)"
  local sysroot
  sysroot="$("$DEB_RUSTC" --print sysroot)"
  [ -d "$sysroot/lib/rustlib/$TARGET/lib" ] || die "$DEB_RUSTC has no $TARGET standard library: install libstd-rust-web-dev:arm64"
  # Debian's cargo matches its rustc; rustup's cargo also works with RUSTC set.
  if [ -z "$DEB_CARGO" ] || [ ! -x "$DEB_CARGO" ]; then DEB_CARGO="$(command -v cargo || true)"; fi
  [ -n "$DEB_CARGO" ] || die "no cargo found (install cargo-web)"
}
