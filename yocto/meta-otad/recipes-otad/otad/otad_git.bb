SUMMARY = "otad - A/B update daemon with signed bundles and U-Boot boot counting"
DESCRIPTION = "Installs signed update bundles into the inactive slot, arms U-Boot \
with a bootcount limit and confirms or rolls back after the reboot."
HOMEPAGE = "https://github.com/otadev/otad"

# The binary is static and links these modules (go list -deps ./cmd/otad):
#   otad                              MIT
#   github.com/coreos/go-systemd/v22  Apache-2.0
#   github.com/godbus/dbus/v5         BSD-2-Clause
#   github.com/sirupsen/logrus        MIT
#   golang.org/x/sys, Go's runtime    BSD-3-Clause
#   github.com/klauspost/compress     BSD-3-Clause, Apache-2.0 and MIT parts in one LICENSE
# The module test (go test ./yocto/) keeps this list and the checksums in
# step with go.sum and the module cache.
LICENSE = "MIT & Apache-2.0 & BSD-2-Clause & BSD-3-Clause"
LIC_FILES_CHKSUM = "file://src/${GO_IMPORT}/LICENSE;md5=c738517615babe8e9b976b162b171707 \
    file://module-licenses/github.com/coreos/go-systemd/v22@v22.7.0/LICENSE;md5=19cbd64715b51267a47bf3750cc6a8a5 \
    file://module-licenses/github.com/godbus/dbus/v5@v5.2.4/LICENSE;md5=09042bd5c6c96a2b9e45ddf1bc517eed \
    file://module-licenses/github.com/sirupsen/logrus@v1.10.2/LICENSE;md5=8dadfef729c08ec4e631c4f6fc5d43a0 \
    file://module-licenses/golang.org/x/sys@v0.50.0/LICENSE;md5=7998cb338f82d15c0eff93b7004d272a \
    file://module-licenses/github.com/klauspost/compress@v1.20.4/LICENSE;md5=d0fd9ebda39468b51ff4539c9fbb13a8 \
    file://module-licenses/github.com/klauspost/compress@v1.20.4/zstd/internal/xxhash/LICENSE.txt;md5=802da049c92a99b4387d3f3d91b00fa9 \
    "

# do_populate_lic runs before do_compile, while the modules are still zip
# files in the module cache: copy their license files out right after
# unpacking so LIC_FILES_CHKSUM can check them.
python otad_module_licenses() {
    import glob, zipfile
    cache = os.path.join(d.getVar('GOMODCACHE'), 'cache', 'download')
    dest = os.path.join(d.getVar('S'), 'module-licenses')
    for z in sorted(glob.glob(os.path.join(cache, '**', '*.zip'), recursive=True)):
        with zipfile.ZipFile(z) as zf:
            for name in zf.namelist():
                at = name.find('@')
                cut = name.find('/', at)
                if at < 0 or cut < 0:
                    continue
                base = os.path.basename(name).upper()
                if not base.startswith(('LICENSE', 'COPYING', 'NOTICE')):
                    continue
                out = os.path.join(dest, name)
                bb.utils.mkdirhier(os.path.dirname(out))
                with zf.open(name) as src, open(out, 'wb') as dst:
                    dst.write(src.read())
}
do_unpack[postfuncs] += "otad_module_licenses"

GO_IMPORT = "github.com/otadev/otad"
GO_INSTALL = "${GO_IMPORT}/cmd/otad"

# A pinned commit: parsing never asks the network. To release a new one,
# set SRCREV to the commit, bump OTAD_BASE_VERSION when the release number
# changes, and regenerate the module list: go mod download && go run ./yocto/gengomod
SRCREV = "52975d36522664373797fd877de1f180bfc17fb1"
OTAD_BASE_VERSION = "0.1.0"
# "+git" makes BitBake append the commit (SRCPV) on every release we support.
PV = "${OTAD_BASE_VERSION}+git"

# scarthgap's go.bbclass has no GO_SRCURI_DESTSUFFIX (later releases define
# it with this very expression and win over the weak default).
GO_SRCURI_DESTSUFFIX ??= "${@os.path.join(os.path.basename(d.getVar('S')), 'src', d.getVar('GO_IMPORT')) + '/'}"
SRC_URI = "git://github.com/otadev/otad.git;protocol=https;branch=main;destsuffix=${GO_SRCURI_DESTSUFFIX}"

inherit go-mod

# Modules come from SRC_URI (generated from go.sum), never from the network
# at compile time: with the gomod fetcher where BitBake has it, as plain
# https:// proxy downloads where it does not (scarthgap).
require ${@'otad-go-mods.inc' if hasattr(bb.fetch2, 'gomod') else 'otad-go-mods-proxy.inc'}
export GOPROXY = "off"
export GOFLAGS = "-mod=readonly"
# go.mod says "go 1.26.0": use the Go this build provides or fail, never
# download a toolchain.
export GOTOOLCHAIN = "local"

# Skipped, with the reason, unless this build's Go is at least go.mod's.
inherit otad-go

GO_LINKSHARED = ""
export CGO_ENABLED = "0"
# The device build leaves out the build-host tools (bundle create/sign/keygen,
# delta generation, demo) and HTTP/2 (bundles download as one HTTP/1.1 stream
# with Range resume); otad-native keeps the tools for the bundle class.
GOBUILDFLAGS:append:class-target = " -tags otad_device,nethttpomithttp2"

inherit systemd

SYSTEMD_SERVICE:${PN} = "otad.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# Our own install instead of go.bbclass's, which would copy the whole source
# tree (test scripts included) into ${PN}-dev: otad is a program, not a Go
# library to build against.
do_install() {
    install -d ${D}${bindir}
    install -m 0755 ${B}/${GO_BUILD_BINDIR}/otad ${D}${bindir}/otad
    ln -sf otad ${D}${bindir}/otactl

    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/src/${GO_IMPORT}/systemd/otad.service ${D}${systemd_system_unitdir}/
    install -d ${D}${datadir}/dbus-1/system.d
    install -m 0644 ${S}/src/${GO_IMPORT}/systemd/io.otad.Update1.conf ${D}${datadir}/dbus-1/system.d/
    # journalctl -x explains otad's key events (MESSAGE_IDs); systemd
    # rebuilds its catalog database from this directory.
    install -d ${D}${nonarch_libdir}/systemd/catalog
    install -m 0644 ${S}/src/${GO_IMPORT}/systemd/otad.catalog ${D}${nonarch_libdir}/systemd/catalog/
    # The RAUC-compatible face ([compat] rauc-dbus = yes) needs the bus
    # policy for de.pengutronix.rauc; packaged apart (${PN}-rauc-compat)
    # because RAUC's own package installs the same path.
    install -m 0644 ${S}/src/${GO_IMPORT}/systemd/de.pengutronix.rauc.conf ${D}${datadir}/dbus-1/system.d/
}

# The build-host tool (otad bundle create for otad-bundle.bbclass): only the binary.
do_install:class-native() {
    install -d ${D}${bindir}
    install -m 0755 ${B}/${GO_BUILD_BINDIR}/otad ${D}${bindir}/otad
}

FILES:${PN} += "${systemd_system_unitdir}/otad.service \
                ${datadir}/dbus-1/system.d/io.otad.Update1.conf \
                ${nonarch_libdir}/systemd/catalog/otad.catalog"
PACKAGES =+ "${PN}-rauc-compat"
FILES:${PN}-rauc-compat = "${datadir}/dbus-1/system.d/de.pengutronix.rauc.conf"
RCONFLICTS:${PN}-rauc-compat = "rauc"
FILES:${PN}-dev = ""
FILES:${PN}-staticdev = ""
# Board configuration (system.conf, keys, fw_env.config) is a separate,
# replaceable recipe, as meta-rauc does with rauc-conf.
RDEPENDS:${PN}:append:class-target = " dbus virtual-otad-conf"

BBCLASSEXTEND = "native"
