package slot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/otadev/otad/internal/mtd"
	"golang.org/x/sys/unix"
)

// ubiTarget is a UBI volume character device (/dev/ubiX_Y). Writing is a
// volume update: UBI_IOCVOLUP announces the exact size, then the data is
// streamed. The kernel keeps the volume's update marker ("upd_marker" in
// sysfs) set until the last byte arrives and flags a volume whose data
// fails its checks as "corrupted", so an interrupted update can never be
// mistaken for a good one, and it cannot be continued either: a resume
// starts over at 0.
type ubiTarget struct {
	f      *os.File
	size   int64
	sysdir string // /sys/class/ubi/ubiX_Y
	rw     bool
	o      Options
}

func openUBIVol(path string, o Options, rw bool) (Target, error) {
	f, err := openRW(path, rw)
	if err != nil {
		return nil, err
	}
	t, err := newUBITarget(f, o, rw)
	if err != nil {
		f.Close()
		return nil, err
	}
	return t, nil
}

func newUBITarget(f *os.File, o Options, rw bool) (*ubiTarget, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("slot: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return nil, fmt.Errorf("slot: %s is not a UBI volume device (type ubivol)", f.Name())
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(o.Sysfs, "dev", "char",
		fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))))
	if err != nil {
		return nil, fmt.Errorf("slot: %s: no sysfs entry: %w", f.Name(), err)
	}
	ebs, err1 := mtd.SysfsInt(filepath.Join(dir, "reserved_ebs"))
	lebSize, err2 := mtd.SysfsInt(filepath.Join(dir, "usable_eb_size"))
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("slot: %s is not a UBI volume: %w", f.Name(), err)
	}
	if ebs <= 0 || lebSize <= 0 {
		return nil, fmt.Errorf("slot: %s: UBI volume of %d x %d bytes", f.Name(), ebs, lebSize)
	}
	return &ubiTarget{f: f, size: ebs * lebSize, sysdir: dir, rw: rw, o: o}, nil
}

func (t *ubiTarget) Size() int64 { return t.size }

// WriteAlign is the whole volume: the only resume point is the start.
func (t *ubiTarget) WriteAlign() int64 { return t.size }
func (t *ubiTarget) Close() error      { return t.f.Close() }

func (t *ubiTarget) ReadAt(p []byte, off int64) (int, error) {
	if off >= t.size {
		return 0, io.EOF
	}
	return t.f.ReadAt(p[:min(int64(len(p)), t.size-off)], off)
}

// Corrupted reports the kernel's verdict on the last update: the update
// marker still set (the update never finished; seen on a real kernel after
// an interrupted UBI_IOCVOLUP) or the corrupted flag.
func (t *ubiTarget) Corrupted() (bool, error) {
	for _, attr := range []string{"upd_marker", "corrupted"} {
		n, err := mtd.SysfsInt(filepath.Join(t.sysdir, attr))
		if errors.Is(err, fs.ErrNotExist) && attr == "upd_marker" {
			continue // kernels before 2.6.x lack it; corrupted still counts
		}
		if err != nil {
			return false, fmt.Errorf("slot: reading UBI %s flag: %w", attr, err)
		}
		if n != 0 {
			return true, nil
		}
	}
	return false, nil
}

// VolumeCorrupted reports whether t is a UBI volume whose last update was
// interrupted (the kernel's "corrupted" flag). Other targets report false.
func VolumeCorrupted(t Target) (bool, error) {
	if u, ok := t.(*ubiTarget); ok {
		return u.Corrupted()
	}
	return false, nil
}

// health fails when an update was interrupted.
func (t *ubiTarget) health() error {
	bad, err := t.Corrupted()
	if err != nil {
		return err
	}
	if bad {
		return fmt.Errorf("%w: %s", ErrVolumeCorrupted, t.f.Name())
	}
	return nil
}

func (t *ubiTarget) OpenWriter(ctx context.Context, off int64) (Writer, error) {
	return nil, fmt.Errorf("%w: %s is a UBI volume", ErrNeedSize, t.f.Name())
}

// OpenSizedWriter starts a volume update of exactly size bytes.
func (t *ubiTarget) OpenSizedWriter(ctx context.Context, off, size int64) (Writer, error) {
	if !t.rw {
		return nil, fmt.Errorf("slot: target opened read-only")
	}
	if off != 0 {
		return nil, fmt.Errorf("%w: a UBI volume update restarts at 0, not %d", ErrAlign, off)
	}
	if size < 0 || size > t.size {
		return nil, fmt.Errorf("%w: image %d bytes, volume %d bytes", ErrTooLarge, size, t.size)
	}
	bytes := size
	if err := ioctl(t.f, unix.UBI_IOCVOLUP, unsafe.Pointer(&bytes)); err != nil {
		return nil, fmt.Errorf("slot: UBI_IOCVOLUP %s: %w", t.f.Name(), err)
	}
	return &ubiWriter{ctx: ctx, t: t, size: size}, nil
}

type ubiWriter struct {
	ctx     context.Context
	t       *ubiTarget
	size    int64
	written int64
	err     error
	closed  bool
}

func (w *ubiWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	if w.written+int64(len(p)) > w.size {
		return 0, fmt.Errorf("%w: more than the announced %d bytes", ErrTooLarge, w.size)
	}
	n, err := w.t.f.Write(p)
	w.written += int64(n)
	if err != nil {
		w.err = fmt.Errorf("slot: UBI volume update: %w", err)
		return n, w.err
	}
	return n, nil
}

func (w *ubiWriter) Sync() error {
	if w.closed {
		return ErrClosed
	}
	if w.err != nil {
		return w.err
	}
	// EINVAL means the file has nothing to synchronise: writes reached the
	// flash when write returned.
	if err := w.t.f.Sync(); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("slot: UBI sync: %w", err)
	}
	return nil
}

// Close fails if fewer bytes than announced were written: the kernel leaves
// such a volume marked corrupted.
func (w *ubiWriter) Close() error {
	if w.closed {
		return ErrClosed
	}
	if w.written != w.size {
		w.closed = true
		return fmt.Errorf("%w: update stopped after %d of %d bytes", ErrVolumeCorrupted, w.written, w.size)
	}
	err := w.Sync()
	w.closed = true
	return err
}
