package bootenv

import (
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mtdChar is a /dev/mtdN character device as a Medium.
type mtdChar struct {
	f    *os.File
	info unix.MtdInfo
}

func openMTD(f *os.File) (*mtdChar, error) {
	m := &mtdChar{f: f}
	if err := m.ioctl(unix.MEMGETINFO, unsafe.Pointer(&m.info)); err != nil {
		return nil, fmt.Errorf("MEMGETINFO: %w", err)
	}
	if m.info.Type != unix.MTD_NORFLASH && m.info.Type != unix.MTD_NANDFLASH {
		return nil, fmt.Errorf("MTD type %d is neither NOR nor NAND flash", m.info.Type)
	}
	return m, nil
}

func (m *mtdChar) ioctl(req uint, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, m.f.Fd(), uintptr(req), uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

func (m *mtdChar) writable() bool { return m.info.Flags&unix.MTD_WRITEABLE != 0 }

func (m *mtdChar) ReadAt(p []byte, off int64) (int, error) {
	n, err := m.f.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	return n, err
}

func (m *mtdChar) WriteAt(p []byte, off int64) (int, error) {
	return m.f.WriteAt(p, off)
}

// Erase erases [off, off+n) one erase block at a time.
func (m *mtdChar) Erase(off, n int64) error {
	es := int64(m.info.Erasesize)
	for o := off; o < off+n; o += es {
		ei := unix.EraseInfo{Start: uint32(o), Length: uint32(es)}
		// Unlock may be unsupported; a locked sector then fails the erase.
		_ = m.ioctl(unix.MEMUNLOCK, unsafe.Pointer(&ei))
		if err := m.ioctl(unix.MEMERASE, unsafe.Pointer(&ei)); err != nil {
			return fmt.Errorf("MEMERASE %#x: %w", o, err)
		}
	}
	return nil
}

// IsBad asks the kernel's bad block table (NAND only).
func (m *mtdChar) IsBad(off int64) (bool, error) {
	if m.info.Type != unix.MTD_NANDFLASH {
		return false, nil
	}
	bo := off
	r, _, e := unix.Syscall(unix.SYS_IOCTL, m.f.Fd(), uintptr(unix.MEMGETBADBLOCK), uintptr(unsafe.Pointer(&bo)))
	switch {
	case e == unix.EOPNOTSUPP:
		return false, nil // no bad block table
	case e != 0:
		return false, fmt.Errorf("MEMGETBADBLOCK %#x: %w", off, e)
	}
	return r != 0, nil
}
