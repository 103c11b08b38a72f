#!/usr/bin/env bash
# Raspberry Pi tier inputs (issue 28), built from Debian packages the main
# setup.sh already fetched, cached apart in $BASE/rpi-<key> (keyed by the
# U-Boot source, the kernel package and this script's text; the U-Boot builds
# in $BASE/rpi-uboot-<key>, keyed by the source and their recipe only):
#   u-boot-redund.bin  Debian's U-Boot source, rpi_3_defconfig (64-bit Pi 3)
#                      + CONFIG_SYS_REDUNDAND_ENVIRONMENT
#                      + CONFIG_ENV_FAT_FILE_REDUND="uboot-redund.env":
#                      the env as two files on the FAT boot partition
#   u-boot-stock.bin   the same source and defconfig unchanged: one uboot.env
#   bcm2837-rpi-3-b.dtb  from Debian's arm64 kernel package
#   Image.gz           Debian's arm64 Image, gzipped (booti unpacks it)
#   initrd-rpi.img     busybox initramfs with the SD (sdhost/sdhci), ext4 and
#                      vfat modules; mounts root= and switch_roots
# Usage: setup-rpi.sh MAIN_CACHE_DIR   (prints the rpi cache dir, last line)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
C=$1
BASE=${OTAD_VM_CACHE:-/var/cache/otad-vm}
log() { echo "vm-setup-rpi: $*" >&2; }
dsc=$(ls "$BASE"/src/u-boot_*.dsc | sort | tail -1)
kdeb=$(ls "$BASE"/debs/linux-image-6.1.0-*-arm64_*_arm64.deb | sort -V | tail -1)
key=$( { basename "$dsc"; basename "$kdeb"; cat "$here/setup-rpi.sh" "$here/initramfs-init-rpi"; } | sha256sum | cut -c1-12)
R=$BASE/rpi-$key
if [[ -f $R/stamp ]]; then log "cached: $R"; echo "$R"; exit 0; fi
rm -rf "$R.tmp"; mkdir -p "$R.tmp"; T=$R.tmp

# --- U-Boot: the redundant-FAT-env build and the stock one -------------------
# Cached under their own key (the source and the build recipe below), since
# they take many minutes on 2 busy cores.
redund_cfg='CONFIG_SYS_REDUNDAND_ENVIRONMENT=y
CONFIG_ENV_FAT_FILE_REDUND="uboot-redund.env"
'
build() { # name, extra .config lines; in $U
  local o=$U.tmp/ub-$1
  make -s -C "$U.tmp/ubsrc" O="$o" rpi_3_defconfig >/dev/null
  printf '%s' "$2" >>"$o/.config"
  make -s -C "$U.tmp/ubsrc" O="$o" olddefconfig >/dev/null 2>&1
  nice -n 10 make -s -C "$U.tmp/ubsrc" O="$o" CROSS_COMPILE=aarch64-linux-gnu- -j2 >"$U.tmp/build-$1.log" 2>&1 ||
    { tail -20 "$U.tmp/build-$1.log" >&2; return 1; }
  grep -q '^CONFIG_ENV_IS_IN_FAT=y' "$o/.config"
  cp "$o/u-boot.bin" "$U.tmp/u-boot-$1.bin"
  cp "$o/.config" "$U.tmp/u-boot-$1.config"
}
ukey=$( { basename "$dsc"; echo "$redund_cfg"; declare -f build; } | sha256sum | cut -c1-12)
U=$BASE/rpi-uboot-$ukey
if [[ ! -f $U/stamp ]]; then
  rm -rf "$U.tmp"; mkdir -p "$U.tmp"
  tools=$U.tmp/tools; mkdir -p "$tools"
  for p in bison flex m4; do dpkg -x "$(ls "$BASE"/debs/${p}_*_amd64.deb | head -1)" "$tools"; done
  dpkg-source -x --no-check "$dsc" "$U.tmp/ubsrc" >/dev/null 2>&1
  export PATH=$tools/usr/bin:$PATH BISON_PKGDATADIR=$tools/usr/share/bison M4=$tools/usr/bin/m4
  log "building U-Boot rpi_3 with the redundant FAT env (several minutes)"
  build redund "$redund_cfg"
  grep -q '^CONFIG_ENV_FAT_FILE_REDUND="uboot-redund.env"' "$U.tmp/u-boot-redund.config"
  log "building U-Boot rpi_3 stock (single uboot.env)"
  build stock ''
  ! grep -q '^CONFIG_SYS_REDUNDAND_ENVIRONMENT=y' "$U.tmp/u-boot-stock.config"
  rm -rf "$U.tmp/ubsrc" "$U.tmp"/ub-* "$tools" "$U.tmp"/*.orig.tar.*
  touch "$U.tmp/stamp"; rm -rf "$U"; mv "$U.tmp" "$U"
fi
cp "$U"/u-boot-redund.bin "$U"/u-boot-stock.bin "$U"/u-boot-*.config "$T/"

# --- device tree and initramfs --------------------------------------------
mkdir -p "$T/k"; dpkg -x "$kdeb" "$T/k"
kver=$(ls "$T/k/lib/modules" | head -1)
cp "$(find "$T/k/usr/lib" -name bcm2837-rpi-3-b.dtb | head -1)" "$T/bcm2837-rpi-3-b.dtb"
# QEMU's sdhost DMA path makes Linux's bcm2835 MMC driver oops
# (bcm2835_finish_data from bcm2835_dma_complete_work): without the dmas
# property the driver falls back to PIO, which works.
fdtput -d "$T/bcm2837-rpi-3-b.dtb" /soc/mmc@7e202000 dmas
fdtput -d "$T/bcm2837-rpi-3-b.dtb" /soc/mmc@7e202000 dma-names
# U-Boot reads the SD card at ~0.5 MiB/s under TCG: the compressed Image
# (booti unpacks it, kernel_comp_addr_r) loads in a third of the time.
gzip -6 -c "$T/k/boot/vmlinuz-$kver" >"$T/Image.gz"
md=$T/k/lib/modules/$kver
depmod -b "$T/k" "$kver"
declare -A seen=(); order=()
add() {
  local rel=$1 d
  [[ -n ${seen[$rel]:-} ]] && return; seen[$rel]=1
  for d in $(grep -E "^${rel}:" "$md/modules.dep" | cut -d: -f2); do add "$d"; done
  order+=("$rel")
}
for w in bcm2835-dma mmc_block sdhci-iproc bcm2835 crc32c_generic ext4 vfat nls_cp437 nls_ascii bcm2835_wdt; do
  rel=$(grep -E "/${w}\.ko(\.xz)?:" "$md/modules.dep" | cut -d: -f1 | head -1 || true)
  [[ -n $rel ]] || { log "module $w not in $kver (built in?)"; continue; }
  add "$rel"
done
ir=$T/ir; mkdir -p "$ir"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$C/busybox" "$ir/bin/busybox"
for rel in "${order[@]}"; do
  f=$md/$rel; b=$(basename "$rel")
  case $b in *.xz) xz -dc "$f" >"$ir/lib/modules/${b%.xz}"; b=${b%.xz};; *) cp "$f" "$ir/lib/modules/$b";; esac
  echo "$b" >>"$ir/lib/modules/order"
done
install -m755 "$here/initramfs-init-rpi" "$ir/init"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -9) >"$T/initrd-rpi.img"
log "initramfs: $(tr '\n' ' ' <"$ir/lib/modules/order")"
rm -rf "$ir" "$T/k"
touch "$T/stamp"
rm -rf "$R"; mv "$T" "$R"
echo "$R"
