#!/usr/bin/env bash
# Builds everything the VM harness needs from Debian packages and caches it
# in a directory keyed by the package versions (and this script's own text):
#   QEMU 10 (bookworm-backports, unpacked, not installed), Debian's qemu_arm64
#   U-Boot as a 64 MiB pflash bank, the arm64 kernel + modules, out-of-tree MTD
#   modules (CFI NOR + physmap) built from linux-source against the headers,
#   a busybox initramfs, and U-Boot's default environment captured once.
# QEMU needs "-audio none": otherwise it probes audio modules and finds the
# host's QEMU 7.2 modules, which abort a 10.0 binary.
# Prints the cache directory on stdout (last line). Nothing is installed on
# the host: a private apt configuration is used for arm64 and backports.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BASE=${OTAD_VM_CACHE:-/var/cache/otad-vm}
log() { echo "vm-setup: $*" >&2; }

apt_dir=$BASE/apt
mkdir -p "$apt_dir"/{lists/partial,archives/partial,etc/preferences.d,etc/sources.list.d} "$BASE/debs"
cat >"$apt_dir/etc/sources.list.new" <<'EOF'
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
EOF
sed 's/^deb \[arch=amd64,arm64 /deb-src [/' "$apt_dir/etc/sources.list.new" >>"$apt_dir/etc/sources.list.new"
if ! cmp -s "$apt_dir/etc/sources.list.new" "$apt_dir/etc/sources.list"; then
  rm -f "$apt_dir"/lists/*Packages* "$apt_dir"/lists/*Sources*   # force a refresh below
fi
mv "$apt_dir/etc/sources.list.new" "$apt_dir/etc/sources.list"
APT=(-o "Dir::Etc::SourceList=$apt_dir/etc/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
  -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d" -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir" -o "APT::Architectures::=arm64" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root" -q)

# Refresh the package lists at most once a day (offline re-runs use the cache).
if [[ -z $(find "$apt_dir/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1) ]]; then
  log "apt-get update (private config: arm64 + bookworm-backports)"
  apt-get "${APT[@]}" update >/dev/null
fi

# candidate VERSION of PKG in SUITE-pattern (empty pattern: the default candidate)
ver() { # pkg [regex on version]
  # backports only where asked for by pattern (QEMU); bookworm's own otherwise
  apt-cache "${APT[@]}" madison "$1" | awk -F'|' '{gsub(/ /,"",$2); print $2}' |
    grep -E "${2:-^[^~]*(~deb12u[0-9]+)?[^~]*$}" | head -1
}
qemu_ver=$(ver qemu-system-arm '^1:(9|1[0-9])\.')
[[ -n $qemu_ver ]] || { log "no QEMU >= 9 in bookworm-backports"; exit 1; }
kpkg=$(apt-cache "${APT[@]}" depends "linux-image-arm64:arm64=$(ver linux-image-arm64:arm64 '^6\.1\.')" | awk '/Depends: linux-image-6/{print $2}' | sed 's/:arm64$//')
kver_pkg=$(ver "$kpkg:arm64")
kabi=${kpkg#linux-image-}              # 6.1.0-NN-arm64
kcommon=linux-headers-${kabi%-arm64}-common
kbuild_ver=$(ver linux-kbuild-6.1:amd64)
uboot_ver=$(dpkg-query -W -f='${Version}' u-boot-qemu)
bb_ver=$(ver busybox-static:arm64)
src_ver=$(ver linux-source-6.1 "^${kver_pkg//./\\.}\$")
[[ -n $src_ver ]] || src_ver=$kver_pkg
ver_line="qemu=$qemu_ver kernel=$kpkg/$kver_pkg kbuild=$kbuild_ver uboot=$uboot_ver busybox=$bb_ver src=$src_ver"
# dbus-daemon and its libraries for the busybox guest (the otad CLI talks D-Bus).
dbus_pkgs="dbus-daemon libdbus-1-3 libexpat1 libsystemd0 libapparmor1 libaudit1 libcap-ng0 libselinux1
 libpcre2-8-0 libc6 libcap2 libgcrypt20 libgpg-error0 liblz4-1 liblzma5 libzstd1"
dbus_specs=()
for p in $dbus_pkgs; do dbus_specs+=("$p:arm64=$(ver "$p:arm64")"); done
ver_line="$ver_line ${dbus_specs[*]}"
kpkg64=$(apt-cache "${APT[@]}" depends "linux-image-amd64=$(ver linux-image-amd64 '^6\.1\.')" | awk '/Depends: linux-image-6/{print $2}')
kver64_pkg=$(ver "$kpkg64")
seabios_ver=$(ver seabios)
ver_line="$ver_line amd64-kernel=$kpkg64/$kver64_pkg seabios=$seabios_ver"
key=$( { echo "$ver_line"; cat "$here/setup.sh" "$here/initramfs-init" "$here/initramfs-init-amd64"; } | sha256sum | cut -c1-16)
C=$BASE/$key
if [[ -f $C/stamp ]]; then log "cached: $C ($ver_line)"; echo "$C"; exit 0; fi
log "building $C"
log "$ver_line"
rm -rf "$C.tmp"; mkdir -p "$C.tmp"; T=$C.tmp

dl() { # pkg=ver ... into $BASE/debs (kept across keys; apt-get download skips nothing, so check first)
  local spec name v arch f
  for spec in "$@"; do
    name=${spec%%=*}; v=${spec#*=}; arch=amd64
    [[ $name == *:* ]] && { arch=${name#*:}; name=${name%%:*}; }
    f=$(ls "$BASE/debs/${name}_${v/:/%3a}_"*.deb 2>/dev/null | head -1 || true)
    if [[ -z $f ]]; then
      (cd "$BASE/debs" && apt-get "${APT[@]}" download "$name:$arch=$v" >/dev/null)
    fi
  done
}
deb() { ls "$BASE/debs/${1}_${2/:/%3a}_"*.deb | head -1; }
log "downloading packages"
dl "qemu-system-arm=$qemu_ver" "qemu-system-common=$qemu_ver" "qemu-system-data=$qemu_ver" \
  "$kpkg:arm64=$kver_pkg" "linux-headers-$kabi:arm64=$kver_pkg" "$kcommon:all=$kver_pkg" \
  "linux-kbuild-6.1:amd64=$kbuild_ver" "busybox-static:arm64=$bb_ver" "linux-source-6.1:all=$src_ver" \
  "${dbus_specs[@]}" "qemu-system-x86=$qemu_ver" "seabios:all=$seabios_ver" "$kpkg64:amd64=$kver64_pkg"

# --- QEMU 10, unpacked -------------------------------------------------------
log "unpacking QEMU $qemu_ver"
for p in qemu-system-arm qemu-system-common qemu-system-data; do dpkg -x "$(deb $p "$qemu_ver")" "$T/qemu"; done
cat >"$T/qemu-system-aarch64" <<'EOF'
#!/bin/sh
d=$(dirname "$(readlink -f "$0")")/qemu
export QEMU_MODULE_DIR=$d/usr/lib/x86_64-linux-gnu/qemu
exec "$d/usr/bin/qemu-system-aarch64" -L "$d/usr/share/qemu" "$@"
EOF
chmod +x "$T/qemu-system-aarch64"
QEMU_MODULE_DIR=$T/qemu/usr/lib/x86_64-linux-gnu/qemu "$T/qemu/usr/bin/qemu-system-aarch64" --version | head -1 >&2
# amd64 helper VM (nandsim): QEMU x86 and SeaBIOS from the same suites
dpkg -x "$(deb qemu-system-x86 "$qemu_ver")" "$T/qemu"
dpkg -x "$(deb seabios "$seabios_ver")" "$T/qemu"
sed 's/qemu-system-aarch64/qemu-system-x86_64/' "$T/qemu-system-aarch64" >"$T/qemu-system-x86_64"
chmod +x "$T/qemu-system-x86_64"

# --- U-Boot pflash bank 0 ------------------------------------------------------
cp /usr/lib/u-boot/qemu_arm64/u-boot.bin "$T/flash0.img"
truncate -s 64M "$T/flash0.img"

# --- optional: U-Boot from Debian's source with a redundant flash env ---------
# (second copy at 0x4040000, boolean active/obsolete flags) and the native
# CONFIG_BOOTCOUNT_LIMIT + CONFIG_BOOTCOUNT_ENV. bison/flex/m4 are unpacked,
# not installed. A failure here only skips the scenarios that need it.
build_uboot() {
  local ub=$T/ubuild tools=$T/ubuild/tools
  mkdir -p "$tools" "$BASE/src"
  ( cd "$BASE/src" && { ls u-boot_"${uboot_ver#*:}".dsc >/dev/null 2>&1 ||
      apt-get "${APT[@]}" source --download-only "u-boot=$uboot_ver" >/dev/null; } ) || return 1
  dl "bison=$(ver bison)" "flex=$(ver flex)" "m4=$(ver m4)" || return 1
  for p in bison flex m4; do dpkg -x "$(deb $p "$(ver $p)")" "$tools"; done
  dpkg-source -x --no-check "$BASE/src/u-boot_${uboot_ver#*:}.dsc" "$ub/src" >/dev/null 2>&1 || return 1
  export PATH=$tools/usr/bin:$PATH BISON_PKGDATADIR=$tools/usr/share/bison M4=$tools/usr/bin/m4
  make -s -C "$ub/src" O="$ub/out" qemu_arm64_defconfig >/dev/null || return 1
  cat >>"$ub/out/.config" <<'EOF2'
CONFIG_SYS_REDUNDAND_ENVIRONMENT=y
CONFIG_ENV_ADDR_REDUND=0x4040000
CONFIG_BOOTCOUNT_LIMIT=y
CONFIG_BOOTCOUNT_ENV=y
EOF2
  make -s -C "$ub/src" O="$ub/out" olddefconfig >/dev/null 2>&1 || return 1
  make -s -C "$ub/src" O="$ub/out" CROSS_COMPILE=aarch64-linux-gnu- -j2 >"$ub/build.log" 2>&1 || { tail -20 "$ub/build.log" >&2; return 1; }
  grep -q '^CONFIG_SYS_REDUNDAND_ENVIRONMENT=y' "$ub/out/.config" && grep -q '^CONFIG_BOOTCOUNT_ENV=y' "$ub/out/.config" || return 1
  cp "$ub/out/u-boot.bin" "$2"
}
# Kept apart from the keyed directory: it depends only on the U-Boot version
# and the lines above, and takes minutes on 2 cores.
ub_key=$(echo "$uboot_ver $(declare -f build_uboot)" | sha256sum | cut -c1-12)
ub_bin=$BASE/u-boot-redundant-$ub_key.bin
if [[ ! -f $ub_bin ]]; then
  log "building U-Boot $uboot_ver with redundant env + native bootcount (optional, ~2-5 min)"
  if ( build_uboot "" "$ub_bin.tmp" ); then mv "$ub_bin.tmp" "$ub_bin"; else log "redundant-env U-Boot NOT built; its scenarios will be skipped"; fi
  rm -rf "$T/ubuild"
fi
if [[ -f $ub_bin ]]; then
  cp "$ub_bin" "$T/flash0-redundant.img"
  truncate -s 64M "$T/flash0-redundant.img"
fi

# --- kernel + modules ----------------------------------------------------------
log "unpacking kernel $kpkg $kver_pkg"
mkdir -p "$T/k"
dpkg -x "$(deb "$kpkg" "$kver_pkg")" "$T/k"
kver=$(ls "$T/k/lib/modules" | head -1)
echo "$kver" >"$T/kver"
# booti wants an uncompressed Image (Debian's arm64 vmlinuz already is one).
if gzip -t "$T/k/boot/vmlinuz-$kver" 2>/dev/null; then zcat "$T/k/boot/vmlinuz-$kver" >"$T/Image"; else cp "$T/k/boot/vmlinuz-$kver" "$T/Image"; fi
cp "$T/k/boot/config-$kver" "$T/kconfig"

# --- out-of-tree MTD modules (CFI NOR + physmap) --------
log "building MTD modules from linux-source $src_ver"
mkdir -p "$T/hdr" "$T/src"
dpkg -x "$(deb "linux-headers-$kabi" "$kver_pkg")" "$T/hdr"
dpkg -x "$(deb "$kcommon" "$kver_pkg")" "$T/hdr"
dpkg -x "$(deb linux-kbuild-6.1 "$kbuild_ver")" "$T/hdr"
dpkg -x "$(deb linux-source-6.1 "$src_ver")" "$T/src"
srctar=$(ls "$T"/src/usr/src/linux-source-6.1*.tar.xz)
tar -C "$T/src" -xJf "$srctar" --wildcards '*/drivers/mtd/chips/*' '*/drivers/mtd/maps/*' '*/drivers/mtd/devices/mtdram.c'
srcd=$(ls -d "$T"/src/linux-source-6.1*/ | head -1)
rm -f "$srctar"
m=$T/mtdbuild; mkdir -p "$m/devices"
cp -r "$srcd/drivers/mtd/chips" "$srcd/drivers/mtd/maps" "$m/"
cp "$srcd/drivers/mtd/devices/mtdram.c" "$m/devices/"
echo 'obj-m += chipreg.o gen_probe.o cfi_util.o cfi_probe.o cfi_cmdset_0001.o cfi_cmdset_0002.o' >"$m/chips/Kbuild"
printf 'obj-m += physmap.o\nphysmap-objs := physmap-core.o\n' >"$m/maps/Kbuild"
echo 'obj-m += mtdram.o' >"$m/devices/Kbuild"
echo 'obj-m += chips/ maps/ devices/' >"$m/Kbuild"
hd=$(ls -d "$T"/hdr/usr/src/linux-headers-*-arm64 | head -1)
# The headers' Makefile includes the -common tree by absolute path.
sed -i "s#/usr/src/#$T/hdr/usr/src/#" "$hd/Makefile"
# Debian leaves these options off; switch them on for these objects only.
defs="-DCONFIG_MTD_CFI=1 -DCONFIG_MTD_CFI_MODULE=1 -DCONFIG_MTD_GEN_PROBE=1 -DCONFIG_MTD_GEN_PROBE_MODULE=1
 -DCONFIG_MTD_CFI_INTELEXT=1 -DCONFIG_MTD_CFI_INTELEXT_MODULE=1 -DCONFIG_MTD_CFI_AMDSTD=1
 -DCONFIG_MTD_CFI_AMDSTD_MODULE=1 -DCONFIG_MTD_CFI_UTIL=1 -DCONFIG_MTD_PHYSMAP=1 -DCONFIG_MTD_PHYSMAP_MODULE=1
 -DCONFIG_MTD_PHYSMAP_OF=1 -DCONFIG_MTDRAM_TOTAL_SIZE=4096 -DCONFIG_MTDRAM_ERASE_SIZE=128"
make -C "$hd" M="$m" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- KCFLAGS="$(echo $defs)" modules -j2 \
  >"$T/mtdbuild.log" 2>&1 || { tail -40 "$T/mtdbuild.log" >&2; exit 1; }
mkdir -p "$T/mtd-ko"; find "$m" -name '*.ko' -exec cp {} "$T/mtd-ko/" \;
log "MTD modules: $(ls "$T/mtd-ko" | tr '\n' ' ')"
rm -rf "$T/src" "$T/hdr" "$m"

# --- dbus-daemon userland (dynamic, arm64) for the slot rootfs -----------------
mkdir -p "$T/dbx" "$T/dbus"
for spec in "${dbus_specs[@]}"; do n=${spec%%:*}; dpkg -x "$(deb "$n" "${spec#*=}")" "$T/dbx"; done
mkdir -p "$T/dbus/usr/bin" "$T/dbus/lib"
cp "$T/dbx/usr/bin/dbus-daemon" "$T/dbus/usr/bin/"
cp -a "$T/dbx/lib/aarch64-linux-gnu" "$T/dbus/lib/" 2>/dev/null || true
cp -a "$T/dbx/usr/lib/aarch64-linux-gnu/." "$T/dbus/lib/aarch64-linux-gnu/"
cp -a "$T/dbx/lib/ld-linux-aarch64.so.1" "$T/dbus/lib/" 2>/dev/null ||
  ln -sf aarch64-linux-gnu/ld-linux-aarch64.so.1 "$T/dbus/lib/ld-linux-aarch64.so.1"
rm -rf "$T/dbus/lib/aarch64-linux-gnu/gconv" "$T/dbx"

# --- busybox + initramfs ---------------------------------------------------
mkdir -p "$T/bb"; dpkg -x "$(deb busybox-static "$bb_ver")" "$T/bb"
cp "$T/bb/bin/busybox" "$T/busybox"; rm -rf "$T/bb"
# modules the guest needs, with their dependencies from modules.dep
md=$T/k/lib/modules/$kver
depmod -b "$T/k" "$kver"    # modules.dep is made by the package's postinst, not shipped
want="virtio_mmio virtio_blk crc32c_generic ext4 9p 9pnet_virtio vfat nls_cp437 i6300esb mtd"
declare -A seen=(); order=()
add() { # module path relative to $md
  local rel=$1 d
  [[ -n ${seen[$rel]:-} ]] && return; seen[$rel]=1
  for d in $(grep -E "^${rel}:" "$md/modules.dep" | cut -d: -f2); do add "$d"; done
  order+=("$rel")
}
for w in $want; do
  rel=$(grep -E "/${w}\.ko(\.xz)?:" "$md/modules.dep" | cut -d: -f1 | head -1 || true)
  [[ -n $rel ]] || { log "module $w not in $kver (built in?)"; continue; }
  add "$rel"
done
ir=$T/initramfs; mkdir -p "$ir"/{bin,dev,proc,sys,mnt,newroot,lib/modules}
cp "$T/busybox" "$ir/bin/busybox"
for rel in "${order[@]}"; do
  f=$md/$rel; b=$(basename "$rel")
  case $b in *.xz) xz -dc "$f" >"$ir/lib/modules/${b%.xz}"; b=${b%.xz};; *) cp "$f" "$ir/lib/modules/$b";; esac
  echo "$b" >>"$ir/lib/modules/order"
done
# MTD: chips before maps (load order matters: insmod has no dependency resolution)
for b in chipreg cfi_util cfi_cmdset_0001 cfi_cmdset_0002 gen_probe cfi_probe physmap; do
  [[ -f $T/mtd-ko/$b.ko ]] && { cp "$T/mtd-ko/$b.ko" "$ir/lib/modules/"; echo "$b.ko" >>"$ir/lib/modules/order"; }
done
# mtdram is there for tests that want a RAM-backed NOR; not loaded at boot.
cp "$T/mtd-ko/mtdram.ko" "$ir/lib/modules/"
install -m755 "$here/initramfs-init" "$ir/init"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -9) >"$T/initrd.img"
log "initramfs $(du -h "$T/initrd.img" | cut -f1), modules: $(tr '\n' ' ' <"$ir/lib/modules/order")"
rm -rf "$ir" "$T/k/boot" "$T/k/usr"
# --- amd64 helper VM: Debian's amd64 kernel has nandsim (bad blocks), mtdram, UBI
log "amd64 VM: kernel $kpkg64 $kver64_pkg, nandsim initramfs"
mkdir -p "$T/k64"
dpkg -x "$(deb "$kpkg64" "$kver64_pkg")" "$T/k64"
kver64=$(ls "$T/k64/lib/modules" | head -1)
cp "$T/k64/boot/vmlinuz-$kver64" "$T/bzImage-amd64"
depmod -b "$T/k64" "$kver64"
md64=$T/k64/lib/modules/$kver64
ir=$T/initramfs64; mkdir -p "$ir"/{bin,sbin,dev,proc,sys,lib/modules,lib64,usr/sbin}
cp /bin/busybox "$ir/bin/busybox"
declare -A seen64=(); order64=()
add64() {
  local rel=$1 d
  [[ -n ${seen64[$rel]:-} ]] && return; seen64[$rel]=1
  for d in $(grep -E "^${rel}:" "$md64/modules.dep" | cut -d: -f2); do add64 "$d"; done
  order64+=("$rel")
}
for w in virtio_pci 9pnet_virtio 9p nandsim mtdram ubi; do
  rel=$(grep -E "/${w}\.ko(\.xz)?:" "$md64/modules.dep" | cut -d: -f1 | head -1 || true)
  [[ -n $rel ]] && add64 "$rel"
done
for rel in "${order64[@]}"; do
  b=$(basename "$rel"); f=$md64/$rel
  case $b in *.xz) xz -dc "$f" >"$ir/lib/modules/${b%.xz}"; b=${b%.xz};; *) cp "$f" "$ir/lib/modules/$b";; esac
  # nandsim, mtdram and ubi take parameters: the test script loads them
  case $b in nandsim.ko|mtdram.ko|ubi.ko) ;; *) echo "$b" >>"$ir/lib/modules/order";; esac
done
# mtd-utils for UBI (the host's amd64 build, with its libraries)
for t in ubiattach ubidetach ubimkvol ubinfo flash_erase; do
  p=$(command -v $t) || continue
  cp "$p" "$ir/usr/sbin/"
  for l in $(ldd "$p" | grep -o '/[^ ]*\.so[^ ]*'); do mkdir -p "$ir$(dirname "$l")"; cp -L "$l" "$ir$l"; done
done
install -m755 "$here/initramfs-init-amd64" "$ir/init"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -9) >"$T/initrd-amd64.img"
log "amd64 initramfs $(du -h "$T/initrd-amd64.img" | cut -f1), modules: $(ls "$ir/lib/modules" | tr '\n' ' ')"
rm -rf "$ir" "$T/k64"

# --- U-Boot's default environment, captured once ------------------------------
# A loaded env replaces the built-in defaults, so the harness seeds the env with
# these plus otad's variables. Captured through U-Boot itself: a one-off boot
# script exports the pristine defaults to a file on FAT (no console scraping).
log "capturing U-Boot default environment"
cap=$T/cap; mkdir -p "$cap"
cat >"$cap/capture.cmd" <<'EOF2'
env default -f -a
env export -t ${loadaddr}
fatwrite virtio 0:1 ${loadaddr} defenv.txt ${filesize}
reset
EOF2
mkimage -A arm64 -O linux -T script -C none -d "$cap/capture.cmd" "$cap/boot.scr" >/dev/null
truncate -s 16M "$cap/disk.img"
echo 'start=2048, type=c, bootable' | sfdisk -q "$cap/disk.img"
mkfs.vfat -S 512 --offset 2048 "$cap/disk.img" $(( (16*1024*1024/512 - 2048) / 2 )) >/dev/null
mcopy -i "$cap/disk.img@@1M" "$cap/boot.scr" ::boot.scr
truncate -s 64M "$cap/flash1.img"
timeout 120 "$T/qemu-system-aarch64" -M virt -cpu cortex-a57 -m 256 -display none -monitor none -nic none -audio none \
  -no-reboot -serial "file:$cap/console.log" \
  -drive if=pflash,format=raw,readonly=on,file="$T/flash0.img" -drive if=pflash,format=raw,file="$cap/flash1.img" \
  -drive if=none,id=d0,format=raw,file="$cap/disk.img" -device virtio-blk-device,drive=d0 || true
mcopy -i "$cap/disk.img@@1M" ::defenv.txt "$T/uboot-default-env.txt" ||
  { log "default env capture failed; console:"; tail -20 "$cap/console.log" >&2; exit 1; }
tr -d '\000' <"$T/uboot-default-env.txt" >"$T/uboot-default-env.tmp" && mv "$T/uboot-default-env.tmp" "$T/uboot-default-env.txt"
log "default env: $(wc -l <"$T/uboot-default-env.txt") variables"
rm -rf "$cap"

echo "$ver_line" >"$T/versions"
touch "$T/stamp"
rm -rf "$C"; mv "$T" "$C"
# Older builds (other keys) are of no further use.
for d in "$BASE"/*; do
  [[ $(basename "$d") =~ ^[0-9a-f]{16}$ && $d != "$C" ]] && rm -rf "$d"
done
log "done: $C"
echo "$C"
