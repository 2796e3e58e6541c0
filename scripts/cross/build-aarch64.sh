#!/usr/bin/env bash
# Cross-builds the diemcau daemon for aarch64-unknown-linux-gnu.
#
#   scripts/cross/build-aarch64.sh            # release build (default)
#   DIEMCAU_CROSS_PROFILE=debug scripts/cross/build-aarch64.sh
#
# Steps (each skipped when already done, so running it again is cheap):
#   1. host packages: Debian's rustc-web + libstd-rust-web-dev:arm64, the
#      aarch64 gcc, mmdebstrap, qemu-user-static (needs root the first time);
#   2. an arm64 sysroot with the GStreamer -dev and runtime packages, made
#      once with `mmdebstrap --variant=extract` into
#      /var/cache/diemcau/sysroot-arm64-<hash of the package list>;
#   3. cargo build -p diemcau --target aarch64-unknown-linux-gnu with Debian's
#      rustc, the aarch64 gcc as linker and pkg-config pointed into the sysroot.
# Environment: CARGO_TARGET_DIR (default target/cross-aarch64),
#   DIEMCAU_CROSS_CACHE (default /var/cache/diemcau), DIEMCAU_SYSROOT (use this
#   sysroot instead), DIEMCAU_CROSS_KEEP_OLD=1 (keep sysroots of older lists),
#   DIEMCAU_CROSS_JOBS (cargo -j; default 2), CI=true (build with --locked).
source "$(dirname "$0")/common.sh"

# ---------------------------------------------------------------- 1. host
install_host_packages() {
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "host packages: all present"
    return
  fi
  [ "$(id -u)" = 0 ] || die "missing host packages: ${missing[*]} (run this script as root once, or: dpkg --add-architecture arm64 && apt-get update && apt-get install ${missing[*]})"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "host: dpkg --add-architecture arm64"
    dpkg --add-architecture arm64
  fi
  log "host: apt-get update; installing ${missing[*]}"
  apt-get update -q >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
    > "$CROSS_CACHE/apt-host.log" 2>&1 \
    || { tail -n 30 "$CROSS_CACHE/apt-host.log" >&2; die "apt-get install failed (log: $CROSS_CACHE/apt-host.log)"; }
}

# ---------------------------------------------------------------- 2. sysroot
# Absolute symlinks would point at the host's files: make them relative.
relativise_symlinks() {
  local root="$1" link target n=0
  while IFS= read -r -d '' link; do
    target="$(readlink "$link")"
    ln -sfn "$(realpath -s -m --relative-to="$(dirname "$link")" "$root$target")" "$link"
    n=$((n + 1))
  done < <(find "$root" -type l -lname '/*' -print0)
  log "sysroot: made $n absolute symlinks relative"
}

# --variant=extract runs no maintainer scripts, so update-alternatives never
# made the links that some libraries are found through (libavfilter needs
# libblas.so.3 -> blas/libblas.so.3). Make them as the postinst would.
add_alternatives() {
  local root="$1" alt name dir="$1/usr/lib/$MULTIARCH"
  for alt in blas/libblas.so.3 lapack/liblapack.so.3; do
    name="$(basename "$alt")"
    if [ -e "$dir/$alt" ] && [ ! -e "$dir/$name" ]; then
      ln -sfn "$alt" "$dir/$name"
      log "sysroot: alternative $name -> $alt"
    fi
  done
}

# Every shared library that FILEs need, transitively, must be in the sysroot:
# a missing one only shows up as a silently skipped GStreamer plugin later.
check_needed() {
  local root="$1"; shift
  local -A seen=()
  local queue=("$@") f lib found d bad=0
  while [ ${#queue[@]} -gt 0 ]; do
    f="${queue[0]}"; queue=("${queue[@]:1}")
    for lib in $(readelf -d "$f" 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
      [ -z "${seen[$lib]:-}" ] || continue
      seen[$lib]=1
      found=""
      for d in "lib/$MULTIARCH" "usr/lib/$MULTIARCH"; do
        if [ -e "$root/$d/$lib" ]; then found="$root/$d/$lib"; break; fi
      done
      if [ -z "$found" ]; then
        # Libraries found through the needing file's own RUNPATH are fine.
        [ "$lib" = ld-linux-aarch64.so.1 ] && continue
        echo "  $lib (needed by ${f#$root/}) is not in the sysroot" >&2; bad=1
      else
        queue+=("$found")
      fi
    done
  done
  [ $bad = 0 ]
}

check_sysroot() {
  local root="$1" f missing=0
  for f in \
    "lib/ld-linux-aarch64.so.1" \
    "usr/lib/$MULTIARCH/libc.so" \
    "usr/lib/$MULTIARCH/crt1.o" \
    "usr/lib/$MULTIARCH/libgstreamer-1.0.so" \
    "usr/lib/$MULTIARCH/libgstvideo-1.0.so" \
    "usr/lib/$MULTIARCH/libgstwebrtc-1.0.so" \
    "usr/lib/$MULTIARCH/libglib-2.0.so" \
    "usr/lib/$MULTIARCH/pkgconfig/gstreamer-1.0.pc" \
    "usr/lib/$MULTIARCH/pkgconfig/gstreamer-webrtc-1.0.pc" \
    "usr/lib/$MULTIARCH/gstreamer-1.0/libgstx264.so" \
    "usr/lib/$MULTIARCH/gstreamer-1.0/libgstpango.so" \
    "etc/fonts/fonts.conf" \
    "usr/lib/$MULTIARCH/gstreamer-1.0/libgstvideotestsrc.so" \
    "usr/lib/$MULTIARCH/gstreamer-1.0/libgstlibav.so" \
    "usr/lib/$MULTIARCH/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner"; do
    # -e follows symlinks: a dangling dev symlink counts as missing.
    if [ ! -e "$root/$f" ]; then echo "  missing or dangling: $f" >&2; missing=1; fi
  done
  [ $missing = 0 ] || return 1
  local p plugins=()
  for p in coreelements videotestsrc videoconvertscale pango x264 libav videoparsersbad \
           opus webrtc nice srtp dtls app; do
    plugins+=("$root/usr/lib/$MULTIARCH/gstreamer-1.0/libgst$p.so")
  done
  for p in "${plugins[@]}"; do [ -e "$p" ] || { echo "  missing plugin ${p#$root/}" >&2; return 1; }; done
  check_needed "$root" "${plugins[@]}" || return 1
  # The .pc files must resolve inside the sysroot.
  local libs
  libs="$(PKG_CONFIG_SYSROOT_DIR="$root" \
          PKG_CONFIG_LIBDIR="$root/usr/lib/$MULTIARCH/pkgconfig:$root/usr/share/pkgconfig" \
          pkg-config --libs --cflags gstreamer-1.0 gstreamer-video-1.0 gstreamer-webrtc-1.0 gstreamer-app-1.0)" \
    || { echo "  pkg-config cannot resolve the GStreamer .pc files" >&2; return 1; }
  case "$libs" in *"-L$root/usr/lib/$MULTIARCH"*|*"-I$root/usr/include"*) ;; *)
    echo "  pkg-config does not point into the sysroot: $libs" >&2; return 1;; esac
}

make_sysroot() {
  if [ -f "$SYSROOT/.diemcau-sysroot-ok" ]; then
    log "sysroot: cached at $SYSROOT"
    link_sysroot
    return
  fi
  command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed"
  [ "$(id -u)" = 0 ] || die "no sysroot at $SYSROOT yet: run this script as root once to make it (mmdebstrap --mode=root)"
  mkdir -p "$CROSS_CACHE"
  exec 9> "$CROSS_CACHE/.sysroot.lock"
  log "sysroot: waiting for the lock on $CROSS_CACHE/.sysroot.lock"
  flock 9
  if [ -f "$SYSROOT/.diemcau-sysroot-ok" ]; then   # another run made it meanwhile
    log "sysroot: cached at $SYSROOT"; link_sysroot; exec 9>&-; return
  fi
  local tmp="$SYSROOT.tmp" t0 include
  rm -rf "$tmp" "$SYSROOT"
  include="$(IFS=,; echo "${SYSROOT_PACKAGES[*]}")"
  log "sysroot: mmdebstrap --variant=extract --architectures=arm64 $SUITE (${#SYSROOT_PACKAGES[@]} packages + dependencies; a few minutes, downloads from Debian)"
  t0=$(date +%s)
  mmdebstrap --variant=extract --architectures=arm64 --mode=root \
      --skip=check/qemu --aptopt='APT::Install-Recommends "false"' \
      --include="$include" "$SUITE" "$tmp" "${MIRRORS[@]}" \
      > "$CROSS_CACHE/mmdebstrap.log" 2>&1 \
    || { tail -n 30 "$CROSS_CACHE/mmdebstrap.log" >&2; rm -rf "$tmp"; die "mmdebstrap failed (log: $CROSS_CACHE/mmdebstrap.log)"; }
  relativise_symlinks "$tmp"
  add_alternatives "$tmp"
  check_sysroot "$tmp" || { rm -rf "$tmp"; die "the new sysroot is incomplete (see above)"; }
  printf '%s\n' "${SYSROOT_PACKAGES[@]}" > "$tmp/.diemcau-sysroot-packages"
  date -u +%FT%TZ > "$tmp/.diemcau-sysroot-ok"
  mv "$tmp" "$SYSROOT"
  log "sysroot: ready in $(( $(date +%s) - t0 )) s, $(du -sh "$SYSROOT" | cut -f1) at $SYSROOT"
  link_sysroot
  if [ "${DIEMCAU_CROSS_KEEP_OLD:-0}" != 1 ]; then
    local old
    for old in "$CROSS_CACHE"/sysroot-arm64-*; do
      [ -d "$old" ] && [ "$old" != "$SYSROOT" ] || continue
      log "sysroot: removing the one for an older package list: $old"
      rm -rf "$old"
    done
  fi
  exec 9>&-
}

link_sysroot() {
  [ "$BUILD_SYSROOT" != "$SYSROOT" ] || return 0
  if [ "$(readlink "$BUILD_SYSROOT" 2>/dev/null)" != "$(basename "$SYSROOT")" ]; then
    ln -sfn "$(basename "$SYSROOT")" "$BUILD_SYSROOT.new"
    mv -T "$BUILD_SYSROOT.new" "$BUILD_SYSROOT"
    log "sysroot: $BUILD_SYSROOT -> $(basename "$SYSROOT")"
  fi
}

# ---------------------------------------------------------------- 3. build
cross_env() {
  local SYSROOT="$BUILD_SYSROOT"
  local pcdir="$SYSROOT/usr/lib/$MULTIARCH/pkgconfig:$SYSROOT/usr/share/pkgconfig"
  export RUSTC="$DEB_RUSTC"
  unset RUSTC_WRAPPER RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=--sysroot=$SYSROOT"
  # C code built by build scripts (cc crate) for the target.
  export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
  export CFLAGS_aarch64_unknown_linux_gnu="--sysroot=$SYSROOT"
  export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
  # pkg-config (and system-deps) for the target only; host build scripts keep the host's.
  export PKG_CONFIG_ALLOW_CROSS=1
  export PKG_CONFIG_SYSROOT_DIR_aarch64_unknown_linux_gnu="$SYSROOT"
  export PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu="$pcdir"
  export PKG_CONFIG_PATH_aarch64_unknown_linux_gnu="$pcdir"
}

build() {
  find_debian_rust
  log "rust: $("$DEB_RUSTC" -V) via $DEB_RUSTC; cargo: $("$DEB_CARGO" -V)"
  cross_env
  local args=(build -p diemcau --bin diemcau --target "$TARGET" -j "${DIEMCAU_CROSS_JOBS:-2}")
  [ "$PROFILE" = release ] && args+=(--release)
  [ "${CI:-}" = true ] && args+=(--locked)
  log "build: cargo ${args[*]} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  local t0; t0=$(date +%s)
  (cd "$REPO_ROOT" && "$DEB_CARGO" "${args[@]}") || die "cargo build for $TARGET failed (see the compiler output above)"
  [ -x "$BINARY" ] || die "cargo succeeded but $BINARY is missing"
  log "build: done in $(( $(date +%s) - t0 )) s"
  log "binary: $BINARY ($(stat -c %s "$BINARY") bytes, $(du -h "$BINARY" | cut -f1))"
  file -b "$BINARY" | sed 's/^/[cross] /' >&2
}

mkdir -p "$CROSS_CACHE" 2>/dev/null || true
install_host_packages
make_sysroot
build
echo "$BINARY"
