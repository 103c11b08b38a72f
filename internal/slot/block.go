package slot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/otadev/otad/internal/mtd"
)

// fdTarget is a block device or a regular file: written through the page
// cache in large chunks, made durable with fdatasync.
type fdTarget struct {
	f     *os.File
	size  int64
	block bool
	rw    bool
	o     Options

	mu    sync.Mutex
	proof *proof        // per-chunk read-back of the last writer, if any
	live  *directWriter // last direct writer, to end it if abandoned

	// afterWrite, if set (tests), runs on the direct writer's I/O goroutine
	// after each chunk reached the device and before it is compared.
	afterWrite func(off int64, n int)
}

const fdAlign = 4096

func openBlock(path string, o Options, rw bool) (Target, error) {
	flag := os.O_RDONLY
	if rw {
		// O_EXCL on a block device fails with EBUSY while it is mounted or
		// otherwise claimed: a second guard against writing a live filesystem.
		flag = os.O_RDWR | os.O_EXCL
	}
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("slot: %s is in use (mounted?): %w", path, err)
		}
		return nil, fmt.Errorf("slot: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("slot: %w", err)
	}
	if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		f.Close()
		return nil, fmt.Errorf("slot: %s is not a block device (type block)", path)
	}
	var size uint64
	if err := ioctl(f, unix.BLKGETSIZE64, unsafe.Pointer(&size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("slot: %s: BLKGETSIZE64: %w", path, err)
	}
	return &fdTarget{f: f, size: int64(size), block: true, rw: rw, o: o}, nil
}

// openRW opens path read-only, or read-write when rw (files, UBI volumes).
func openRW(path string, rw bool) (*os.File, error) {
	flag := os.O_RDONLY
	if rw {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("slot: %w", err)
	}
	return f, nil
}

// openFile opens an existing slot file; its current size is the capacity.
func openFile(path string, o Options, rw bool) (Target, error) {
	f, err := openRW(path, rw)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("slot: %s is not a regular file (type file)", path)
	}
	if st.Size() == 0 {
		f.Close()
		return nil, fmt.Errorf("slot: %s is empty; a file slot has a fixed size (create it with NewFileTarget)", path)
	}
	return &fdTarget{f: f, size: st.Size(), rw: rw, o: o}, nil
}

// NewFileTarget opens path as a slot of exactly size bytes, creating it or
// extending it as needed. It does not check against the active slot: it is
// for the demo and tests; configured slots go through Open.
func NewFileTarget(path string, size int64) (Target, error) {
	if size <= 0 {
		return nil, fmt.Errorf("slot: file slot size %d", size)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("slot: %w", err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", path)
	}
	if err == nil && st.Size() < size {
		err = f.Truncate(size)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("slot: %w", err)
	}
	return &fdTarget{f: f, size: size, rw: true, o: Options{}.withDefaults()}, nil
}

func (t *fdTarget) Size() int64       { return t.size }
func (t *fdTarget) WriteAlign() int64 { return fdAlign }

// Close ends a writer nobody closed and waits for a comparison still
// running before closing the file.
func (t *fdTarget) Close() error {
	t.stopWriter()
	t.dropProof()
	return t.f.Close()
}

// takeProof hands out the last writer's proof, once.
func (t *fdTarget) takeProof() *proof {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.proof
	t.proof = nil
	return p
}

func (t *fdTarget) dropProof() {
	if p := t.takeProof(); p != nil {
		p.abort()
		<-p.done // the writer that feeds it has ended (stopWriter)
	}
}

// proved settles VerifyReadBack from the last writer's per-chunk
// comparison when that covered exactly [0, size) of a stream vouched to
// hash to sum; ok false means the medium must be hashed.
func (t *fdTarget) proved(ctx context.Context, size int64, sum []byte) (bool, error) {
	p := t.takeProof()
	if p == nil {
		return false, nil
	}
	return p.verdict(ctx, size, sum)
}

// hashMedium hashes [0, size) as stored on the medium, with O_DIRECT reads,
// else through a dropped page cache.
func (t *fdTarget) hashMedium(ctx context.Context, size int64) ([]byte, error) {
	if t.rw {
		if err := unix.Fdatasync(int(t.f.Fd())); err != nil {
			return nil, fmt.Errorf("slot: sync before read-back: %w", err)
		}
	}
	if d, err := openDirect(t.f); err == nil {
		defer d.Close()
		return hashDirect(ctx, d, size)
	}
	if err := t.dropCache(); err != nil {
		return nil, err
	}
	return Hash(ctx, t, size)
}

// Fd lets a reader map the slot read-only (delta's LZ dictionaries).
func (t *fdTarget) Fd() uintptr { return t.f.Fd() }

// ReadAt reads within the slot; the slot ends at Size even if the file is
// longer.
func (t *fdTarget) ReadAt(p []byte, off int64) (int, error) {
	if off >= t.size {
		return 0, io.EOF
	}
	short := false
	if rem := t.size - off; int64(len(p)) > rem {
		p, short = p[:rem], true
	}
	n, err := t.f.ReadAt(p, off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

// dropCache makes the next reads come from the medium: BLKFLSBUF writes back
// and invalidates a block device's buffers; for files, and where BLKFLSBUF
// is not permitted, clean pages are dropped with fadvise after a sync.
func (t *fdTarget) dropCache() error {
	if err := unix.Fdatasync(int(t.f.Fd())); err != nil && t.rw {
		return fmt.Errorf("slot: sync before read-back: %w", err)
	}
	if t.block {
		if err := ioctl(t.f, unix.BLKFLSBUF, nil); err == nil {
			return nil
		}
	}
	if err := unix.Fadvise(int(t.f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("slot: drop page cache: %w", err)
	}
	return nil
}

func (t *fdTarget) OpenWriter(ctx context.Context, off int64) (Writer, error) {
	return t.openWriter(ctx, off, nil)
}

// openWriter starts a writer at off; sum non-nil: the caller vouches for
// the stream (OpenVerifiedWriter) and the direct writer proves each chunk.
// Buffered writers and files never prove: VerifyReadBack hashes them.
func (t *fdTarget) openWriter(ctx context.Context, off int64, sum []byte) (Writer, error) {
	if !t.rw {
		return nil, fmt.Errorf("slot: target opened read-only")
	}
	if err := checkResume(t, off); err != nil {
		return nil, err
	}
	t.stopWriter()
	t.dropProof()
	if t.block && !t.o.Buffered {
		if dw, err := newDirectWriter(ctx, t, off, sum); err == nil {
			t.mu.Lock()
			t.live, t.proof = dw, dw.pf
			t.mu.Unlock()
			return dw, nil
		}
	}
	return &fdWriter{ctx: ctx, t: t, off: off, buf: make([]byte, 0, t.o.ChunkSize), started: off, waited: off}, nil
}

// stopWriter ends a direct writer that was never closed (its caller gave
// up), so its goroutine and descriptor do not outlive it.
func (t *fdTarget) stopWriter() {
	t.mu.Lock()
	dw := t.live
	t.live = nil
	t.mu.Unlock()
	if dw != nil {
		dw.abandon()
	}
}

func ioctl(f *os.File, req uint, arg unsafe.Pointer) error {
	_, err := mtd.Ioctl(f, req, arg)
	return err
}
