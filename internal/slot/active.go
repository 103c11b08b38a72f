package slot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Device majors that name the same flash through different nodes.
const (
	mtdCharMajor  = 90 // /dev/mtdN is minor 2N, /dev/mtdNro is 2N+1
	mtdBlockMajor = 31 // /dev/mtdblockN is minor N
)

// identity is what a device occupies: keys are the device itself under every
// name; under are the devices it lives on (whole disk of a partition,
// slaves of a device-mapper target, the MTD under a UBI volume).
type identity struct {
	path  string
	keys  []string
	under []string
}

// checkNotActive refuses s if it is, contains, or is contained in the
// active slot's device.
func checkNotActive(sysfs string, s, active Slot) error {
	if s.Device == "" {
		return fmt.Errorf("slot %s: no device configured", s.Name)
	}
	if active.Device == "" {
		return fmt.Errorf("%w: active slot unknown, cannot prove %s is not it", ErrActiveSlot, s.Device)
	}
	if s.Name != "" && s.Name == active.Name {
		return fmt.Errorf("%w: %s is the booted slot", ErrActiveSlot, s.Name)
	}
	t, err := identify(sysfs, s.Device)
	if err != nil {
		return fmt.Errorf("slot %s: %w", s.Name, err)
	}
	a, err := identify(sysfs, active.Device)
	if errors.Is(err, fs.ErrNotExist) {
		// A missing active device cannot be reached through an alias; only
		// the literal path can still collide.
		if filepath.Clean(absPath(active.Device)) == t.path {
			return fmt.Errorf("%w: %s is the active device", ErrActiveSlot, s.Device)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: cannot identify active device %s: %w", ErrActiveSlot, active.Device, err)
	}
	if k := common(t.keys, a.keys); k != "" {
		return fmt.Errorf("%w: %s is %s (%s)", ErrActiveSlot, s.Device, active.Device, k)
	}
	if k := common(t.keys, a.under); k != "" {
		return fmt.Errorf("%w: active %s lives on %s (%s)", ErrActiveSlot, active.Device, s.Device, k)
	}
	if k := common(t.under, a.keys); k != "" {
		return fmt.Errorf("%w: %s lives on active %s (%s)", ErrActiveSlot, s.Device, active.Device, k)
	}
	return nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func common(a, b []string) string {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return x
			}
		}
	}
	return ""
}

func identify(sysfs, path string) (identity, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return identity{}, err
	}
	real = absPath(real)
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return identity{}, &fs.PathError{Op: "stat", Path: real, Err: err}
	}
	id := identity{path: real, keys: []string{"path:" + real}}
	maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		id.keys = append(id.keys, fmt.Sprintf("block:%d:%d", maj, min))
		if maj == mtdBlockMajor {
			id.keys = append(id.keys, fmt.Sprintf("mtd:%d", min))
		}
		id.under = blockUnder(sysfs, maj, min, 0)
	case unix.S_IFCHR:
		id.keys = append(id.keys, fmt.Sprintf("char:%d:%d", maj, min))
		if maj == mtdCharMajor {
			id.keys = append(id.keys, fmt.Sprintf("mtd:%d", min/2))
		}
		if n, ok := ubiVolumeMTD(sysfs, st.Rdev); ok {
			id.under = append(id.under, fmt.Sprintf("mtd:%d", n))
		}
	default:
		id.keys = append(id.keys, fmt.Sprintf("inode:%d:%d", st.Dev, st.Ino))
	}
	return id, nil
}

// blockUnder lists the block devices a block device sits on: the whole disk
// of a partition and, recursively, device-mapper/md slaves.
func blockUnder(sysfs string, maj, min uint32, depth int) []string {
	if depth > 8 {
		return nil
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(sysfs, "dev", "block", fmt.Sprintf("%d:%d", maj, min)))
	if err != nil {
		return nil
	}
	var parents []string
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		if d, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "dev")); err == nil {
			parents = append(parents, strings.TrimSpace(string(d)))
		}
	}
	slaves, _ := os.ReadDir(filepath.Join(dir, "slaves"))
	for _, s := range slaves {
		if d, err := os.ReadFile(filepath.Join(dir, "slaves", s.Name(), "dev")); err == nil {
			parents = append(parents, strings.TrimSpace(string(d)))
		}
	}
	var out []string
	for _, p := range parents {
		var pm, pn uint32
		if _, err := fmt.Sscanf(p, "%d:%d", &pm, &pn); err != nil {
			continue
		}
		out = append(out, fmt.Sprintf("block:%d:%d", pm, pn))
		if pm == mtdBlockMajor {
			out = append(out, fmt.Sprintf("mtd:%d", pn))
		}
		out = append(out, blockUnder(sysfs, pm, pn, depth+1)...)
	}
	return out
}

// ubiVolumeMTD returns the MTD number under a UBI volume character device
// (sysfs .../ubiX/ubiX_Y, with ubiX/mtd_num).
func ubiVolumeMTD(sysfs string, rdev uint64) (int, bool) {
	dir, err := filepath.EvalSymlinks(filepath.Join(sysfs, "dev", "char", fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))))
	if err != nil {
		return 0, false
	}
	if _, err := os.Stat(filepath.Join(dir, "corrupted")); err != nil {
		return 0, false // not a volume
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "mtd_num"))
	if err != nil {
		return 0, false
	}
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &n); err != nil {
		return 0, false
	}
	return n, true
}
