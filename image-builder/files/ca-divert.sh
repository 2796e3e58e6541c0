#!/bin/sh
# diemcau-image, mmdebstrap --essential-hook: while the packages are
# installed, update-ca-certificates is a no-op. Under qemu-user it forks a
# few commands per certificate and ran twice (the postinst, then its
# trigger): about 2 minutes of a build. ca-update.sh runs it once at the end.
set -eu
chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-ca-certificates
printf '#!/bin/sh\n# diemcau-image: replaced during the build only\nexit 0\n' > "$1/usr/sbin/update-ca-certificates"
chmod 0755 "$1/usr/sbin/update-ca-certificates"
