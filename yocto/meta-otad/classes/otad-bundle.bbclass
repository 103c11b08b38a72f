# otad-bundle.bbclass — build a signed otad bundle (.otab) from an image.
#
# Inherit it in a bundle recipe (see recipes-otad/bundles/otad-example-bundle.bb):
#   OTAD_BUNDLE_IMAGE            image recipe whose root file system goes into the bundle
#   OTAD_BUNDLE_IMAGE_FSTYPE     image type to take from DEPLOY_DIR_IMAGE (default ext4)
#   OTAD_BUNDLE_COMPATIBLE       must equal "compatible" in the device's /etc/otad/system.conf
#   OTAD_BUNDLE_VERSION          free-form version string (default ${DISTRO_VERSION})
#   OTAD_BUNDLE_SECURITY_VERSION anti-rollback counter; devices refuse bundles below their floor
#   OTAD_BUNDLE_KEYS             space-separated private key files; each adds one signature
#                                (two keys = rotation without a flag day)
#   OTAD_BUNDLE_COMPRESS         zstd (default) or none
#   OTAD_BUNDLE_DELTA_FROM       optional: previous image file; builds a delta image
#                                (falls back to a full image when not smaller)
# Keys never enter the layer or sstate: point OTAD_BUNDLE_KEYS at files on
# the build host (or a signing server mount) from local.conf or site.conf.

OTAD_BUNDLE_IMAGE ??= ""
OTAD_BUNDLE_IMAGE_FSTYPE ??= "ext4"
OTAD_BUNDLE_COMPATIBLE ??= "${MACHINE}"
OTAD_BUNDLE_VERSION ??= "${DISTRO_VERSION}"
OTAD_BUNDLE_SECURITY_VERSION ??= "0"
OTAD_BUNDLE_KEYS ??= ""
OTAD_BUNDLE_COMPRESS ??= "zstd"
OTAD_BUNDLE_DELTA_FROM ??= ""
OTAD_BUNDLE_NAME ??= "${PN}-${MACHINE}"

DEPENDS += "otad-native"
do_bundle[depends] += "${@'${OTAD_BUNDLE_IMAGE}:do_image_complete' if d.getVar('OTAD_BUNDLE_IMAGE') else ''}"
do_bundle[vardeps] += "OTAD_BUNDLE_COMPATIBLE OTAD_BUNDLE_VERSION OTAD_BUNDLE_SECURITY_VERSION OTAD_BUNDLE_COMPRESS"
do_bundle[dirs] = "${B}"
do_bundle[cleandirs] = "${B}"

inherit deploy nopackages

python __anonymous() {
    if not d.getVar('OTAD_BUNDLE_IMAGE'):
        bb.fatal("otad-bundle: set OTAD_BUNDLE_IMAGE to the image recipe to bundle")
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
        -o "${B}/${OTAD_BUNDLE_NAME}.otab"
    otad bundle info "${B}/${OTAD_BUNDLE_NAME}.otab"
}
addtask bundle after do_configure before do_deploy

do_deploy() {
    install -d ${DEPLOYDIR}
    install -m 0644 ${B}/${OTAD_BUNDLE_NAME}.otab ${DEPLOYDIR}/
}
addtask deploy after do_bundle before do_build

do_fetch[noexec] = "1"
do_unpack[noexec] = "1"
do_patch[noexec] = "1"
do_compile[noexec] = "1"
do_install[noexec] = "1"
