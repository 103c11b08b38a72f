# Raspberry Pi machines (meta-raspberrypi's "rpi" override, e.g.
# raspberrypi3-64, raspberrypi4-64): the redundant FAT environment, only with
# "otad" in DISTRO_FEATURES, as the layer's other U-Boot changes.
FILESEXTRAPATHS:prepend:rpi := "${THISDIR}/files:"
SRC_URI:append:rpi = "${@bb.utils.contains('DISTRO_FEATURES', 'otad', ' file://otad-rpi-env-fat.cfg', '', d)}"

# meta-raspberrypi's u-boot installs /etc/fw_env.config (package u-boot-env)
# naming one env file; with the redundant FAT env it must name both, or otad
# refuses to arm on what it sees as a single copy. Installed after the whole
# do_install (postfuncs), so the order of the two layers' appends does not
# matter; otad-conf leaves fw_env.config to u-boot-env on the Pi.
SRC_URI:append:rpi = "${@bb.utils.contains('DISTRO_FEATURES', 'otad', ' file://otad-fw_env.config', '', d)}"
otad_rpi_fw_env() {
    install -d ${D}${sysconfdir}
    install -m 0644 ${OTAD_RPI_SRCDIR}/otad-fw_env.config ${D}${sysconfdir}/fw_env.config
}
OTAD_RPI_SRCDIR = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"
do_install[postfuncs] += "${@'otad_rpi_fw_env' if bb.utils.contains('DISTRO_FEATURES', 'otad', True, False, d) and 'rpi' in (d.getVar('MACHINEOVERRIDES') or '').split(':') else ''}"
