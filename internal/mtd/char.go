package mtd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mtdCharMajor is the fixed major of /dev/mtdN (minor 2N) and /dev/mtdNro
// (minor 2N+1).
const mtdCharMajor = 90

// Char is a kernel MTD character device (/dev/mtdN).
type Char struct {
	f    *os.File
	info Info
	rdev uint64
}

var _ Device = (*Char)(nil)
var _ BadBlockMarker = (*Char)(nil)

// Open opens /dev/mtdN (or any alias of it) for reading and writing and reads
// its geometry with MEMGETINFO. The size comes from sysfs, because the ioctl's
// 32-bit size field cannot describe devices of 4 GiB and more.
func Open(path string) (*Char, error) { return open(path, os.O_RDWR) }

// OpenReadOnly opens an MTD device for reading only.
func OpenReadOnly(path string) (*Char, error) { return open(path, os.O_RDONLY) }

func open(path string, flag int) (*Char, error) {
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mtd: %w", err)
	}
	c, err := newChar(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

func newChar(f *os.File) (*Char, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("mtd: stat %s: %w", f.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return nil, fmt.Errorf("%w: %s", ErrNotMTD, f.Name())
	}
	var mi unix.MtdInfo
	if err := ioctl(f, unix.MEMGETINFO, unsafe.Pointer(&mi)); err != nil {
		return nil, fmt.Errorf("%w: %s: MEMGETINFO: %w", ErrNotMTD, f.Name(), err)
	}
	info := Info{Size: int64(mi.Size), EraseSize: int64(mi.Erasesize), WriteSize: int64(mi.Writesize)}
	switch mi.Type {
	case unix.MTD_NANDFLASH, unix.MTD_MLCNANDFLASH:
		info.Kind = NAND
	case unix.MTD_NORFLASH, unix.MTD_RAM, unix.MTD_DATAFLASH:
		info.Kind = NOR
	default:
		return nil, fmt.Errorf("%w: %s: unsupported MTD type %d", ErrNotMTD, f.Name(), mi.Type)
	}
	// /dev/mtdNro (odd minor) has no size attribute; its read-write twin does.
	rw := st.Rdev
	if unix.Major(rw) == mtdCharMajor {
		rw = unix.Mkdev(mtdCharMajor, unix.Minor(rw)&^1)
	}
	if n, err := SysfsInt(filepath.Join(SysfsDir("/sys", rw), "size")); err == nil && n > 0 {
		info.Size = n
	}
	if err := info.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return &Char{f: f, info: info, rdev: st.Rdev}, nil
}

// SysfsDir is the sysfs directory of a character device number, e.g.
// /sys/dev/char/90:0 (a symlink to .../mtd/mtd0). sysroot is "/sys" outside
// tests.
func SysfsDir(sysroot string, rdev uint64) string {
	return filepath.Join(sysroot, "dev", "char", fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev)))
}

// SysfsInt reads a sysfs integer attribute file (mtd and UBI geometry).
func SysfsInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return ParseSysfsInt(string(b))
}

// ParseSysfsInt parses a sysfs integer attribute ("1234\n").
func ParseSysfsInt(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("mtd: sysfs value %q: %w", s, err)
	}
	return n, nil
}

// Info returns the geometry read at Open.
func (c *Char) Info() Info { return c.info }

// Rdev is the device number, used to recognise aliases of the same device.
func (c *Char) Rdev() uint64 { return c.rdev }

// Name is the path the device was opened with.
func (c *Char) Name() string { return c.f.Name() }

// ReadAt reads from flash; corrected bitflips are data, uncorrectable ECC
// errors are errors.
func (c *Char) ReadAt(p []byte, off int64) (int, error) {
	if off >= c.info.Size {
		return 0, io.EOF
	}
	n, err := c.f.ReadAt(p, off)
	if err != nil && err != io.EOF {
		return n, fmt.Errorf("mtd: read %d bytes at %#x: %w", len(p), off, err)
	}
	return n, nil
}

// WriteAt programs flash. The region must have been erased.
func (c *Char) WriteAt(p []byte, off int64) (int, error) {
	if err := CheckWrite(c.info, off, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := c.f.WriteAt(p, off)
	if err != nil {
		if c.info.Kind == NAND && errors.Is(err, unix.EIO) {
			return n, fmt.Errorf("%w: program at %#x: %w", ErrBadBlock, off, err)
		}
		return n, fmt.Errorf("mtd: program %d bytes at %#x: %w", len(p), off, err)
	}
	return n, nil
}

// Erase erases one block at a time so a failure names the block that failed.
func (c *Char) Erase(off, n int64) error {
	if err := CheckErase(c.info, off, n); err != nil {
		return err
	}
	for b := off; b < off+n; b += c.info.EraseSize {
		ei := unix.EraseInfo64{Start: uint64(b), Length: uint64(c.info.EraseSize)}
		if err := ioctl(c.f, unix.MEMERASE64, unsafe.Pointer(&ei)); err != nil {
			if c.info.Kind == NAND && errors.Is(err, unix.EIO) {
				return fmt.Errorf("%w: erase at %#x: %w", ErrBadBlock, b, err)
			}
			return fmt.Errorf("mtd: erase at %#x: %w", b, err)
		}
	}
	return nil
}

// IsBad asks the driver (MEMGETBADBLOCK). Devices without bad block support
// (NOR, mtdram) answer EOPNOTSUPP, which means "good".
func (c *Char) IsBad(off int64) (bool, error) {
	if off < 0 || off >= c.info.Size {
		return false, fmt.Errorf("%w: bad block query at %#x", ErrRange, off)
	}
	if c.info.Kind != NAND {
		return false, nil
	}
	pos := off - off%c.info.EraseSize
	r, err := Ioctl(c.f, unix.MEMGETBADBLOCK, unsafe.Pointer(&pos))
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) {
			return false, nil
		}
		return false, fmt.Errorf("mtd: MEMGETBADBLOCK at %#x: %w", pos, err)
	}
	return r > 0, nil
}

// MarkBadBlock records a grown bad block in the bad block table.
func (c *Char) MarkBadBlock(off int64) error {
	if c.info.Kind != NAND {
		return fmt.Errorf("mtd: %s device has no bad block table", c.info.Kind)
	}
	pos := off - off%c.info.EraseSize
	if err := ioctl(c.f, unix.MEMSETBADBLOCK, unsafe.Pointer(&pos)); err != nil {
		return fmt.Errorf("mtd: MEMSETBADBLOCK at %#x: %w", pos, err)
	}
	return nil
}

// Close releases the device.
func (c *Char) Close() error { return c.f.Close() }

func ioctl(f *os.File, req uint, arg unsafe.Pointer) error {
	_, err := Ioctl(f, req, arg)
	return err
}

// Ioctl issues one ioctl on f's descriptor (kept alive through the call)
// and returns its non-negative result. It is the module's one raw ioctl
// helper (MTD here, block and UBI devices in slot).
func Ioctl(f *os.File, req uint, arg unsafe.Pointer) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var r uintptr
	var errno unix.Errno
	if cerr := rc.Control(func(fd uintptr) {
		r, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(arg))
	}); cerr != nil {
		return 0, cerr
	}
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}
