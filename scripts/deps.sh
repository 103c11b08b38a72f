#!/usr/bin/env bash
# Installs every Debian package the tests, demo and benchmarks need.
# Idempotent and quiet: prints nothing when all is present.
set -euo pipefail
pkgs=(
  libubootenv-tool u-boot-tools dbus systemd u-boot-qemu qemu-system-arm
  busybox-static mmdebstrap qemu-user-static mtd-utils e2fsprogs dosfstools
  mtools bsdiff xdelta3 zstd rauc parted fdisk bc kmod cpio util-linux
  gcc-aarch64-linux-gnu
  time unzip squashfs-tools
  arch-test
  nginx softhsm2 opensc
  meson ninja-build pkg-config libcurl4-openssl-dev libjson-glib-dev libglib2.0-dev
)
missing=()
for p in "${pkgs[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$st" == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then echo "deps: need root for apt-get" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
