SUMMARY = "U-Boot boot script for otad A/B slots with boot counting"
DESCRIPTION = "Compiles boot.cmd (the same source otad's tests boot under QEMU), \
preceded by this machine's defaults, into boot.scr for the boot partition."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://board-defaults.cmd.in \
           file://boot.cmd \
          "

# Files are read from where this release unpacks them (UNPACKDIR from
# styhead on, WORKDIR on scarthgap), without redefining UNPACKDIR or setting
# S to WORKDIR on releases that refuse it.
OTAD_SRC = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"
S = "${OTAD_SRC}"
# Not S: boot.cmd is generated from the unpacked boot.cmd.
B = "${WORKDIR}/build"

inherit otad-board deploy nopackages

# mkimage runs on the build host: no cross compiler, no libc.
INHIBIT_DEFAULT_DEPS = "1"
DEPENDS = "u-boot-mkimage-native"
PACKAGE_ARCH = "${MACHINE_ARCH}"

# meta-raspberrypi's u-boot DEPENDS on u-boot-default-script and its
# machine conf already lists boot.scr in IMAGE_BOOT_FILES; with
#   PREFERRED_PROVIDER_u-boot-default-script = "otad-boot-script"
# this recipe replaces rpi-u-boot-scr: one boot.scr, deployed once, and
# wic waits for it through u-boot.
PROVIDES += "u-boot-default-script"

OTAD_BOOT_MARKER = "# Nothing below is saved: defaults stay out of the environment."
OTAD_UBOOT_ARCH ??= "${@'arm64' if d.getVar('TARGET_ARCH') == 'aarch64' else 'arm'}"

do_configure[noexec] = "1"

do_compile() {
    sed -e 's|@MACHINE@|${MACHINE}|' \
        -e 's|@DEVTYPE@|${OTAD_BOOT_DEVTYPE}|' \
        -e 's|@DEVNUM@|${OTAD_BOOT_DEVNUM}|' \
        -e 's|@PART_A@|${OTAD_PART_A}|' \
        -e 's|@PART_B@|${OTAD_PART_B}|' \
        -e 's|@ROOT_A@|${OTAD_SLOT_A_DEVICE}|' \
        -e 's|@ROOT_B@|${OTAD_SLOT_B_DEVICE}|' \
        -e 's|@KERNEL@|${OTAD_BOOT_KERNEL}|' \
        -e 's|@BOOTCMD@|${OTAD_BOOT_CMD}|' \
        -e 's|@FDT@|${OTAD_BOOT_FDT}|' \
        -e 's|@BOOTARGS@|${OTAD_BOOT_ARGS}|' \
        ${OTAD_SRC}/board-defaults.cmd.in > ${B}/board-defaults.cmd
    # The defaults go right after the trial-boot block (which saves the
    # environment) so they are never written to it, and before boot.cmd's
    # own fallbacks, which are QEMU's.
    grep -q '^${OTAD_BOOT_MARKER}' ${OTAD_SRC}/boot.cmd || \
        bbfatal "boot.cmd lacks the line '${OTAD_BOOT_MARKER}'"
    sed -e '/^${OTAD_BOOT_MARKER}/r ${B}/board-defaults.cmd' ${OTAD_SRC}/boot.cmd > ${B}/boot.cmd
    mkimage -A ${OTAD_UBOOT_ARCH} -O linux -T script -C none \
        -n "otad A/B boot script" -d ${B}/boot.cmd ${B}/boot.scr
}

do_deploy() {
    install -d ${DEPLOYDIR}
    install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr
}
addtask deploy after do_compile before do_build

COMPATIBLE_MACHINE = "(raspberrypi.*|beaglebone.*|qemuarm.*)"
