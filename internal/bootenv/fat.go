package bootenv

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrSingleCopyFAT is a single-copy environment kept as a file on a FAT
// file system (the Raspberry Pi U-Boot's CONFIG_ENV_IS_IN_FAT default): a
// power cut while the file is rewritten can leave no valid copy, and the
// board then boots U-Boot's built-in default environment, which knows
// nothing of the A/B slots. DeviceStore.ArmRisk returns it (wrapped, with
// the fix) unless Config.AcceptSingleCopy is set.
var ErrSingleCopyFAT = errors.New("bootenv: single-copy U-Boot environment on a FAT file system")

// onFAT reports whether the open file lives on a FAT (vfat/msdos) file
// system. statfs is the kernel's own answer: the mount table could name a
// bind mount or an overlay.
func onFAT(f *os.File) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return false, fmt.Errorf("bootenv: statfs %s: %w", f.Name(), err)
	}
	return st.Type == unix.MSDOS_SUPER_MAGIC, nil
}

// SingleCopyFAT reports whether the environment is ONE file on a FAT file
// system: the configuration ArmRisk refuses.
func (s *DeviceStore) SingleCopyFAT() bool {
	if s.c.redundant() || len(s.c.areas) != 1 {
		return false
	}
	a, ok := s.c.areas[0].(*fileArea)
	return ok && a.fat
}

// ArmRisk is nil when arming a new slot through this store is power-fail
// safe enough to do. It is an error wrapping ErrSingleCopyFAT, saying how
// to fix it, for a single-copy environment on FAT, unless the config
// accepts that risk (Config.AcceptSingleCopy, otad's [system] single-env =
// accept). A single copy on raw storage is not refused: it is what boards
// without a second env area have, and U-Boot rewrites it the same way.
func (s *DeviceStore) ArmRisk() error {
	if !s.SingleCopyFAT() || s.cfg.AcceptSingleCopy {
		return nil
	}
	d := s.cfg.Devices[0]
	return fmt.Errorf("%w (%s): a power cut while it is rewritten can leave no valid environment, and the board "+
		"then boots U-Boot's built-in default; build U-Boot with CONFIG_SYS_REDUNDAND_ENVIRONMENT=y and "+
		"CONFIG_ENV_FAT_FILE_REDUND=\"uboot-redund.env\", list both files in fw_env.config "+
		"(\"%s 0x0 %#x\" and the redundant file in the same directory, same size), "+
		"or set [system] single-env = accept to take the risk",
		ErrSingleCopyFAT, d.Path, d.Path, d.EnvSize)
}
