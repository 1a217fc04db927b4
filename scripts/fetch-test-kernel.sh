#!/usr/bin/env bash
# Fetches a Debian kernel (the package linux-image-amd64 depends on) without
# installing it, for network-boot tests: DEST/vmlinuz and DEST/VERSION.
#
#   scripts/fetch-test-kernel.sh [DEST]      (default ~/.cache/maas-test-kernel)
set -euo pipefail
dest="${1:-$HOME/.cache/maas-test-kernel}"
mkdir -p "$dest"
if [ -s "$dest/vmlinuz" ]; then
  echo "kernel already in $dest: $(cat "$dest/VERSION")"
  exit 0
fi
pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
if [ -z "$pkg" ]; then
  apt-get update -q
  pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$pkg")
dpkg -x "$work"/*.deb "$work/x"
cp "$work"/x/boot/vmlinuz-* "$dest/vmlinuz"
echo "$pkg" > "$dest/VERSION"
echo "kernel $pkg -> $dest/vmlinuz ($(stat -c %s "$dest/vmlinuz") bytes)"
