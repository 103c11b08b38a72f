SUMMARY = "otad board configuration: system.conf, trusted keys, fw_env.config"
DESCRIPTION = "The device side of meta-otad's board settings. Replace it with \
your own recipe that RPROVIDES virtual-otad-conf (and set \
PREFERRED_RPROVIDER_virtual-otad-conf), or override the variables of \
otad-board.bbclass."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

# fw_env.config is found per machine (files/<MACHINE>/) before files/.
SRC_URI = "file://system.conf.in \
           file://fw_env.config \
          "

inherit otad-board

# Only files: no compiler, no libc.
INHIBIT_DEFAULT_DEPS = "1"
# Slot devices and the environment location belong to the machine.
PACKAGE_ARCH = "${MACHINE_ARCH}"

# Files are read from where this release unpacks them (UNPACKDIR from
# styhead on, WORKDIR on scarthgap), without redefining UNPACKDIR.
OTAD_SRC = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"
S = "${OTAD_SRC}"

OTAD_SLOT_TYPE ??= "block"
OTAD_BOOTLIMIT ??= "3"
OTAD_DATA_DIR ??= "/var/lib/otad"
# Public keys (files named <id>.pub) on the build host, copied into
# /etc/otad/keys. Their content is part of the task signature: replacing a
# key rebuilds the package.
OTAD_KEYRING_FILES ??= ""
do_install[file-checksums] += "${@' '.join('%s:True' % f for f in (d.getVar('OTAD_KEYRING_FILES') or '').split())}"

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${sysconfdir}/otad/keys
    sed -e 's|@COMPATIBLE@|${OTAD_COMPATIBLE}|' \
        -e 's|@SLOT_A_DEVICE@|${OTAD_SLOT_A_DEVICE}|' \
        -e 's|@SLOT_B_DEVICE@|${OTAD_SLOT_B_DEVICE}|' \
        -e 's|@SLOT_TYPE@|${OTAD_SLOT_TYPE}|' \
        -e 's|@BOOTLIMIT@|${OTAD_BOOTLIMIT}|' \
        -e 's|@DATA_DIR@|${OTAD_DATA_DIR}|' \
        ${OTAD_SRC}/system.conf.in > ${D}${sysconfdir}/otad/system.conf
    chmod 0644 ${D}${sysconfdir}/otad/system.conf
    for k in ${OTAD_KEYRING_FILES}; do
        install -m 0644 "$k" ${D}${sysconfdir}/otad/keys/
    done
    if [ "${OTAD_INSTALL_FW_ENV_CONFIG}" = "1" ]; then
        install -m 0644 ${OTAD_SRC}/fw_env.config ${D}${sysconfdir}/fw_env.config
    fi
    install -d ${D}${OTAD_DATA_DIR}
}

FILES:${PN} = "${sysconfdir}/otad ${OTAD_DATA_DIR} \
    ${@'${sysconfdir}/fw_env.config' if d.getVar('OTAD_INSTALL_FW_ENV_CONFIG') == '1' else ''}"
CONFFILES:${PN} = "${sysconfdir}/otad/system.conf \
    ${@'${sysconfdir}/fw_env.config' if d.getVar('OTAD_INSTALL_FW_ENV_CONFIG') == '1' else ''}"
# Where the BSP's u-boot ships fw_env.config, pull in its package (u-boot-env).
RDEPENDS:${PN} += "${@'' if d.getVar('OTAD_INSTALL_FW_ENV_CONFIG') == '1' else 'u-boot-default-env'}"
RPROVIDES:${PN} += "virtual-otad-conf"
