#!/usr/bin/env bash
# Checks the aarch64 daemon made by build-aarch64.sh: it is an aarch64 ELF, and
# under qemu-user emulation (arm64 sysroot as the loader prefix) it answers
# `diemcau --version` and passes `diemcau self-test --board sim --frames 30`
# (30 frames encoded with x264enc through the sysroot's GStreamer).
#
#   scripts/cross/test-aarch64.sh [FRAMES]
#
# Environment: as build-aarch64.sh, plus DIEMCAU_CROSS_TIMEOUT (seconds for the
# self-test; default 900), DIEMCAU_CROSS_FRESH_REGISTRY=1 (rescan the plugins),
# GST_DEBUG (passed to the emulated daemon).
source "$(dirname "$0")/common.sh"

FRAMES="${1:-30}"
[ -f "$SYSROOT/.diemcau-sysroot-ok" ] || die "no sysroot at $SYSROOT: run scripts/cross/build-aarch64.sh first"
[ -x "$BINARY" ] || die "no binary at $BINARY: run scripts/cross/build-aarch64.sh first"

# ---------------------------------------------------------------- ELF checks
desc="$(file -b "$BINARY")"
log "file: $desc"
case "$desc" in *"ELF 64-bit LSB"*"ARM aarch64"*) ;; *) die "$BINARY is not an aarch64 ELF: $desc";; esac
interp="$(readelf -l "$BINARY" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
[ "$interp" = /lib/ld-linux-aarch64.so.1 ] || die "unexpected program interpreter '$interp'"
missing=()
for lib in $(readelf -d "$BINARY" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
  [ -e "$SYSROOT/lib/$MULTIARCH/$lib" ] || [ -e "$SYSROOT/usr/lib/$MULTIARCH/$lib" ] || missing+=("$lib")
done
[ ${#missing[@]} -eq 0 ] || die "shared libraries needed by the binary are not in the sysroot: ${missing[*]}"
log "elf: aarch64, interpreter $interp, all NEEDED libraries found in the sysroot"

# ---------------------------------------------------------------- emulator
QEMU="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
[ -n "$QEMU" ] || die "no qemu-aarch64(-static): apt-get install qemu-user-static"
log "qemu: $QEMU ($("$QEMU" --version | head -n1))"
[ -n "$(command -v timeout)" ] || die "coreutils' timeout is missing"

GST_LIBDIR="$SYSROOT/usr/lib/$MULTIARCH"
STATE="$CARGO_TARGET_DIR/$TARGET/qemu-state"
mkdir -p "$STATE/cache" "$STATE/home"
REGISTRY="$STATE/gst-registry-$(basename "$SYSROOT").bin"
[ "${DIEMCAU_CROSS_FRESH_REGISTRY:-0}" = 1 ] && rm -f "$REGISTRY"
# Without binfmt_misc the emulated GStreamer cannot exec the arm64
# gst-plugin-scanner, so scan in-process then.
# With binfmt_misc (qemu-user-static registers it where it can) the scanner runs
# in its own emulated process, as on the board. DIEMCAU_CROSS_REGISTRY_FORK
# (yes/no) overrides.
FORK=no
if [ "$(head -n1 /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null)" = enabled ]; then FORK=yes; fi
FORK="${DIEMCAU_CROSS_REGISTRY_FORK:-$FORK}"

# A clean environment: nothing of the host's GStreamer may leak in.
ENV_ARGS=(
  PATH=/usr/bin:/bin HOME="$STATE/home" XDG_CACHE_HOME="$STATE/cache" LANG=C.UTF-8
  QEMU_LD_PREFIX="$SYSROOT"
  GST_PLUGIN_SYSTEM_PATH_1_0="$GST_LIBDIR/gstreamer-1.0"
  GST_PLUGIN_SYSTEM_PATH="$GST_LIBDIR/gstreamer-1.0"
  GST_PLUGIN_SCANNER_1_0="$GST_LIBDIR/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner"
  GST_PLUGIN_SCANNER="$GST_LIBDIR/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner"
  GST_REGISTRY_1_0="$REGISTRY" GST_REGISTRY="$REGISTRY" GST_REGISTRY_FORK="$FORK"
)
[ -n "${GST_DEBUG:-}" ] && ENV_ARGS+=(GST_DEBUG="$GST_DEBUG")
TIMEOUT="${DIEMCAU_CROSS_TIMEOUT:-900}"
run_emulated() {
  timeout "$TIMEOUT" env -i "${ENV_ARGS[@]}" "$QEMU" -L "$SYSROOT" "$BINARY" "$@"
}

# ---------------------------------------------------------------- --version
out="$(run_emulated --version 2>&1)" || die "'diemcau --version' failed under emulation: $out"
log "--version: $out"
case "$out" in *diemcau*) ;; *) die "'diemcau --version' printed no version: $out";; esac

# ---------------------------------------------------------------- self-test
scan="registry cached"
[ -f "$REGISTRY" ] || scan="first plugin scan under emulation (GST_REGISTRY_FORK=$FORK): slow"
log "self-test: --board sim --frames $FRAMES under qemu ($scan; timeout $TIMEOUT s)"
t0=$(date +%s%N)
set +e
out="$(run_emulated self-test --board sim --frames "$FRAMES" 2>&1)"
rc=$?
set -e
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
wall="$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
line="$(printf '%s\n' "$out" | grep -m1 '^self-test ok' || true)"
if [ $rc -ne 0 ] || [ -z "$line" ]; then
  printf '%s\n' "$out" | tail -n 40 >&2
  [ $rc = 124 ] && die "self-test timed out after $TIMEOUT s under emulation"
  die "self-test failed under emulation (exit $rc)"
fi
case "$line" in *" $FRAMES frames"*) ;; *) die "self-test encoded the wrong number of frames: $line";; esac
echo "$line"
log "self-test: passed in ${wall} s wall under qemu-aarch64 ($scan)"
echo "cross aarch64: 2 passed, 0 failed"
