package slot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
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
	trail *trail        // read-back following the last writer, if enabled
	live  *directWriter // last direct writer, to end it if abandoned
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

// openFile opens an existing slot file; its current size is the capacity.
func openFile(path string, o Options, rw bool) (Target, error) {
	flag := os.O_RDONLY
	if rw {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("slot: %w", err)
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

// Close stops a read-back still following a writer before closing the file
// it reads.
func (t *fdTarget) Close() error {
	t.stopWriter()
	t.stopTrail()
	return t.f.Close()
}

func (t *fdTarget) stopTrail() {
	t.mu.Lock()
	tr := t.trail
	t.trail = nil
	t.mu.Unlock()
	if tr != nil {
		tr.abort(ErrClosed)
		<-tr.done
	}
}

// hashMedium hashes [0, size) as stored on the medium: from the read-back
// that followed the last writer if it covered exactly that (once), else with
// O_DIRECT reads, else through a dropped page cache.
func (t *fdTarget) hashMedium(ctx context.Context, size int64) ([]byte, error) {
	t.mu.Lock()
	tr := t.trail
	t.trail = nil
	t.mu.Unlock()
	if tr != nil {
		tr.mu.Lock()
		final := tr.final
		tr.mu.Unlock()
		if final {
			if sum, ok := tr.result(ctx, size); ok {
				return sum, nil
			}
		} else {
			tr.abort(errors.New("read-back requested before the writer closed"))
			<-tr.done
		}
	}
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
	if !t.rw {
		return nil, fmt.Errorf("slot: target opened read-only")
	}
	if err := checkResume(t, off); err != nil {
		return nil, err
	}
	t.stopTrail()
	t.stopWriter()
	var tr *trail
	if t.o.ReadBackWhileWriting {
		// Without O_DIRECT there is no cheap way to read behind the
		// writer from the medium; VerifyReadBack then reads it all.
		if d, err := openDirect(t.f); err == nil {
			tr = startTrail(ctx, d, off)
			t.mu.Lock()
			t.trail = tr
			t.mu.Unlock()
		}
	}
	if t.block && !t.o.Buffered {
		if dw, err := newDirectWriter(ctx, t, off); err == nil {
			dw.tr = tr
			t.mu.Lock()
			t.live = dw
			t.mu.Unlock()
			return dw, nil
		}
	}
	return &fdWriter{ctx: ctx, t: t, off: off, buf: make([]byte, 0, t.o.ChunkSize), started: off, waited: off, tr: tr}, nil
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

// fdWriter buffers into ChunkSize pieces and writes each with one pwrite.
type fdWriter struct {
	ctx       context.Context
	t         *fdTarget
	off       int64 // device offset of buf[0]
	buf       []byte
	cmp       []byte // SkipUnchanged scratch
	sinceSync int64
	err       error // sticky: after a failed write the device state is unknown
	closed    bool
	tr        *trail
	// Writeback pacing: [waited, started) is being written back.
	started, waited int64
	noPacing        bool
}

// pace starts writeback of what was just written and waits for writeback
// older than two chunks. The device works while the next chunk is filled,
// dirty data never piles up (so progress is honest and the final fsync is
// short), and no cache flush is forced: durability is Sync's job.
func (w *fdWriter) pace() error {
	if w.noPacing {
		return nil
	}
	fd := int(w.t.f.Fd())
	if err := unix.SyncFileRange(fd, w.started, w.off-w.started, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ESPIPE) || errors.Is(err, unix.ENOSYS) {
			w.noPacing = true // not supported here; Sync still makes data durable
			return nil
		}
		return fmt.Errorf("slot: start writeback: %w", err)
	}
	w.started = w.off
	if lim := w.started - 2*w.t.o.ChunkSize; lim > w.waited {
		if err := unix.SyncFileRange(fd, w.waited, lim-w.waited, unix.SYNC_FILE_RANGE_WRITE_AND_WAIT); err != nil {
			return fmt.Errorf("slot: writeback: %w", err)
		}
		w.waited = lim
	}
	return nil
}

func (w *fdWriter) fail(err error) error {
	w.err = err
	if w.tr != nil {
		w.tr.abort(err)
	}
	return err
}

func (w *fdWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	if end := w.off + int64(len(w.buf)) + int64(len(p)); end > w.t.size {
		return 0, fmt.Errorf("%w: write would end at %d, slot has %d bytes", ErrTooLarge, end, w.t.size)
	}
	done := 0
	chunk := cap(w.buf)
	for done < len(p) {
		if len(w.buf) == 0 && len(p)-done >= chunk {
			// Whole chunks straight from the caller's buffer, no copy.
			if err := w.writeChunk(p[done : done+chunk]); err != nil {
				return done, err
			}
			done += chunk
			continue
		}
		n := copy(w.buf[len(w.buf):chunk], p[done:])
		w.buf = w.buf[:len(w.buf)+n]
		done += n
		if len(w.buf) == chunk {
			if err := w.writeChunk(w.buf); err != nil {
				return done, err
			}
			w.buf = w.buf[:0]
		}
	}
	return done, nil
}

func (w *fdWriter) writeChunk(b []byte) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if err := w.pwrite(b); err != nil {
		return w.fail(err)
	}
	w.off += int64(len(b))
	w.sinceSync += int64(len(b))
	if w.tr != nil {
		w.tr.publish(w.off)
	}
	if w.t.o.SyncEvery > 0 && w.sinceSync >= w.t.o.SyncEvery {
		return w.sync()
	}
	if err := w.pace(); err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *fdWriter) pwrite(b []byte) error {
	if w.t.o.SkipUnchanged {
		if cap(w.cmp) < len(b) {
			w.cmp = make([]byte, len(b))
		}
		c := w.cmp[:len(b)]
		if n, _ := w.t.f.ReadAt(c, w.off); n == len(b) && bytes.Equal(c, b) {
			return nil
		}
	}
	for done := 0; done < len(b); {
		n, err := w.t.f.WriteAt(b[done:], w.off+int64(done))
		if err != nil {
			return fmt.Errorf("slot: write at %d: %w", w.off+int64(done), err)
		}
		done += n
	}
	return nil
}

func (w *fdWriter) flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.pwrite(w.buf); err != nil {
		return w.fail(err)
	}
	w.off += int64(len(w.buf))
	w.sinceSync += int64(len(w.buf))
	w.buf = w.buf[:0]
	if w.tr != nil {
		w.tr.publish(w.off)
	}
	return nil
}

func (w *fdWriter) sync() error {
	if err := unix.Fdatasync(int(w.t.f.Fd())); err != nil {
		return w.fail(fmt.Errorf("slot: sync: %w", err))
	}
	w.sinceSync = 0
	w.started, w.waited = w.off, w.off
	return nil
}

// Sync writes what is buffered and waits until the device has it.
func (w *fdWriter) Sync() error {
	if w.closed {
		return ErrClosed
	}
	if err := w.flush(); err != nil {
		return err
	}
	return w.sync()
}

// Close is Sync; the target stays open for read-back.
func (w *fdWriter) Close() error {
	if w.closed {
		return ErrClosed
	}
	err := w.Sync()
	w.closed = true
	if w.tr != nil {
		if err != nil {
			w.tr.abort(err)
		} else {
			w.tr.finish(w.off)
		}
	}
	return err
}

func ioctl(f *os.File, req uint, arg unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if cerr := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(arg))
	}); cerr != nil {
		return cerr
	}
	if errno != 0 {
		return errno
	}
	return nil
}
