#!/usr/bin/env bash
# delta-corpus.sh — rebuild the otad delta-update benchmark corpus from scratch
# (`make bench-delta` runs it when $OUT does not match its MANIFEST).
#
# Sources (third-party, nothing written by us):
#   * npm registry     : @esbuild/linux-arm64 (a ~9.3 MiB static arm64 Go executable)
#   * Go module proxy  : golang.org/toolchain@v0.0.1-goX.Y.Z.linux-arm64 (arm64 Go toolchain binaries)
#   * Debian archive   : arm64 .debs fetched with `apt-get download` through a private apt
#                        configuration (the host's dpkg/apt state is not touched)
# Outputs ($OUT, default $HOME/.cache/otad-corpus):
#   esbuild-<ver>.bin                      raw executables  (pairs: esbuild-minor 0.25.11->0.25.12,
#                                                              exe-major 0.24.2->0.25.0)
#   rootfs-v{1,2}.ext4                     fixed-size ext4 slot images (pair: rootfs-minor v1->v2)
#   rootfs-{bookworm,trixie}.ext4          same package set, Debian 12 -> Debian 13 (pair: rootfs-major)
#   busybox-{bookworm,trixie}.ext4         small busybox-static image, Debian 12 -> 13 (pair: busybox-major)
#   PAIRS (name old new description), MANIFEST (sha256 + sizes)
# Images are deterministic: fixed UUID/hash_seed, E2FSPROGS_FAKE_TIME, all mtimes = $EPOCH.
# Running twice gives byte-identical images.
#
# Caveat: npm and the Go proxy are immutable; the Debian archive drops superseded versions,
# so pinned versions eventually 404. A pin that is gone is replaced by the suite's current
# version with a log line ("pin ... gone"), so the build still finishes; the images then
# differ from earlier builds (MANIFEST shows it) — re-pin with apt-cache madison.
# The major pairs use merged /usr in both images (bin, sbin, lib -> usr/...), as installed
# Debian 12 and 13 systems do, so files that did not move between releases keep their paths.
# Requirements (Debian 12): apt-get install e2fsprogs squashfs-tools unzip; go >= 1.21; npm.
set -euo pipefail

OUT=${OUT:-$HOME/.cache/otad-corpus}
WORK=${WORK:-$HOME/.cache/otad-corpus-work}
EPOCH=${EPOCH:-1700000000}                 # fixed timestamp for every inode / superblock
UUID=${UUID:-5e1f0c0a-07ad-4e1f-a0b0-000000000001}
EXT4_SIZE_MIB=${EXT4_SIZE_MIB:-160}        # A/B slot size of the rootfs-minor images
MAJOR_EXT4_MIB=${MAJOR_EXT4_MIB:-256}      # slot size of both rootfs-major images (trixie's tree is larger)
BB_EXT4_MIB=${BB_EXT4_MIB:-32}             # both busybox-major images
[ "${1:-}" = "--clean" ] && rm -rf "$WORK" "$OUT"
mkdir -p "$OUT" "$WORK"/{npm,gomod,debs,trees}

ESBUILD_VERSIONS="0.25.11 0.25.12 0.24.2 0.25.0"
GO_V1=1.26.0; GO_V2=1.26.1
# Go files placed in each rootfs (stand-in for the vendor's own Go application binaries)
GO_FILES="bin/go bin/gofmt pkg/tool/linux_arm64/link pkg/tool/linux_arm64/vet"

# v1: bookworm, oldest version of each package still in bookworm/-updates/-security
V1_PINS="
  libc6=2.36-9+deb12u7 libgcc-s1=12.2.0-14+deb12u1 libstdc++6=12.2.0-14+deb12u1 busybox=1:1.35.0-4+deb12u1+b1 bash=5.2.15-2+b13 dash=0.5.12-2
  coreutils=9.1-1 systemd=252.38-1~deb12u1 libsystemd0=252.38-1~deb12u1 libsystemd-shared=252.38-1~deb12u1 udev=252.38-1~deb12u1
  libudev1=252.38-1~deb12u1 dbus=1.14.10-1~deb12u1 libdbus-1-3=1.14.10-1~deb12u1 openssl=3.0.17-1~deb12u2 libcrypt1=1:4.4.33-2 zlib1g=1:1.2.13.dfsg-1
  liblzma5=5.4.1-1+deb12u1 libzstd1=1.5.4+dfsg2-5 libselinux1=3.4-1+b6 libpcre2-8-0=10.42-1 libcap2=1:2.66-4+deb12u3+b1 libmount1=2.38.1-5+deb12u1
  libblkid1=2.38.1-5+deb12u1 libuuid1=2.38.1-5+deb12u1 util-linux=2.38.1-5+deb12u1 iproute2=6.1.0-3 libmnl0=1.0.4-3 libbpf1=1:1.1.2-0+deb12u1
  openssh-server=1:9.2p1-2+deb12u7 openssh-client=1:9.2p1-2+deb12u7 curl=7.88.1-10+deb12u5 libnghttp2-14=1.52.0-1+deb12u3 libidn2-0=2.3.3-1+b1
  libsqlite3-0=3.40.1-2+deb12u2 libxml2=2.9.14+dfsg-1.3~deb12u4 libexpat1=2.5.0-1+deb12u2 libffi8=3.4.4-1 ca-certificates=20230311+deb12u1
  libkmod2=30+20221128-1 kmod=30+20221128-1 wpasupplicant=2:2.10-12+deb12u2 mosquitto=2.0.11-1.2+deb12u1 libcjson1=1.7.15-1+deb12u4
  nftables=1.0.6-2+deb12u2 libnftables1=1.0.6-2+deb12u2 libnftnl11=1.2.4-2 libjansson4=2.14-2 libseccomp2=2.5.4-1+deb12u1 libgmp10=2:6.2.1+dfsg1-1.1
  libp11-kit0=0.24.1-2 libtasn1-6=4.19.0-2+deb12u1 libkrb5-3=1.20.1-2+deb12u5 libgssapi-krb5-2=1.20.1-2+deb12u5 libk5crypto3=1.20.1-2+deb12u5
  libkrb5support0=1.20.1-2+deb12u5 libcom-err2=1.47.0-2+b2 libbz2-1.0=1.0.8-5+b1 liblz4-1=1.9.4-1 libgcrypt20=1.10.1-3+deb12u1 libgpg-error0=1.46-1
  libpam0g=1.5.2-6+deb12u2 libpam-modules=1.5.2-6+deb12u2 libtinfo6=6.4-4 libncursesw6=6.4-4 libsasl2-2=2.1.28+dfsg-10
  librtmp1=2.4+20151223.gitfa8646d.1-2+b2 libbrotli1=1.0.9-2+b6 libacl1=2.3.1-3 libattr1=1:2.5.1-4 libaudit1=1:3.0.9-1 libapparmor1=3.0.8-3
  libnl-3-200=3.7.0-0.2+b1 libnl-genl-3-200=3.7.0-0.2+b1 libpcsclite1=1.9.9-2 libjson-c5=0.16-2 libcryptsetup12=2:2.6.1-4~deb12u2
  libdevmapper1.02.1=2:1.02.185-2 libargon2-1=0~20171227-0.3+deb12u1 libfdisk1=2.38.1-5+deb12u1 libsmartcols1=2.38.1-5+deb12u1 libwrap0=7.6.q-32
  tzdata=2025b-0+deb12u1 libssl3=3.0.17-1~deb12u2 libelf1=0.188-2.1 libcurl4=7.88.1-10+deb12u5 libpsl5=0.21.2-1 libssh2-1=1.10.0-3+b1
  libglib2.0-0=2.74.6-2+deb12u2
  libgnutls30=3.7.9-2+deb12u7 libnettle8=3.8.1-2 libhogweed6=3.8.1-2 libunistring2=1.0-2 libreadline8=8.2-1.3 libldap-2.5-0=2.5.13+dfsg-5
"
# v2: bookworm, newest version (point release + security); 35 of 95 packages differ from v1
V2_PINS="
  libc6=2.36-9+deb12u14 libgcc-s1=12.2.0-14+deb12u1 libstdc++6=12.2.0-14+deb12u1 busybox=1:1.35.0-4+deb12u1+b1 bash=5.2.15-2+b13 dash=0.5.12-2
  coreutils=9.1-1 systemd=252.39-1~deb12u2 libsystemd0=252.39-1~deb12u2 libsystemd-shared=252.39-1~deb12u2 udev=252.39-1~deb12u2
  libudev1=252.39-1~deb12u2 dbus=1.14.10-1~deb12u1 libdbus-1-3=1.14.10-1~deb12u1 openssl=3.0.22-1~deb12u2 libcrypt1=1:4.4.33-2 zlib1g=1:1.2.13.dfsg-1
  liblzma5=5.4.1-1+deb12u2 libzstd1=1.5.4+dfsg2-5 libselinux1=3.4-1+b6 libpcre2-8-0=10.42-1+deb12u2 libcap2=1:2.66-4+deb12u3+b1
  libmount1=2.38.1-5+deb12u3 libblkid1=2.38.1-5+deb12u3 libuuid1=2.38.1-5+deb12u3 util-linux=2.38.1-5+deb12u3 iproute2=6.1.0-3 libmnl0=1.0.4-3
  libbpf1=1:1.1.2-0+deb12u1 openssh-server=1:9.2p1-2+deb12u10 openssh-client=1:9.2p1-2+deb12u10 curl=7.88.1-10+deb12u15 libnghttp2-14=1.52.0-1+deb12u3
  libidn2-0=2.3.3-1+b1 libsqlite3-0=3.40.1-2+deb12u2 libxml2=2.9.14+dfsg-1.3~deb12u6 libexpat1=2.5.0-1+deb12u5 libffi8=3.4.4-1
  ca-certificates=20250419~deb12u2 libkmod2=30+20221128-1 kmod=30+20221128-1 wpasupplicant=2:2.10-12+deb12u3 mosquitto=2.0.11-1.2+deb12u2
  libcjson1=1.7.15-1+deb12u4 nftables=1.0.6-2+deb12u2 libnftables1=1.0.6-2+deb12u2 libnftnl11=1.2.4-2 libjansson4=2.14-2 libseccomp2=2.5.4-1+deb12u1
  libgmp10=2:6.2.1+dfsg1-1.1 libp11-kit0=0.24.1-2 libtasn1-6=4.19.0-2+deb12u1 libkrb5-3=1.20.1-2+deb12u5 libgssapi-krb5-2=1.20.1-2+deb12u5
  libk5crypto3=1.20.1-2+deb12u5 libkrb5support0=1.20.1-2+deb12u5 libcom-err2=1.47.0-2+b2 libbz2-1.0=1.0.8-5+b1 liblz4-1=1.9.4-1
  libgcrypt20=1.10.1-3+deb12u1 libgpg-error0=1.46-1 libpam0g=1.5.2-6+deb12u3 libpam-modules=1.5.2-6+deb12u3 libtinfo6=6.4-4 libncursesw6=6.4-4
  libsasl2-2=2.1.28+dfsg-10+deb12u1 librtmp1=2.4+20151223.gitfa8646d.1-2+b2 libbrotli1=1.0.9-2+deb12u1 libacl1=2.3.1-3 libattr1=1:2.5.1-4
  libaudit1=1:3.0.9-1 libapparmor1=3.0.8-3 libnl-3-200=3.7.0-0.2+b1 libnl-genl-3-200=3.7.0-0.2+b1 libpcsclite1=1.9.9-2 libjson-c5=0.16-2
  libcryptsetup12=2:2.6.1-4~deb12u2 libdevmapper1.02.1=2:1.02.185-2 libargon2-1=0~20171227-0.3+deb12u1 libfdisk1=2.38.1-5+deb12u3
  libsmartcols1=2.38.1-5+deb12u3 libwrap0=7.6.q-32 tzdata=2026f-0+deb12u1 libssl3=3.0.22-1~deb12u2 libelf1=0.188-2.1 libcurl4=7.88.1-10+deb12u15
  libpsl5=0.21.2-1 libssh2-1=1.10.0-3+deb12u1
  libglib2.0-0=2.74.6-2+deb12u9 libgnutls30=3.7.9-2+deb12u7 libnettle8=3.8.1-2 libhogweed6=3.8.1-2
  libunistring2=1.0-2 libreadline8=8.2-1.3 libldap-2.5-0=2.5.13+dfsg-5
"

# rootfs-major, new side: the V2 package set in trixie (Debian 13) at the
# versions of 2026-12-07. Renamed in 13: libssl3, libelf1, libcurl4, libpsl5,
# libssh2-1, libglib2.0-0, libgnutls30, libnettle8, libhogweed6, libreadline8
# -> <name>t64; libunistring2 -> libunistring5; libldap-2.5-0 -> libldap2;
# dbus's daemon and tools moved to dbus-daemon, dbus-bin, dbus-system-bus-common.
TRIXIE_PINS="
  libc6=2.41-12+deb13u5 libgcc-s1=14.2.0-19 libstdc++6=14.2.0-19 busybox=1:1.37.0-6+b9 bash=5.2.37-2+b10 dash=0.5.12-12 coreutils=9.7-3 
  systemd=257.13-1~deb13u1 libsystemd0=257.13-1~deb13u1 libsystemd-shared=257.13-1~deb13u1 udev=257.13-1~deb13u1 libudev1=257.13-1~deb13u1 
  dbus=1.16.2-2 libdbus-1-3=1.16.2-2 openssl=3.5.10-1~deb13u1 libcrypt1=1:4.4.38-1 zlib1g=1:1.3.dfsg+really1.3.1-1+deb13u1 liblzma5=5.8.1-1+deb13u2 
  libzstd1=1.5.7+dfsg-1+deb13u1 libselinux1=3.8.1-1 libpcre2-8-0=10.46-1~deb13u3 libcap2=1:2.75-10+deb13u1+b3 libmount1=2.41.5-0+deb13u1 
  libblkid1=2.41.5-0+deb13u1 libuuid1=2.41.5-0+deb13u1 util-linux=2.41.5-0+deb13u1 iproute2=6.15.0-1 libmnl0=1.0.5-3 libbpf1=1:1.5.0-3 
  openssh-server=1:10.0p1-7+deb13u4 openssh-client=1:10.0p1-7+deb13u4 curl=8.14.1-2+deb13u7 libnghttp2-14=1.64.0-1.1+deb13u2 libidn2-0=2.3.8-2 
  libsqlite3-0=3.46.1-7+deb13u2 libxml2=2.12.7+dfsg+really2.9.14-2.1+deb13u3 libexpat1=2.9.0-1~deb13u1 libffi8=3.4.8-2 ca-certificates=20250419+deb13u1 
  libkmod2=34.2-2 kmod=34.2-2 wpasupplicant=2:2.10-24 mosquitto=2.0.21-1 libcjson1=1.7.18-3.1+deb13u1 nftables=1.1.3-1 libnftables1=1.1.3-1 
  libnftnl11=1.2.9-1 libjansson4=2.14-2+b3 libseccomp2=2.6.0-2 libgmp10=2:6.3.0+dfsg-3 libp11-kit0=0.25.5-3 libtasn1-6=4.20.0-2+deb13u1 
  libkrb5-3=1.21.3-5+deb13u2 libgssapi-krb5-2=1.21.3-5+deb13u2 libk5crypto3=1.21.3-5+deb13u2 libkrb5support0=1.21.3-5+deb13u2 libcom-err2=1.47.2-3+b12 
  libbz2-1.0=1.0.8-6 liblz4-1=1.10.0-4 libgcrypt20=1.11.0-7+deb13u1 libgpg-error0=1.51-4 libpam0g=1.7.0-5 libpam-modules=1.7.0-5 
  libtinfo6=6.5+20250216-2 libncursesw6=6.5+20250216-2 libsasl2-2=2.1.28+dfsg1-9 librtmp1=2.4+20151223.gitfa8646d.1-2+b5 libbrotli1=1.1.0-2+deb13u1 
  libacl1=2.3.2-2+b1 libattr1=1:2.5.2-3 libaudit1=1:4.0.2-2+deb13u1 libapparmor1=4.1.0-1 libnl-3-200=3.7.0-2 libnl-genl-3-200=3.7.0-2 
  libpcsclite1=2.3.3-1 libjson-c5=0.18+ds-1 libcryptsetup12=2:2.7.5-2 libdevmapper1.02.1=2:1.02.205-2 libargon2-1=0~20190702+dfsg-4+b2 
  libfdisk1=2.41.5-0+deb13u1 libsmartcols1=2.41.5-0+deb13u1 libwrap0=7.6.q-36 tzdata=2026f-0+deb13u1 libssl3t64=3.5.10-1~deb13u1 libelf1t64=0.192-4 
  libcurl4t64=8.14.1-2+deb13u7 libpsl5t64=0.21.2-1.1+b1 libssh2-1t64=1.11.1-1+deb13u2 libglib2.0-0t64=2.84.4-3~deb13u5 libgnutls30t64=3.8.9-3+deb13u4 
  libnettle8t64=3.10.1-1 libhogweed6t64=3.10.1-1 libreadline8t64=8.2-6 libunistring5=1.3-2 libldap2=2.6.10+dfsg-1 dbus-bin=1.16.2-2 
  dbus-daemon=1.16.2-2 dbus-system-bus-common=1.16.2-2
"
# busybox-major: busybox-static and dropbear-bin with what they need at run
# time, plus base-files and netbase for /etc
BB_BOOKWORM_PINS="
  busybox-static=1:1.35.0-4+deb12u1+b1 base-files=12.4+deb12u15 netbase=6.4 dropbear-bin=2022.83-1+deb12u3 libc6=2.36-9+deb12u14
  libcrypt1=1:4.4.33-2 zlib1g=1:1.2.13.dfsg-1+deb12u1 libtomcrypt1=1.18.2-6 libtommath1=1.2.0-6+deb12u1
"
BB_TRIXIE_PINS="
  busybox-static=1:1.37.0-6+b9 base-files=13.8+deb13u8 netbase=6.5 dropbear-bin=2025.89-1~deb13u1 libc6=2.41-12+deb13u5
  libcrypt1=1:4.4.38-1 zlib1g=1:1.3.dfsg+really1.3.1-1+deb13u1 libtomcrypt1=1.18.2+dfsg-7+b2 libtommath1=1.3.0-1
"

log() { echo "[make-corpus] $*" >&2; }

# ---------------------------------------------------------------- 1. npm: esbuild
for v in $ESBUILD_VERSIONS; do
  f="$OUT/esbuild-$v.bin"
  [ -s "$f" ] && continue
  log "npm pack @esbuild/linux-arm64@$v"
  (cd "$WORK/npm" && npm pack --silent "@esbuild/linux-arm64@$v" >/dev/null)
  tar -xzf "$WORK/npm/esbuild-linux-arm64-$v.tgz" -C "$WORK/npm" package/bin/esbuild
  mv "$WORK/npm/package/bin/esbuild" "$f"; rm -rf "$WORK/npm/package"
  chmod 0755 "$f"; touch -d "@$EPOCH" "$f"
done

# ---------------------------------------------------------------- 2. Go proxy: toolchains
go_zip() {  # prints the path of the verified module zip
  GOMODCACHE="$WORK/gomod" GOFLAGS=-modcacherw GOTOOLCHAIN=local \
    go mod download -json "golang.org/toolchain@v0.0.1-go$1.linux-arm64" |
    sed -n 's/^[[:space:]]*"Zip": "\(.*\)",$/\1/p'
}

# ---------------------------------------------------------------- 3. Debian: private apt configs (arm64)
# One private apt state per Debian release ($WORK/apt for bookworm, as before,
# $WORK/apt-trixie); apt_use points APT_CONFIG at it. The host's apt/dpkg
# state is never read or written.
apt_use() {  # $1 = release codename
  local rel=$1 dir="$WORK/apt"
  [ "$rel" = bookworm ] || dir="$WORK/apt-$rel"
  export APT_CONFIG="$dir/apt.conf"
  [ -f "$APT_CONFIG" ] && return 0
  mkdir -p "$dir"/etc/apt/{sources.list.d,preferences.d,apt.conf.d,trusted.gpg.d} \
           "$dir"/var/lib/apt/lists/partial "$dir"/var/cache/apt/archives/partial "$dir"/var/lib/dpkg
  touch "$dir/var/lib/dpkg/status"
  # mirrors: the ones this machine's apt already uses
  local main_uri sec_uri
  main_uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  sec_uri=$(awk '/^URIs:/ && $2 ~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  if [ -z "$main_uri" ] || [ -z "$sec_uri" ]; then echo "no Debian mirror found in /etc/apt/sources.list.d/debian.sources" >&2; exit 1; fi
  cat > "$dir/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $main_uri
Suites: $rel $rel-updates
Components: main
Architectures: arm64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $sec_uri
Suites: $rel-security
Components: main
Architectures: arm64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat > "$APT_CONFIG" <<CONF
Dir "$dir/";
Dir::Etc "$dir/etc/apt/";
Dir::State "$dir/var/lib/apt/";
Dir::State::status "$dir/var/lib/dpkg/status";
Dir::Cache "$dir/var/cache/apt/";
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
Acquire::Languages "none";
CONF
}
apt_updated=" "
deb_file() {  # $1 = dir, $2 = pkg=version: the .deb's path, if downloaded
  local n=${2%%=*} v=${2#*=} f; v=${v//:/%3a}
  for f in "$1/${n}_${v}_"*.deb; do [ -f "$f" ] && echo "$f"; return 0; done
}
fetch_debs() {  # $1 = dest dir, $2 = release, rest = pkg=version pins; writes $1/RESOLVED
  local d=$1 rel=$2; shift 2; mkdir -p "$d"
  local missing=() p
  for p in "$@"; do [ -n "$(deb_file "$d" "$p")" ] || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    apt_use "$rel"
    case $apt_updated in *" $rel "*) ;; *) log "apt-get update ($rel, private arm64 config)"; apt-get -qq update; apt_updated="$apt_updated$rel ";; esac
    log "apt-get download ${#missing[@]} debs ($rel) -> $d"
    if ! (cd "$d" && apt-get -qq download "${missing[@]}"); then
      # one pin is gone (point releases drop superseded versions): fetch the
      # rest one by one, and the gone ones at the suite's current version
      for p in "${missing[@]}"; do
        [ -n "$(deb_file "$d" "$p")" ] && continue
        (cd "$d" && apt-get -qq download "$p" 2>/dev/null) && continue
        local cur; cur=$(apt-cache policy "${p%%=*}" | awk '/Candidate:/ {print $2}')
        if [ -z "$cur" ] || [ "$cur" = "(none)" ]; then echo "${p%%=*}: not in $rel" >&2; exit 1; fi
        log "pin $p gone from $rel: using the current version $cur"
        (cd "$d" && apt-get -qq download "${p%%=*}=$cur")
        echo "${p%%=*}=$cur" >> "$d/REPINNED"
      done
    fi
  fi
  # the versions actually used: the pin, or its replacement recorded above
  : > "$d/RESOLVED"
  for p in "$@"; do
    local r=""
    [ -f "$d/REPINNED" ] && r=$(awk -F= -v n="${p%%=*}" '$1 == n {v = $0} END {print v}' "$d/REPINNED")
    if [ -n "$(deb_file "$d" "$p")" ]; then echo "$p"; else echo "$r"; fi >> "$d/RESOLVED"
  done
}

# ---------------------------------------------------------------- 4. assemble rootfs trees
merge_usr() {  # $1 = tree: bin, sbin, lib -> usr/..., as on installed Debian 12 and 13
  local t=$1 x
  for x in bin sbin lib; do
    mkdir -p "$t/usr/$x"
    if [ -d "$t/$x" ] && [ ! -L "$t/$x" ]; then
      cp -a "$t/$x/." "$t/usr/$x/"; rm -rf "${t:?}/$x"
    fi
    ln -s "usr/$x" "$t/$x"
  done
}
build_tree() {  # $1 = name, $2 = go version ("" for none), $3 = pins, $4 = release, $5 = merged-usr (1/0)
  local name=$1 gov=$2 pins=$3 rel=${4:-bookworm} merged=${5:-0} t="$WORK/trees/$1"
  [ -f "$t.done" ] && return 0
  rm -rf "$t"; mkdir -p "$t"
  # shellcheck disable=SC2086
  fetch_debs "$WORK/debs/$name" "$rel" $pins
  local n=0 p
  while read -r p; do
    dpkg-deb -x "$(deb_file "$WORK/debs/$name" "$p")" "$t"; n=$((n+1))
  done < "$WORK/debs/$name/RESOLVED"
  log "extracted $n debs into $t"
  # typical embedded trimming: docs, locales, iconv modules, udev hwdb sources
  rm -rf "$t"/usr/share/{doc,man,info,locale,lintian,bug,bash-completion,zsh} \
         "$t"/usr/lib/aarch64-linux-gnu/gconv "$t"/lib/udev/hwdb.d "$t"/usr/lib/udev/hwdb.d
  if [ "$merged" = 1 ]; then merge_usr "$t"; fi
  if [ -n "$gov" ]; then
    local z; z=$(go_zip "$gov"); [ -s "$z" ] || { echo "go zip for $gov missing" >&2; exit 1; }
    local pre="golang.org/toolchain@v0.0.1-go$gov.linux-arm64"
    local tmp="$WORK/trees/.go-$gov"; rm -rf "$tmp"; mkdir -p "$tmp"
    # shellcheck disable=SC2046
    unzip -q -o "$z" $(for f in $GO_FILES; do echo "$pre/$f"; done) -d "$tmp"
    mkdir -p "$t/usr/local"; mv "$tmp/$pre" "$t/usr/local/go"; rm -rf "$tmp"
    chmod 0755 "$t"/usr/local/go/bin/* "$t"/usr/local/go/pkg/tool/linux_arm64/*
  fi
  mkdir -p "$t"/{dev,proc,sys,run,tmp,data,boot,root,home,mnt}
  if [ -n "$gov" ]; then
    printf 'otad-corpus %s (debian pins + go%s)\n' "$name" "$gov" > "$t/etc/otad-corpus-version"
  else
    printf 'otad-corpus %s (debian %s pins)\n' "$name" "$rel" > "$t/etc/otad-corpus-version"
  fi
  chown -R 0:0 "$t"    # dpkg-deb -x keeps the deb's owners (all root here); normalise anyway
  find "$t" -exec touch -h -d "@$EPOCH" {} +
  touch "$t.done"
}
build_tree v1 "$GO_V1" "$V1_PINS"
build_tree v2 "$GO_V2" "$V2_PINS"
# rootfs-major: the same 95-package set, newest bookworm (the v2 pins, no Go)
# -> trixie with the packages renamed in 13 (t64 transition, libunistring5,
# libldap2) and dbus's split (dbus-bin, dbus-daemon, dbus-system-bus-common)
build_tree bookworm "" "$V2_PINS" bookworm 1
build_tree trixie "" "$TRIXIE_PINS" trixie 1
# busybox-major: busybox-static and dropbear (sshd) with their libraries and
# base configuration: BusyBox 1.35 -> 1.37, glibc 2.36 -> 2.41
build_tree bb-bookworm "" "$BB_BOOKWORM_PINS" bookworm 1
build_tree bb-trixie "" "$BB_TRIXIE_PINS" trixie 1

# ---------------------------------------------------------------- 5. images
mk_ext4() {  # $1 = tree, $2 = image name, $3 = size in MiB
  local t="$WORK/trees/$1" img="$OUT/$2.ext4" mib=$3
  rm -f "$img"
  log "mke2fs ${mib}MiB -> $img"
  E2FSPROGS_FAKE_TIME=$EPOCH mke2fs -q -F -t ext4 -b 4096 -m 0 -L rootfs -U "$UUID" \
      -E "hash_seed=$UUID,root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard" \
      -d "$t" "$img" "${mib}M"
  # mke2fs -d copies each inode's ctime and atime from the host: ctime cannot be
  # set with touch, and atime moves when a build reads the tree (relatime updates
  # an atime older than the ctime), so a second build would differ; pin both
  (cd "$t" && find . | sed 's|^\.||; s|^$|/|' |
     awk -v e="$EPOCH" '{printf "sif \"%s\" ctime @%s\nsif \"%s\" atime @%s\n", $0, e, $0, e}') > "$WORK/sif-$1.cmds"
  E2FSPROGS_FAKE_TIME=$EPOCH debugfs -w -f "$WORK/sif-$1.cmds" "$img" 2>&1 | { grep -v '^debugfs' || true; } >&2
  e2fsck -fn "$img" >/dev/null
}
for v in v1 v2; do mk_ext4 $v "rootfs-$v" "$EXT4_SIZE_MIB"; done
for v in bookworm trixie; do
  mk_ext4 "$v" "rootfs-$v" "$MAJOR_EXT4_MIB"
  mk_ext4 "bb-$v" "busybox-$v" "$BB_EXT4_MIB"
done

# ---------------------------------------------------------------- 6. pairs + manifest
cat > "$OUT/PAIRS" <<P
# name            old                     new                     what changes
esbuild-minor     esbuild-0.25.11.bin     esbuild-0.25.12.bin     single static arm64 executable, patch release
rootfs-minor      rootfs-v1.ext4          rootfs-v2.ext4          ext4 slot: 35/95 debs get stable/security updates + go1.26.0->go1.26.1
exe-major         esbuild-0.24.2.bin      esbuild-0.25.0.bin      single static arm64 executable, next minor (0.25.0: new features and breaking changes)
rootfs-major      rootfs-bookworm.ext4    rootfs-trixie.ext4      ext4 slot (${MAJOR_EXT4_MIB} MiB): the same 95-package set, Debian 12 (bookworm, newest) -> Debian 13 (trixie), merged /usr
busybox-major     busybox-bookworm.ext4   busybox-trixie.ext4     small ext4 image (${BB_EXT4_MIB} MiB): busybox-static + dropbear + libs/config, Debian 12 -> 13 (BusyBox 1.35 -> 1.37)
P
(cd "$OUT" && for f in *.bin *.ext4; do
   printf '%s  %s  %s\n' "$(sha256sum "$f" | cut -c1-64)" "$(stat -c %s "$f")" "$f"; done) > "$OUT/MANIFEST"
for v in v1 v2 bookworm trixie bb-bookworm bb-trixie; do
  printf 'tree %s: %s bytes in %s files\n' "$v" "$(du -sb "$WORK/trees/$v" | cut -f1)" \
     "$(find "$WORK/trees/$v" -type f | wc -l)" >> "$OUT/MANIFEST"
  if [ -s "$WORK/debs/$v/REPINNED" ]; then
    printf 'tree %s repinned (pin gone from the archive): %s\n' "$v" "$(tr '\n' ' ' < "$WORK/debs/$v/REPINNED")" >> "$OUT/MANIFEST"
  fi
done
cat "$OUT/MANIFEST"
