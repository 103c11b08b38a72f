# otad-board.bbclass — board defaults shared by otad-conf (system.conf),
# otad-boot-script (boot.scr) and otad-bundle (the bundle's compatible), so
# the device, its boot script and its bundles agree. Every value is a weak
# default: set it in local.conf, a machine or a distro conf to change it.
#
# The defaults come from the machine: QEMU machines (MACHINEOVERRIDES
# "qemuall") boot from virtio disk 0 (/dev/vda); Raspberry Pi ("rpi") from
# the SD card, mmc 0 (/dev/mmcblk0); BeagleBone from the eMMC, mmc 1
# (/dev/mmcblk1, where otad-ab-beaglebone.wks and its fw_env.config put
# everything; set OTAD_ROOT_DISK = "mmcblk0" and OTAD_BOOT_DEVNUM = "0" to
# run from the SD card). The kernel is the machine's KERNEL_IMAGETYPE,
# booted with the machine's KERNEL_BOOTCMD, else bootz for a zImage and
# booti otherwise.

def otad_board(d):
    overrides = (d.getVar('MACHINEOVERRIDES') or '').split(':')
    machine = d.getVar('MACHINE') or ''
    if 'qemuall' in overrides:
        return {'devtype': 'virtio', 'devnum': '0', 'disk': 'vda', 'fdt': '', 'fwenv': '1'}
    if 'rpi' in overrides or machine.startswith('raspberrypi'):
        # meta-raspberrypi's u-boot ships /etc/fw_env.config (u-boot-env);
        # the firmware hands U-Boot the device tree it boots with.
        return {'devtype': 'mmc', 'devnum': '0', 'disk': 'mmcblk0', 'fdt': '', 'fwenv': '0'}
    if machine.startswith('beaglebone'):
        return {'devtype': 'mmc', 'devnum': '1', 'disk': 'mmcblk1', 'fdt': 'am335x-boneblack.dtb', 'fwenv': '1'}
    return {'devtype': 'mmc', 'devnum': '0', 'disk': 'mmcblk0', 'fdt': '', 'fwenv': '1'}

def otad_partsep(disk):
    # /dev/mmcblk0p2 but /dev/vda2 and /dev/sda2
    return 'p' if disk[-1:].isdigit() else ''

# Written to /etc/otad/system.conf and into every bundle (OTAD_BUNDLE_COMPATIBLE).
OTAD_COMPATIBLE ??= "${MACHINE}"

OTAD_ROOT_DISK ??= "${@otad_board(d)['disk']}"
OTAD_PART_A ??= "2"
OTAD_PART_B ??= "3"
OTAD_SLOT_A_DEVICE ??= "/dev/${OTAD_ROOT_DISK}${@otad_partsep(d.getVar('OTAD_ROOT_DISK'))}${OTAD_PART_A}"
OTAD_SLOT_B_DEVICE ??= "/dev/${OTAD_ROOT_DISK}${@otad_partsep(d.getVar('OTAD_ROOT_DISK'))}${OTAD_PART_B}"

# U-Boot side of the same disk, and what the boot script loads from /boot
# of the slot (install kernel-image, and kernel-devicetree when OTAD_BOOT_FDT
# is set, into the image).
OTAD_BOOT_DEVTYPE ??= "${@otad_board(d)['devtype']}"
OTAD_BOOT_DEVNUM ??= "${@otad_board(d)['devnum']}"
OTAD_BOOT_KERNEL ??= "${KERNEL_IMAGETYPE}"
# The machine's KERNEL_BOOTCMD where it has one (meta-raspberrypi: booti on
# 64-bit Pis, bootm for its 32-bit uImage default).
OTAD_BOOT_CMD ??= "${@d.getVar('KERNEL_BOOTCMD') or ('bootz' if d.getVar('OTAD_BOOT_KERNEL') == 'zImage' else 'booti')}"
OTAD_BOOT_FDT ??= "${@otad_board(d)['fdt']}"
OTAD_BOOT_ARGS ??= ""

# 0 where the BSP's u-boot already ships /etc/fw_env.config (meta-raspberrypi).
OTAD_INSTALL_FW_ENV_CONFIG ??= "${@otad_board(d)['fwenv']}"
