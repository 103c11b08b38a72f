// Package mtd talks to raw flash: NOR and NAND exposed by Linux as /dev/mtdN.
//
// Invariants callers rely on:
//   - Programming can only clear bits; an erase block must be erased (all 0xFF)
//     before it is programmed again. This package never erases implicitly:
//     WriteAt on a programmed region ANDs into it, exactly like the hardware.
//   - On NAND, writes are whole pages at page-aligned offsets, and erase and
//     program of a bad block fail. A failing erase or program on NAND is
//     reported as ErrBadBlock so the caller can mark the block and move on.
//   - Nothing is cached: when WriteAt or Erase returns nil the flash holds the
//     data (mtdchar programs synchronously). What survives a power cut in the
//     middle of an operation is undefined for the page or erase block being
//     programmed or erased, and intact everywhere else.
//   - To program a few bytes in place (a flag), program the aligned
//     Info.ProgramUnit around them, padded with the bytes already there:
//     re-programming a byte with its own value changes nothing, and Linux's
//     CFI drivers send such a unit as buffered programs, never as the
//     one-word program some chips and emulations mishandle.
//
// The Device interface is deliberately small so the same writer code runs on
// the kernel driver (Char) and on the simulator in mtdtest.
package mtd

import (
	"errors"
	"fmt"
	"io"
)

// Kind is the flash technology, which decides the write rules.
type Kind int

const (
	// NOR flash: byte-writable, no bad blocks.
	NOR Kind = iota
	// NAND flash: page-writable, may have factory and grown bad blocks.
	NAND
)

func (k Kind) String() string {
	switch k {
	case NOR:
		return "nor"
	case NAND:
		return "nand"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Info is the geometry of a flash device.
type Info struct {
	Kind      Kind
	Size      int64 // bytes
	EraseSize int64 // erase block size
	WriteSize int64 // minimal program unit (NAND page; 1 on most NOR)
	// WriteBufSize is the chip's write buffer, when known: the largest
	// piece a CFI driver sends as one buffered program. Linux keeps it in
	// struct mtd_info but reports it to user space neither in MEMGETINFO nor
	// in sysfs, so Open leaves it 0; the simulator tears a buffered program
	// as one piece when it is set. 0 = unknown.
	WriteBufSize int64
}

// NORProgramUnit is the smallest in-place program ProgramUnit gives on
// byte-writable flash.
const NORProgramUnit = 64

// ProgramUnit is the size and alignment in which a program of a few bytes
// in place (a flag byte) is issued, padded with the bytes already there.
//
// On NOR, Linux's CFI drivers choose buffered or single-word programs by
// length and alignment, and user space cannot learn the chip's buffer
// size. cfi_cmdset_0001 (Intel/Sharp, and QEMU's pflash_cfi01) sends every
// write, however short, as buffered programs cut at write-buffer
// boundaries; cfi_cmdset_0002 (AMD/Spansion) uses buffered programs for the
// bus-aligned part while at least two bus words remain and single-word
// programs for the rest. An aligned NORProgramUnit-byte write is at least
// two bus words on the widest bus Linux maps (32 bytes), and since write
// buffers are powers of two it is one buffered program or several whole
// ones, never a one-word program. That matters: a 1-byte write becomes a
// one-word buffered program under cfi_cmdset_0001, which QEMU's pflash
// (9.0.1 and later) rejects.
func (i Info) ProgramUnit() int64 {
	u := max(i.WriteSize, 1)
	u *= (NORProgramUnit + u - 1) / u // whole pages, at least NORProgramUnit
	if i.EraseSize > 0 && (u > i.EraseSize || i.EraseSize%u != 0) {
		// Never straddle an erase block: fall back to the smallest legal unit.
		u = i.WriteSize
	}
	return max(u, 1)
}

// Blocks is the number of erase blocks.
func (i Info) Blocks() int {
	if i.EraseSize <= 0 {
		return 0
	}
	return int(i.Size / i.EraseSize)
}

// Validate reports geometry that no writer can work with.
func (i Info) Validate() error {
	switch {
	case i.EraseSize <= 0 || i.WriteSize <= 0 || i.Size <= 0:
		return fmt.Errorf("%w: size %d, erase %d, write %d", ErrGeometry, i.Size, i.EraseSize, i.WriteSize)
	case i.EraseSize%i.WriteSize != 0 || i.Size%i.EraseSize != 0:
		return fmt.Errorf("%w: size %d, erase %d, write %d not nested multiples", ErrGeometry, i.Size, i.EraseSize, i.WriteSize)
	case i.WriteBufSize < 0 || i.WriteBufSize > 0 && (i.WriteBufSize%i.WriteSize != 0 || i.EraseSize%i.WriteBufSize != 0):
		return fmt.Errorf("%w: write buffer %d does not nest between write size %d and erase size %d", ErrGeometry, i.WriteBufSize, i.WriteSize, i.EraseSize)
	}
	return nil
}

// Device is one flash partition.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Erase sets [off, off+n) to 0xFF; both must be erase-block aligned.
	Erase(off, n int64) error
	// IsBad reports whether the erase block containing off is marked bad.
	// NOR devices always report false.
	IsBad(off int64) (bool, error)
	Info() Info
}

// BadBlockMarker is implemented by devices that can record a grown bad block
// (MEMSETBADBLOCK), so later scans skip it.
type BadBlockMarker interface {
	MarkBadBlock(off int64) error
}

var (
	// ErrBadBlock: the erase block is bad, or just failed to erase or program.
	ErrBadBlock = errors.New("mtd: bad erase block")
	// ErrAlign: offset or length violates the erase or page alignment.
	ErrAlign = errors.New("mtd: unaligned access")
	// ErrRange: access beyond the end of the device.
	ErrRange = errors.New("mtd: access beyond end of device")
	// ErrGeometry: the device reports unusable geometry.
	ErrGeometry = errors.New("mtd: invalid geometry")
	// ErrNotMTD: the path is not an MTD character device.
	ErrNotMTD = errors.New("mtd: not an MTD character device")
)

// CheckWrite validates a program request against the device rules; shared
// by the kernel driver wrapper and the simulator so both refuse the same
// requests with the same errors.
func CheckWrite(i Info, off, n int64) error {
	if off < 0 || n < 0 || off+n > i.Size {
		return fmt.Errorf("%w: write %d bytes at %#x, size %#x", ErrRange, n, off, i.Size)
	}
	if off%i.WriteSize != 0 || n%i.WriteSize != 0 {
		return fmt.Errorf("%w: write %d bytes at %#x, page size %d", ErrAlign, n, off, i.WriteSize)
	}
	return nil
}

// CheckErase validates an erase request against the device rules.
func CheckErase(i Info, off, n int64) error {
	if off < 0 || n < 0 || off+n > i.Size {
		return fmt.Errorf("%w: erase %d bytes at %#x, size %#x", ErrRange, n, off, i.Size)
	}
	if off%i.EraseSize != 0 || n%i.EraseSize != 0 {
		return fmt.Errorf("%w: erase %d bytes at %#x, erase size %d", ErrAlign, n, off, i.EraseSize)
	}
	return nil
}
