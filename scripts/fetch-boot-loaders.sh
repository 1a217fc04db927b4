#!/usr/bin/env bash
# Fetches the network boot loaders a rack serves from Debian packages,
# without installing anything: `apt-get download` into a temporary folder,
# `dpkg -x`, copy the files into DEST, print file / package / version /
# sha256. Running it again changes nothing unless a package did.
#
#   scripts/fetch-boot-loaders.sh [DEST]      (default ./boot-loaders)
#
# apt-get download checks each .deb against the signed archive index, as an
# install would. If another apt-get or dpkg holds a lock, it waits (up to 10
# minutes). If the package lists are missing, it runs `apt-get update` once.
# crates/maas-boot/README.md says where each file comes from and why.
set -euo pipefail

dest="${1:-./boot-loaders}"
lock_wait=600

# DEST name | package | file name inside the package | why this file
loaders=(
  "undionly.kpxe|ipxe|undionly.kpxe|iPXE for BIOS, chained through the NIC's own PXE (UNDI)"
  "ipxe.efi|ipxe|ipxe.efi|iPXE for UEFI x86-64, with its own NIC drivers"
  "lpxelinux.0|pxelinux|lpxelinux.0|PXELINUX that also fetches over HTTP (what BIOS clients get)"
  "pxelinux.0|pxelinux|pxelinux.0|plain TFTP-only PXELINUX"
  "ldlinux.c32|syslinux-common|bios/ldlinux.c32|PXELINUX's core module: it loads nothing without it"
  "poweroff.c32|syslinux-common|bios/poweroff.c32|what the PXELINUX poweroff config runs"
  "bootx64.efi|shim-signed|shimx64.efi.signed|Microsoft-signed shim: first stage for Secure Boot"
  # grubnetx64, not grubx64: both carry the network modules (efinet, tftp,
  # http), but grubx64.efi's built-in prefix is /EFI/debian on a local ESP,
  # while grubnetx64's is /grub on the server it was loaded from, and its
  # embedded config sources $prefix/x86_64-efi/grub.cfg, else
  # $prefix/grub.cfg: the grub/grub.cfg maas-boot renders. Renamed to
  # grubx64.efi because that is the name shim loads next to itself.
  "grubx64.efi|grub-efi-amd64-signed|grubnetx64.efi.signed|Debian-signed network GRUB, loaded by shim"
)

log() { printf '%s\n' "$*" >&2; }

# apt-get "$@", retried while another apt-get or dpkg holds a lock.
apt_get() {
  local deadline=$((SECONDS + lock_wait)) out rc
  while :; do
    rc=0
    out="$(apt-get "$@" 2>&1)" || rc=$?
    if [ "$rc" -eq 0 ]; then
      return 0
    fi
    if grep -qiE 'could not get lock|unable to lock|another process|waiting for cache lock' <<<"$out" &&
      [ "$SECONDS" -lt "$deadline" ]; then
      log "apt is busy (another apt-get or dpkg holds its lock); retrying in 5 s"
      sleep 5
      continue
    fi
    printf '%s\n' "$out" | tee "$work/apt.err" >&2
    return "$rc"
  done
}

packages=()
for entry in "${loaders[@]}"; do
  IFS='|' read -r _ pkg _ _ <<<"$entry"
  [[ " ${packages[*]-} " == *" $pkg "* ]] || packages+=("$pkg")
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/x"
# apt downloads as the unprivileged _apt user when it can write the folder.
if id _apt >/dev/null 2>&1; then chown _apt "$work/debs"; fi

download() { (cd "$work/debs" && apt_get download -q "${packages[@]}"); }
if ! download; then
  if grep -qE 'Unable to locate package|has no installation candidate|Can.t select candidate' "$work/apt.err"; then
    log "the package lists are missing or stale: apt-get update, then try again"
    apt_get update -q
    download
  else
    exit 1
  fi
fi

declare -A deb_of version_of
for deb in "$work"/debs/*.deb; do
  pkg="$(dpkg-deb -f "$deb" Package)"
  deb_of[$pkg]="$deb"
  version_of[$pkg]="$(dpkg-deb -f "$deb" Version)"
  dpkg -x "$deb" "$work/x/$pkg"
done

mkdir -p "$dest"
rows=()
for entry in "${loaders[@]}"; do
  IFS='|' read -r name pkg member _ <<<"$entry"
  deb="${deb_of[$pkg]:-}"
  if [ -z "$deb" ]; then
    log "apt-get download did not produce $pkg"
    exit 1
  fi
  # The regular file (not a symlink) whose path ends in /$member; exactly one.
  mapfile -t found < <(dpkg -c "$deb" | awk '$1 ~ /^-/ {print $6}' | grep -E "/${member//./\\.}\$" || true)
  if [ "${#found[@]}" -ne 1 ]; then
    log "$pkg: expected one file ending in /$member, found ${#found[@]}: ${found[*]-}"
    exit 1
  fi
  src="$work/x/$pkg/${found[0]#./}"
  if [ ! -s "$src" ]; then
    log "$pkg: ${found[0]} is empty"
    exit 1
  fi
  if cmp -s "$src" "$dest/$name"; then
    log "$name: unchanged"
  else
    install -m 0644 "$src" "$dest/$name.tmp"
    mv -f "$dest/$name.tmp" "$dest/$name"
    log "$name: written from $pkg ${found[0]#.}"
  fi
  rows+=("$name|$pkg|${version_of[$pkg]}|$(sha256sum "$dest/$name" | cut -d' ' -f1)")
done

printf '%-14s %-22s %-37s %s\n' file package version sha256
for row in "${rows[@]}"; do
  IFS='|' read -r name pkg version sum <<<"$row"
  printf '%-14s %-22s %-37s %s\n' "$name" "$pkg" "$version" "$sum"
done
