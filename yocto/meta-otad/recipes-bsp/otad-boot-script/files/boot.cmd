# otad A/B boot script for U-Boot (hush). Build it with
#   mkimage -A arm64 -O linux -T script -C none -d boot.cmd boot.scr
# and put boot.scr where the distro boot flow finds it (partition 1).
#
# Contract with otad (internal/boot, mirrored by internal/boot/bootsim):
#   otad_slot          slot to boot, A or B (anything else boots A)
#   otad_prev          slot to fall back to
#   upgrade_available  1 while otad_slot is on trial
#   bootcount          trial boots so far, hex (what setexpr writes)
#   bootlimit          trial boots allowed, default 3 (compared as hex: keep 1..9)
#   otad_failed        written by the fallback: the slot that failed its trial
# A normal boot (upgrade_available not 1) writes nothing. A trial boot saves
# the environment exactly once, before Linux starts, so a hang or power cut
# later in that boot still counts.
#
# Board variables (all optional, set them in the default environment):
#   devtype, devnum         disk holding the slots (default virtio 0)
#   otad_part_A/B           partition number of each slot (default 2 and 3)
#   otad_root_A/B           root= of each slot (default /dev/vda<part>)
#   otad_kernel             kernel in /boot of the slot (default Image)
#   otad_initrd             initramfs in /boot (default initrd.img; skipped if absent)
#   otad_fdt                device tree in /boot (default: U-Boot's own, fdtcontroladdr)
#   otad_bootcmd            booti (arm64, default) or bootz (32-bit arm, zImage)
#   otad_bootargs           extra kernel arguments (console=...)
#   otad_native_bootcount   1 if U-Boot's own CONFIG_BOOTCOUNT_LIMIT counts;
#                           then its altbootcmd (written by otad) falls back.

if test "${upgrade_available}" = "1" && test "${otad_native_bootcount}" != "1"; then
	if test -z "${bootcount}"; then
		setenv bootcount 0
	fi
	if test -z "${bootlimit}"; then
		setenv bootlimit 3
	fi
	setexpr bootcount ${bootcount} + 1
	if itest ${bootcount} -gt ${bootlimit}; then
		echo "otad: slot ${otad_slot} failed ${bootlimit} trial boots, falling back to ${otad_prev}"
		setenv otad_failed ${otad_slot}
		setenv otad_slot ${otad_prev}
		setenv upgrade_available 0
		setenv bootcount 0
	else
		echo "otad: trial boot ${bootcount} of ${bootlimit} for slot ${otad_slot}"
	fi
	saveenv
fi

# Nothing below is saved: defaults stay out of the environment.
if test -z "${devtype}"; then
	setenv devtype virtio
fi
if test -z "${devnum}"; then
	setenv devnum 0
fi
if test -z "${otad_part_A}"; then
	setenv otad_part_A 2
fi
if test -z "${otad_part_B}"; then
	setenv otad_part_B 3
fi
if test -z "${otad_root_A}"; then
	setenv otad_root_A /dev/vda${otad_part_A}
fi
if test -z "${otad_root_B}"; then
	setenv otad_root_B /dev/vda${otad_part_B}
fi
if test -z "${otad_kernel}"; then
	setenv otad_kernel Image
fi
if test -z "${otad_initrd}"; then
	setenv otad_initrd initrd.img
fi
if test -z "${otad_bootcmd}"; then
	setenv otad_bootcmd booti
fi

setenv otad_boot_slot A
setenv otad_boot_part ${otad_part_A}
setenv otad_boot_root ${otad_root_A}
if test "${otad_slot}" = "B"; then
	setenv otad_boot_slot B
	setenv otad_boot_part ${otad_part_B}
	setenv otad_boot_root ${otad_root_B}
fi

setenv bootargs "${otad_bootargs} root=${otad_boot_root} rootwait otad.slot=${otad_boot_slot}"
echo "otad: booting slot ${otad_boot_slot} from ${devtype} ${devnum}:${otad_boot_part}"

if load ${devtype} ${devnum}:${otad_boot_part} ${kernel_addr_r} /boot/${otad_kernel}; then
	setenv otad_rd -
	if load ${devtype} ${devnum}:${otad_boot_part} ${ramdisk_addr_r} /boot/${otad_initrd}; then
		setenv otad_rd ${ramdisk_addr_r}:${filesize}
	fi
	setenv otad_dtb ${fdtcontroladdr}
	if test -n "${otad_fdt}"; then
		if load ${devtype} ${devnum}:${otad_boot_part} ${fdt_addr_r} /boot/${otad_fdt}; then
			setenv otad_dtb ${fdt_addr_r}
		fi
	fi
	setenv otad_bootexec "${otad_bootcmd} ${kernel_addr_r} ${otad_rd} ${otad_dtb}"
	run otad_bootexec
fi

echo "otad: cannot boot slot ${otad_boot_slot}"
if test "${upgrade_available}" = "1"; then
	# The trial already counted this boot: resetting walks toward the fallback.
	reset
fi
