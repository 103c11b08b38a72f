# otad-bundle.bbclass — build a signed otad bundle (.otab) from an image.
#
# Inherit it in a bundle recipe (see recipes-otad/bundles/otad-example-bundle.bb):
#   OTAD_BUNDLE_IMAGE            image recipe whose root file system goes into the bundle
#   OTAD_BUNDLE_IMAGE_FSTYPE     image type to take from DEPLOY_DIR_IMAGE (default ext4)
#   OTAD_BUNDLE_COMPATIBLE       must equal "compatible" in the device's /etc/otad/system.conf;
#                                default OTAD_COMPATIBLE, the value otad-conf writes there
#   OTAD_BUNDLE_VERSION          free-form version string (default ${DISTRO_VERSION})
#   OTAD_BUNDLE_SECURITY_VERSION anti-rollback counter; devices refuse bundles below their floor
#   OTAD_BUNDLE_KEYS             space-separated private key files; each adds one signature
#                                (two keys = rotation without a flag day)
#   OTAD_BUNDLE_COMPRESS         zstd (default) or none
#   OTAD_BUNDLE_DELTA_FROM       optional: previous image file; builds a delta image
#                                (falls back to a full image when not smaller)
#   OTAD_BUNDLE_NAME             file name without .otab, timestamped by default;
#   OTAD_BUNDLE_LINK_NAME        a symlink to the newest one (as meta-rauc names bundles)
# Keys never enter the layer or sstate: point OTAD_BUNDLE_KEYS at files on
# the build host (or a signing server mount) from local.conf or site.conf.
# Their checksums are part of do_bundle's signature, so a new key rebuilds
# the bundle. A recipe without keys is skipped (nothing to sign with).

OTAD_BUNDLE_IMAGE ??= ""
OTAD_BUNDLE_IMAGE_FSTYPE ??= "ext4"
# otad-go: skipped, not broken, when otad-native is (Go too old).
inherit otad-board otad-go deploy nopackages

OTAD_BUNDLE_COMPATIBLE ??= "${OTAD_COMPATIBLE}"
OTAD_BUNDLE_VERSION ??= "${DISTRO_VERSION}"
OTAD_BUNDLE_SECURITY_VERSION ??= "0"
OTAD_BUNDLE_KEYS ??= ""
OTAD_BUNDLE_COMPRESS ??= "zstd"
OTAD_BUNDLE_DELTA_FROM ??= ""
OTAD_BUNDLE_LINK_NAME ??= "${PN}-${MACHINE}"
OTAD_BUNDLE_NAME ??= "${OTAD_BUNDLE_LINK_NAME}-${DATETIME}"
OTAD_BUNDLE_NAME[vardepsexclude] = "DATETIME"

# Only otad-native runs (and, for a delta, the zstd program it codes LZ
# windows with: without it the pure-Go coder makes larger major-release
# deltas): no cross compiler, no libc.
INHIBIT_DEFAULT_DEPS = "1"
PACKAGE_ARCH = "${MACHINE_ARCH}"
DEPENDS = "otad-native ${@'zstd-native' if d.getVar('OTAD_BUNDLE_DELTA_FROM') else ''}"
do_bundle[depends] += "${@'${OTAD_BUNDLE_IMAGE}:do_image_complete' if d.getVar('OTAD_BUNDLE_IMAGE') else ''}"
do_bundle[vardeps] += "OTAD_BUNDLE_COMPATIBLE OTAD_BUNDLE_VERSION OTAD_BUNDLE_SECURITY_VERSION OTAD_BUNDLE_COMPRESS"
do_bundle[file-checksums] += "${@' '.join('%s:True' % f for f in (d.getVar('OTAD_BUNDLE_KEYS') or '').split())}"
do_bundle[dirs] = "${B}"
do_bundle[cleandirs] = "${B}"

python __anonymous() {
    if not d.getVar('OTAD_BUNDLE_IMAGE'):
        bb.fatal("otad-bundle: set OTAD_BUNDLE_IMAGE to the image recipe to bundle")
    if not d.getVar('OTAD_BUNDLE_KEYS'):
        raise bb.parse.SkipRecipe("otad-bundle: set OTAD_BUNDLE_KEYS (private key files on the build host) to build signed bundles")
}

do_bundle() {
    if [ -z "${OTAD_BUNDLE_KEYS}" ]; then
        bbfatal "otad-bundle: OTAD_BUNDLE_KEYS is empty; a bundle must be signed"
    fi
    img="${DEPLOY_DIR_IMAGE}/${OTAD_BUNDLE_IMAGE}-${MACHINE}.rootfs.${OTAD_BUNDLE_IMAGE_FSTYPE}"
    [ -e "$img" ] || img="${DEPLOY_DIR_IMAGE}/${OTAD_BUNDLE_IMAGE}-${MACHINE}.${OTAD_BUNDLE_IMAGE_FSTYPE}"
    [ -e "$img" ] || bbfatal "otad-bundle: image $img not found"

    keyargs=""
    for k in ${OTAD_BUNDLE_KEYS}; do keyargs="$keyargs --key $k"; done
    deltaargs=""
    if [ -n "${OTAD_BUNDLE_DELTA_FROM}" ]; then
        deltaargs="--delta-from ${OTAD_BUNDLE_DELTA_FROM}"
    fi

    otad bundle create \
        --compatible "${OTAD_BUNDLE_COMPATIBLE}" \
        --version "${OTAD_BUNDLE_VERSION}" \
        --security-version "${OTAD_BUNDLE_SECURITY_VERSION}" \
        --compress "${OTAD_BUNDLE_COMPRESS}" \
        --image "rootfs=$img" \
        $deltaargs $keyargs \
        -o "${B}/bundle.otab"
    otad bundle info "${B}/bundle.otab"
}
addtask bundle after do_configure before do_deploy

do_deploy() {
    install -d ${DEPLOYDIR}
    # Named here, not in do_bundle: a do_bundle stamp from an earlier build
    # must not leave a file with another build's timestamp.
    install -m 0644 ${B}/bundle.otab ${DEPLOYDIR}/${OTAD_BUNDLE_NAME}.otab
    ln -sf ${OTAD_BUNDLE_NAME}.otab ${DEPLOYDIR}/${OTAD_BUNDLE_LINK_NAME}.otab
}
addtask deploy after do_bundle before do_build

do_fetch[noexec] = "1"
do_unpack[noexec] = "1"
do_patch[noexec] = "1"
do_configure[noexec] = "1"
do_compile[noexec] = "1"
do_install[noexec] = "1"
