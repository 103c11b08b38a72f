SUMMARY = "otad - A/B update daemon with signed bundles and U-Boot boot counting"
DESCRIPTION = "Installs signed update bundles into the inactive slot, arms U-Boot \
with a bootcount limit and confirms or rolls back after the reboot."
HOMEPAGE = "https://github.com/otadev/otad"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://src/${GO_IMPORT}/LICENSE;md5=c738517615babe8e9b976b162b171707"

GO_IMPORT = "github.com/otadev/otad"
GO_INSTALL = "${GO_IMPORT}/cmd/otad"
SRC_URI = "git://github.com/otadev/otad.git;protocol=https;branch=main;destsuffix=${GO_SRCURI_DESTSUFFIX} \
           file://system.conf.in \
           file://fw_env.config \
          "
SRCREV = "${AUTOREV}"
PV = "0.1+git"

inherit go-mod systemd

UNPACKDIR ??= "${WORKDIR}"

# Module dependencies come from go.sum; allow the Go fetch during compile
# (or vendor them with go-mod-update-modules in your own layer).
do_compile[network] = "1"
GO_LINKSHARED = ""
GOBUILDFLAGS:append = " -trimpath"
# The device build leaves out the build-host tools (bundle create/sign/keygen,
# delta generation, demo) and HTTP/2 (bundles download as one HTTP/1.1 stream
# with Range resume); otad-native keeps the tools for the bundle class.
GOBUILDFLAGS:append:class-target = " -tags otad_device,nethttpomithttp2"
export CGO_ENABLED = "0"

# Board settings, overridable from local.conf or a machine/distro conf.
OTAD_COMPATIBLE ??= "${MACHINE}"
OTAD_SLOT_A_DEVICE ??= "/dev/mmcblk0p2"
OTAD_SLOT_B_DEVICE ??= "/dev/mmcblk0p3"
OTAD_SLOT_TYPE ??= "block"
OTAD_BOOTLIMIT ??= "3"
OTAD_DATA_DIR ??= "/var/lib/otad"
# Public keys (files named <id>.pub) copied into /etc/otad/keys on the device.
OTAD_KEYRING_FILES ??= ""

SYSTEMD_SERVICE:${PN} = "otad.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    ln -sf otad ${D}${bindir}/otactl

    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/src/${GO_IMPORT}/systemd/otad.service ${D}${systemd_system_unitdir}/
    install -d ${D}${datadir}/dbus-1/system.d
    install -m 0644 ${S}/src/${GO_IMPORT}/systemd/io.otad.Update1.conf ${D}${datadir}/dbus-1/system.d/
    # journalctl -x explains otad's key events (MESSAGE_IDs); systemd
    # rebuilds its catalog database from this directory.
    install -d ${D}${nonarch_libdir}/systemd/catalog
    install -m 0644 ${S}/src/${GO_IMPORT}/systemd/otad.catalog ${D}${nonarch_libdir}/systemd/catalog/

    install -d ${D}${sysconfdir}/otad/keys
    sed -e 's|@COMPATIBLE@|${OTAD_COMPATIBLE}|' \
        -e 's|@SLOT_A_DEVICE@|${OTAD_SLOT_A_DEVICE}|' \
        -e 's|@SLOT_B_DEVICE@|${OTAD_SLOT_B_DEVICE}|' \
        -e 's|@SLOT_TYPE@|${OTAD_SLOT_TYPE}|' \
        -e 's|@BOOTLIMIT@|${OTAD_BOOTLIMIT}|' \
        -e 's|@DATA_DIR@|${OTAD_DATA_DIR}|' \
        ${UNPACKDIR}/system.conf.in > ${D}${sysconfdir}/otad/system.conf
    for k in ${OTAD_KEYRING_FILES}; do
        install -m 0644 "$k" ${D}${sysconfdir}/otad/keys/
    done
    install -m 0644 ${UNPACKDIR}/fw_env.config ${D}${sysconfdir}/fw_env.config
    install -d ${D}${OTAD_DATA_DIR}
}

# do_install for the build-host tool: only the binary.
do_install:class-native() {
    install -d ${D}${bindir}
    install -m 0755 ${B}/${GO_BUILD_BINDIR}/otad ${D}${bindir}/otad
}

FILES:${PN} += "${systemd_system_unitdir}/otad.service \
                ${datadir}/dbus-1/system.d/io.otad.Update1.conf \
                ${nonarch_libdir}/systemd/catalog/otad.catalog \
                ${OTAD_DATA_DIR}"
CONFFILES:${PN} = "${sysconfdir}/otad/system.conf ${sysconfdir}/fw_env.config"
RDEPENDS:${PN} += "dbus"

BBCLASSEXTEND = "native"
