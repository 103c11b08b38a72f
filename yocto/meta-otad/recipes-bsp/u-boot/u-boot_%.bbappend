# Optional: native boot counting in U-Boot itself. otad's boot script counts
# on its own, so this is only needed when the board's U-Boot runs the
# bootlimit/altbootcmd logic (before the script), e.g. to also count boots
# that die before the script runs. Enable in local.conf:
#   OTAD_UBOOT_BOOTCOUNT = "1"
# and add otad_native_bootcount=1 to the board's default environment so
# the boot script leaves the counting to U-Boot (else each boot counts twice).
FILESEXTRAPATHS:prepend := "${THISDIR}/files:"
SRC_URI:append = "${@' file://otad-bootcount.cfg' if d.getVar('OTAD_UBOOT_BOOTCOUNT') == '1' else ''}"
SRC_URI:append = "${@' file://otad-env-redundant.cfg' if d.getVar('OTAD_UBOOT_ENV_REDUNDANT') == '1' else ''}"
