#!/usr/bin/env bash
# Make tlserve-base:bookworm, a stand-in for python:3.11-slim-bookworm where no container
# registry is reachable: Debian bookworm by debootstrap (python3.11, its venv module, CA
# certificates) imported into the local Docker engine. Needs root and debootstrap.
# The host's extra CA certificates (/usr/local/share/ca-certificates) are trusted inside,
# so pip in `docker build` works behind the same TLS-inspecting proxy as the host.
set -euo pipefail
image=${1:-tlserve-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image: already built"; exit 0
fi
root=$(mktemp -d /var/tmp/tlserve-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" "$mirror" >/dev/null
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
tar -C "$root" -c . | docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - "$image" >/dev/null
echo "$image: $(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec)"
