#!/bin/sh
# diemcau-image, mmdebstrap --customize-hook: puts the real
# update-ca-certificates back and makes /etc/ssl/certs once. The result is
# the same files as a run inside the chroot (links to
# /usr/share/ca-certificates, the bundle, openssl's hash links; checked
# against one), so the host's own script does it natively when it has one.
set -eu
root=$1
rm -f "$root/usr/sbin/update-ca-certificates"
chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-ca-certificates
if command -v update-ca-certificates >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
	update-ca-certificates --fresh --hooksdir "" \
		--certsconf "$root/etc/ca-certificates.conf" \
		--certsdir "$root/usr/share/ca-certificates" \
		--localcertsdir "$root/usr/local/share/ca-certificates" \
		--etccertsdir "$root/etc/ssl/certs"
	# Its links name the host's path to the root: make them the image's.
	for l in "$root"/etc/ssl/certs/*; do
		[ -L "$l" ] || continue
		t=$(readlink "$l")
		case "$t" in "$root"/*) ln -sfn "${t#"$root"}" "$l" ;; esac
	done
else
	chroot "$root" update-ca-certificates --fresh --hooksdir ""
fi
