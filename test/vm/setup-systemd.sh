#!/usr/bin/env bash
# Builds the userland of the systemd-tier guest: an arm64 Debian bookworm
# rootfs made by mmdebstrap (minbase + systemd, udev, kmod, dbus), run under
# qemu-user-static through binfmt_misc. Kept apart from setup.sh's keyed
# directory: it takes ~2 minutes and only the systemd scenarios need it, so
# it has its own key (the package versions it resolves to and this script's
# text) and setup.sh can change without rebuilding it.
# Usage: setup-systemd.sh [CACHE_BASE]; prints the rootfs directory (last line).
# Needs setup.sh's private apt configuration (run setup.sh first).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BASE=${1:-${OTAD_VM_CACHE:-/var/cache/otad-vm}}
log() { echo "vm-setup-systemd: $*" >&2; }
apt_dir=$BASE/apt
[[ -f $apt_dir/etc/sources.list ]] || { log "no $apt_dir: run setup.sh first"; exit 1; }
APT=(-o "Dir::Etc::SourceList=$apt_dir/etc/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
  -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d" -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir" -o "APT::Architectures::=arm64" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root" -q)
pkgs="systemd systemd-sysv udev kmod dbus"
# The newest bookworm (+updates, +security) version of each package, not
# backports; one apt-cache call (each costs seconds).
vers=$(apt-cache "${APT[@]}" madison $(printf '%s:arm64 ' $pkgs libsystemd-shared libc6 dbus-daemon) |
  awk -F'|' '{gsub(/ /,"",$1); gsub(/ /,"",$2); sub(/:arm64$/,"",$1)}
    $2 ~ /^[^~]*(~deb12u[0-9]+)?[^~]*$/ && !($1 in v) {v[$1]=$2; o[++n]=$1}
    END {for (i=1; i<=n; i++) printf " %s=%s", o[i], v[o[i]]}')
key=$( { echo "$vers"; cat "$here/setup-systemd.sh"; } | sha256sum | cut -c1-12)
R=$BASE/systemd-rootfs-$key
# One build at a time: a second run (another make vmtest on the same
# machine) would delete the first one's $R.tmp under its mmdebstrap; it
# waits here instead and then finds the cache.
exec 9>"$BASE/systemd-rootfs.lock"
flock 9
if [[ -f $R/stamp ]]; then log "cached: $R ($vers)"; echo "$R/root"; exit 0; fi

# Foreign-architecture maintainer scripts run under qemu-aarch64-static. On a
# Debian host with systemd, installing qemu-user-static registers it; in a
# container without systemd-binfmt, register it here from the package's file.
bf=/proc/sys/fs/binfmt_misc
if [[ ! -e $bf/qemu-aarch64 ]]; then
  [[ -e $bf/register ]] || mount -t binfmt_misc binfmt_misc "$bf"
  log "registering qemu-aarch64 with binfmt_misc (/usr/lib/binfmt.d/qemu-aarch64.conf)"
  cat /usr/lib/binfmt.d/qemu-aarch64.conf >"$bf/register"
fi

log "building $R:$vers (mmdebstrap, ~2 min on 2 cores)"
rm -rf "$R.tmp"; mkdir -p "$R.tmp"
t0=$(date +%s)
# Documentation, man pages and translations are left out by dpkg itself.
mmdebstrap --quiet --arch=arm64 --variant=minbase --include="${pkgs// /,}" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  bookworm "$R.tmp/root" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main" >&2
# The guest never runs apt, perl (usrmerge pulls it in), iconv or
# systemd-hwdb update: their files only take slot space (hwdb.bin stays).
r=$R.tmp/root
rm -rf "$r/var/lib/apt/lists/"* "$r/var/cache/apt/"* "$r/var/cache/debconf/"*-old \
  "$r/usr/share/perl" "$r/usr/share/perl5" "$r/usr/lib/aarch64-linux-gnu/perl" "$r/usr/lib/aarch64-linux-gnu/gconv" \
  "$r/usr/lib/udev/hwdb.d"
dpkg-query --admindir="$R.tmp/root/var/lib/dpkg" -W -f='${Package}=${Version}\n' >"$R.tmp/packages"
echo "$vers" >"$R.tmp/versions"
log "rootfs $(du -sh "$R.tmp/root" | cut -f1) in $(( $(date +%s) - t0 ))s"
touch "$R.tmp/stamp"
rm -rf "$R"; mv "$R.tmp" "$R"
for d in "$BASE"/systemd-rootfs-*; do [[ $d == "$R" || $d == "$R.tmp" ]] || rm -rf "$d"; done
echo "$R/root"
