#!/usr/bin/env bash
# Emulated boot test for CI: builds the qemu-virt image (the Debian base
# comes from the cache after the first run), points its provisioning file
# at ops on the host (10.0.2.2 from inside QEMU) and boots it under
# qemu-system-aarch64 with no keyboard, printing boot-to-ready time.
#
#   image-builder/ci/boot-test.sh [DAEMON_BINARY]
#
# Env: DIEMCAU_IMAGE_CACHE (default /var/cache/diemcau-image), OPS_PORT
# (default 8080), CLAIM_TOKEN (default ci-claim-token), BOOT_TIMEOUT
# (seconds, default 900), READY (console text that means ready; default
# DIEMCAU-READY, or "Multi-User System" when no daemon is given).
set -euo pipefail
cd "$(dirname "$0")/../.."
DAEMON=${1:-target/aarch64-unknown-linux-gnu/release/diemcau}
CACHE=${DIEMCAU_IMAGE_CACHE:-/var/cache/diemcau-image}
OUT=${OUT:-target/image-ci}

if [ "$(id -u)" != 0 ]; then exec sudo -E env "PATH=$PATH" bash "$0" "$@"; fi

need=(mmdebstrap qemu-user-static binfmt-support arch-test qemu-system-arm mtools dosfstools fdisk e2fsprogs)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
arch-test arm64

cargo build --release -p diemcau-image
BIN=${CARGO_TARGET_DIR:-target}/release/diemcau-image

if [ -x "$DAEMON" ]; then
	daemon_args=(--daemon "$DAEMON")
	READY=${READY:-DIEMCAU-READY}
else
	echo "no daemon binary at $DAEMON: building the image without it" >&2
	daemon_args=(--no-daemon)
	READY=${READY:-Multi-User System}
fi

start=$(date +%s)
"$BIN" build --board qemu-virt "${daemon_args[@]}" --out "$OUT" --cache "$CACHE"
echo "image build: $(( $(date +%s) - start )) s"
IMG="$OUT/diemcau-qemu-virt.img"
"$BIN" customise "$IMG" --district-url "http://10.0.2.2:${OPS_PORT:-8080}" \
	--claim-token "${CLAIM_TOKEN:-ci-claim-token}" --commune ci-xa
"$BIN" boot-test "$IMG" --ready "$READY" --timeout "${BOOT_TIMEOUT:-900}" \
	--console-log "$OUT/console.log" --quiet
