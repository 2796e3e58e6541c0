#!/usr/bin/env bash
# Emulated boot and join for CI (issue #6): builds the qemu-virt image (cold
# on a fresh machine; the Debian base comes from the cache after that),
# starts Janus and diemcau-ops on this machine, writes the provisioning file
# (district URL http://10.0.2.2:PORT, a claim token from ops), boots the
# image under qemu-system-aarch64 with no keyboard and checks that the daemon
# enrols, joins the meeting scheduled on ops and that its media reaches
# Janus. Prints the image build time, boot-to-ready, boot-to-enrolled and
# boot-to-in-call. The test is image-builder/tests/boot_join.rs.
#
#   image-builder/ci/boot-test.sh [DAEMON_BINARY]
#
# Env: DIEMCAU_IMAGE_CACHE (default /var/cache/diemcau-image),
# DIEMCAU_BOOT_TIMEOUT (seconds for boot and join, default 900),
# BOOT_JOIN_LIMIT (seconds for the whole step, default 1800),
# DIEMCAU_BOOT_ECHO=1 (echo the guest console), DIEMCAU_KEEP=1 (keep logs).
set -euo pipefail
cd "$(dirname "$0")/../.."
PROFILE=${DIEMCAU_CROSS_PROFILE:-debug}
DAEMON=${1:-target/cross-aarch64/aarch64-unknown-linux-gnu/$PROFILE/diemcau}

if [ "$(id -u)" != 0 ]; then exec sudo -E env "PATH=$PATH" bash "$0" "$@"; fi
t0=$(date +%s)

need=(mmdebstrap qemu-user-static binfmt-support arch-test qemu-system-arm mtools dosfstools fdisk e2fsprogs janus)
missing=()
for p in "${need[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "boot-test: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
arch-test arm64 >/dev/null || { echo "boot-test: arm64 binaries do not run here (qemu-user-static, binfmt)" >&2; exit 1; }
[ -x "$DAEMON" ] || { echo "boot-test: no daemon at $DAEMON (scripts/cross/build-aarch64.sh)" >&2; exit 1; }

# `cargo test --workspace` earlier in scripts/test.sh built diemcau-ops and
# this test with the workspace's features: use those, compile nothing again.
OPS_BIN="${CARGO_TARGET_DIR:-target}/debug/diemcau-ops"
[ -x "$OPS_BIN" ] || cargo build -q -p diemcau-ops --bin diemcau-ops
export DIEMCAU_IMAGE_E2E=1 DIEMCAU_DAEMON="$DAEMON" DIEMCAU_OPS_BIN="$OPS_BIN"
timeout --kill-after=30 "${BOOT_JOIN_LIMIT:-1800}" \
	cargo test -q --workspace --test boot_join -- --ignored --nocapture
echo "boot-test: emulated boot and join step took $(( $(date +%s) - t0 )) s"
