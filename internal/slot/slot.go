// Package slot models the A/B slots from the config file and writes images
// into the inactive one: eMMC/SD partitions, raw NOR/NAND (via mtd), UBI
// volumes, and plain files for the demo and tests.
//
// Invariants:
//   - The active slot is never opened for writing. Open is the only way to get
//     a writable Target, and it refuses any device that is, contains or sits
//     inside the active one, however it is named (symlink, /dev/disk/by-*,
//     another device node with the same number, partition of the same disk,
//     the flash under an active UBI volume).
//   - A Writer's Sync makes every byte written so far durable; Close syncs.
//     Nothing else is promised across a power cut: a slot being written holds
//     an undefined mix of old and new data. That is safe because a slot is only
//     armed for boot after the whole image is written, synced and verified
//     with VerifyReadBack, and the engine records progress only after Sync.
//   - Writers resume: OpenWriter at any multiple of WriteAlign produces the
//     same device contents as an uninterrupted write from zero (for NAND, the
//     logical-to-physical block mapping is a pure function of the bad block
//     table, so a resumed writer lands where a fresh one would).
//   - A UBI volume update cannot be resumed: the kernel marks an interrupted
//     update corrupted; WriteAlign is the volume size so a resume restarts at 0.
//   - VerifyReadBack passes only if the medium, not a cache, holds exactly
//     an image hashing to the given SHA-256. It proves that one of two ways:
//     1. Per-chunk comparison (the default for block devices written by
//     OpenVerifiedWriter from offset 0 with the O_DIRECT writer): as each
//     chunk's O_DIRECT write returns, the chunk is read again with O_DIRECT
//     (the page cache cannot serve it) and compared byte for byte with the
//     buffer it was written from; the unaligned tail after the final
//     fdatasync. The caller vouched that the stream hashes to the SHA-256
//     (the engine's bundle reader checks a full image's SHA-256 on its way
//     in and withholds the last chunk if it fails; delta.Apply does the same
//     for the image it builds, withholding the last window), so equality over
//     [0, size) proves the medium hashes to it without a second SHA-256
//     pass. A mismatch or failed read fails closed with the offset
//     (ErrReadBackMismatch, and the writer's next Write stops early). What
//     this does not see: a chunk damaged on the medium after it was compared
//     (the full re-hash, after the final sync, would), and a device that
//     answers reads from its own volatile cache (neither way can see that).
//     2. Full re-hash in every other case: a resumed writer (offset > 0, as
//     after a restart), the buffered writer, files, MTD and UBI, a writer
//     from plain OpenWriter, Options.FullReadBack, a size or SHA-256 other
//     than the writer's, a comparison that stopped (cancel, abandon), and
//     any second VerifyReadBack (a proof is used once). It fdatasyncs, then
//     hashes [0, size) with O_DIRECT reads for block devices and files
//     (BLKFLSBUF / fadvise where O_DIRECT is unavailable); MTD and UBI
//     reads are uncached by nature.
//
// Block devices are written with O_DIRECT from aligned 4 MiB buffers, one
// chunk in flight while the next is filled, and with the per-chunk
// comparison one more being compared: three 4 MiB buffers and one 1 MiB
// read buffer (Options.Buffered: through the page cache instead, with
// writeback paced by sync_file_range). Sync and Close end with fdatasync,
// which also flushes the device's write cache.
package slot

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
)

// Slot is one entry of the config file.
type Slot struct {
	Name     string // "A" | "B"
	Class    string // e.g. "rootfs"
	Device   string // path: /dev/mmcblk0p3, /dev/mtd4, /dev/ubi0_1, or a file
	Type     string // "block" | "mtd" | "ubivol" | "file"
	Bootname string // name the boot protocol uses, if not Name
}

// Slot types.
const (
	TypeBlock  = "block"
	TypeMTD    = "mtd"
	TypeUBIVol = "ubivol"
	TypeFile   = "file"
)

// Target is an opened slot.
type Target interface {
	io.ReaderAt
	Size() int64       // capacity in bytes
	WriteAlign() int64 // resume offsets are multiples of this
	// OpenWriter returns a sequential writer starting at off.
	OpenWriter(ctx context.Context, off int64) (Writer, error)
	Close() error
}

// Writer writes sequentially into a Target.
type Writer interface {
	io.Writer
	Sync() error  // everything written so far is durable
	Close() error // flushes and syncs; the Target stays open
}

// SizedTarget is implemented by targets that must know the image size before
// the first byte (UBI volume update), and lets the others refuse an image
// that cannot fit before anything is written. Use OpenWriter.
type SizedTarget interface {
	OpenSizedWriter(ctx context.Context, off, size int64) (Writer, error)
}

var (
	// ErrActiveSlot: the slot to write is (an alias of, or overlaps) the active one.
	ErrActiveSlot = errors.New("slot: refusing to write the active slot")
	// ErrTooLarge: the image does not fit the slot.
	ErrTooLarge = errors.New("slot: image does not fit the slot")
	// ErrReadBackMismatch: what is on the device is not what was written.
	ErrReadBackMismatch = errors.New("slot: read-back mismatch")
	// ErrAlign: a resume offset that is not a multiple of WriteAlign.
	ErrAlign = errors.New("slot: offset not a multiple of the write alignment")
	// ErrVolumeCorrupted: a UBI volume whose update was interrupted.
	ErrVolumeCorrupted = errors.New("slot: UBI volume marked corrupted (interrupted update)")
	// ErrNeedSize: the target needs the image size up front; use OpenWriter.
	ErrNeedSize = errors.New("slot: target needs the image size before writing")
	// ErrClosed: use of a closed writer.
	ErrClosed = errors.New("slot: writer closed")
)

// Options tune writers. The zero value is the production default.
type Options struct {
	// ChunkSize is the write unit for block devices and files (default 4 MiB).
	ChunkSize int64
	// SyncEvery (buffered writers) forces a full sync, with device cache
	// flush, after this many bytes. Default off (0 or negative): buffered
	// writers pace writeback instead, at most two chunks waiting to reach the
	// device, and the direct writer has nothing in the page cache at all, so
	// progress is honest without cache flushes; durability comes from the
	// caller's Sync at its resume points.
	SyncEvery int64
	// SkipUnchanged reads each chunk first and writes only if it differs:
	// SD cards and flash read faster than they write, and erase cycles are
	// saved when reinstalling a similar image.
	SkipUnchanged bool
	// Buffered writes block devices through the page cache, with writeback
	// pacing, instead of with O_DIRECT from aligned buffers (the default,
	// which leaves the CPU to the read-back hash). Files are always buffered.
	Buffered bool
	// FullReadBack makes VerifyReadBack always read the whole image back
	// and hash it, even after OpenVerifiedWriter (which then does not
	// compare chunks while writing): an independent check of the medium
	// after the final sync, at the cost of a second SHA-256 pass.
	FullReadBack bool
	// Sysfs is the sysfs root, "/sys" unless a test fakes it.
	Sysfs string
}

const defaultChunk = 4 << 20

func (o Options) withDefaults() Options {
	if o.ChunkSize <= 0 {
		o.ChunkSize = defaultChunk
	}
	if o.Sysfs == "" {
		o.Sysfs = "/sys"
	}
	return o
}

// Open opens s for writing, refusing the active slot. This is the one place
// that check lives.
func Open(s, active Slot) (Target, error) { return OpenWith(s, active, Options{}) }

// OpenWith is Open with writer options.
func OpenWith(s, active Slot, o Options) (Target, error) {
	o = o.withDefaults()
	if err := checkNotActive(o.Sysfs, s, active); err != nil {
		return nil, err
	}
	return open(s, o, true)
}

// OpenReadOnly opens s for reading (delta sources, read-back). It does not
// care whether s is active.
func OpenReadOnly(s Slot) (Target, error) { return open(s, Options{}.withDefaults(), false) }

func open(s Slot, o Options, rw bool) (Target, error) {
	switch s.Type {
	case TypeBlock, "":
		return openBlock(s.Device, o, rw)
	case TypeFile:
		return openFile(s.Device, o, rw)
	case TypeMTD:
		return openMTD(s.Device, o, rw)
	case TypeUBIVol:
		return openUBIVol(s.Device, o, rw)
	}
	return nil, fmt.Errorf("slot %s: unknown type %q (want block, mtd, ubivol or file)", s.Name, s.Type)
}

// OpenWriter opens a writer for an image of size bytes, resuming at off. It
// checks the image fits before anything is written and passes the size to
// targets that need it. The engine should use this rather than
// Target.OpenWriter.
func OpenWriter(ctx context.Context, t Target, off, size int64) (Writer, error) {
	if err := CheckFit(t, size); err != nil {
		return nil, err
	}
	if st, ok := t.(SizedTarget); ok {
		return st.OpenSizedWriter(ctx, off, size)
	}
	return t.OpenWriter(ctx, off)
}

// OpenVerifiedWriter is OpenWriter for a stream the caller checks, on its
// way in, to hash to sha256sum: it promises that if all size bytes are
// written and the writer is closed without error, those bytes hash to
// sha256sum (a checker that fails must fail before handing over the last
// bytes). On a block device written from offset 0 with the O_DIRECT writer,
// each chunk is then compared with the medium right after its write, and
// VerifyReadBack with the same size and sha256sum settles from that
// comparison instead of hashing the device again (see the package
// invariants). Anywhere else it is OpenWriter.
func OpenVerifiedWriter(ctx context.Context, t Target, off, size int64, sha256sum []byte) (Writer, error) {
	if len(sha256sum) != sha256.Size {
		return nil, fmt.Errorf("slot: verified writer needs a %d-byte SHA-256, got %d bytes", sha256.Size, len(sha256sum))
	}
	if ft, ok := t.(*fdTarget); ok {
		if err := CheckFit(t, size); err != nil {
			return nil, err
		}
		return ft.openWriter(ctx, off, sha256sum)
	}
	return OpenWriter(ctx, t, off, size)
}

// CheckFit returns ErrTooLarge if an image of size bytes cannot fit t.
func CheckFit(t Target, size int64) error {
	if u, ok := t.(interface{ usable() error }); ok {
		if err := u.usable(); err != nil {
			return err
		}
	}
	if size < 0 || size > t.Size() {
		return fmt.Errorf("%w: image %d bytes, slot %d bytes", ErrTooLarge, size, t.Size())
	}
	return nil
}

func checkResume(t Target, off int64) error {
	if off < 0 || off > t.Size() || off%t.WriteAlign() != 0 {
		return fmt.Errorf("%w: offset %d, alignment %d, size %d", ErrAlign, off, t.WriteAlign(), t.Size())
	}
	return nil
}
