SUMMARY = "U-Boot boot script for otad A/B slots with boot counting"
DESCRIPTION = "Compiles boot.cmd (the same source otad's tests boot under QEMU) \
into boot.scr for the boot partition."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://boot.cmd"
# UNPACKDIR exists from styhead on; older releases unpack into WORKDIR.
UNPACKDIR ??= "${WORKDIR}"
S = "${UNPACKDIR}"

DEPENDS = "u-boot-mkimage-native"
inherit deploy nopackages

OTAD_UBOOT_ARCH ??= "${@'arm64' if d.getVar('TARGET_ARCH') == 'aarch64' else 'arm'}"

do_compile() {
    mkimage -A ${OTAD_UBOOT_ARCH} -O linux -T script -C none \
        -n "otad A/B boot script" -d ${S}/boot.cmd ${B}/boot.scr
}

do_deploy() {
    install -d ${DEPLOYDIR}
    install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr
}
addtask deploy after do_compile before do_build

COMPATIBLE_MACHINE = "(raspberrypi.*|beaglebone.*|qemuarm.*)"
