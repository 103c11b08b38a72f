# Raspberry Pi machines (meta-raspberrypi's "rpi" override, e.g.
# raspberrypi3-64, raspberrypi4-64): the redundant FAT environment, only with
# "otad" in DISTRO_FEATURES, as the layer's other U-Boot changes.
FILESEXTRAPATHS:prepend:rpi := "${THISDIR}/files:"
SRC_URI:append:rpi = "${@bb.utils.contains('DISTRO_FEATURES', 'otad', ' file://otad-rpi-env-fat.cfg', '', d)}"
