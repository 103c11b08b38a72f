package bootenv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/otadev/otad/internal/mtd"
)

// lockWait bounds how long a DeviceStore waits for fw_setenv to let go.
const lockWait = 10 * time.Second

// DeviceStore is the environment on the devices of an fw_env.config:
// regular files, block devices (eMMC partitions, boot partitions) and MTD
// character devices.
type DeviceStore struct {
	mu       sync.Mutex
	cfg      Config
	c        copies
	closers  []io.Closer
	roErr    error // why Save is impossible, if it is
	lockPath string
}

// OpenStore opens the devices of cfg. The flag scheme follows the medium,
// as libubootenv decides it: NOR flash uses the boolean scheme, everything
// else the incrementing counter.
func OpenStore(cfg *Config) (*DeviceStore, error) {
	if cfg == nil || len(cfg.Devices) == 0 || len(cfg.Devices) > 2 {
		return nil, fmt.Errorf("%w: need one or two devices", ErrConfig)
	}
	s := &DeviceStore{cfg: *cfg, lockPath: cfg.LockPath}
	if s.lockPath == "" {
		s.lockPath = DefaultLockPath
	}
	if s.cfg.SysfsRoot == "" {
		s.cfg.SysfsRoot = "/sys"
	}
	size := cfg.Devices[0].EnvSize
	s.c.size = int(size)
	schemes := map[FlagScheme]bool{}
	var ids []string
	for _, d := range cfg.Devices {
		a, scheme, err := s.openArea(d)
		if err != nil {
			s.Close()
			return nil, err
		}
		schemes[scheme] = true
		s.c.scheme = scheme
		s.c.areas = append(s.c.areas, a)
		ids = append(ids, storageID(d.Path))
	}
	if len(schemes) > 1 {
		s.Close()
		return nil, fmt.Errorf("%w: the two copies are on media with different flag schemes", ErrConfig)
	}
	if len(ids) == 2 && ids[0] != "" && ids[0] == ids[1] {
		if err := disjoint(s.c.areas[0], s.c.areas[1]); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// storageID names the storage behind path: the device number of a device
// node, the inode of a regular file; "" if unknown.
func storageID(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ""
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		return fmt.Sprintf("file %d:%d", st.Dev, st.Ino)
	}
	return fmt.Sprintf("dev %#o %d", st.Mode&unix.S_IFMT, st.Rdev)
}

// disjoint refuses two copies on the same storage whose write units
// overlap: writing one would tear the other (on flash, the erase wipes
// both), so a power cut could leave no valid copy at all.
func disjoint(a, b area) error {
	alo, ahi := a.span()
	blo, bhi := b.span()
	if alo < bhi && blo < ahi {
		return fmt.Errorf("%w: the two copies share storage (%s %#x-%#x and %s %#x-%#x, erase sectors included): a power cut during a save could destroy both",
			ErrConfig, a.name(), alo, ahi, b.name(), blo, bhi)
	}
	return nil
}

func (s *DeviceStore) openArea(d Device) (area, FlagScheme, error) {
	st, err := os.Stat(d.Path)
	if err != nil {
		return nil, 0, fmt.Errorf("bootenv: environment device: %w", err)
	}
	mode := st.Mode()
	if mode&os.ModeCharDevice != 0 && strings.HasPrefix(d.Path, "/dev/mtd") {
		return s.openMTD(d)
	}
	if !mode.IsRegular() && mode&os.ModeDevice == 0 {
		return nil, 0, fmt.Errorf("bootenv: %s: not a file, block device or /dev/mtd character device", d.Path)
	}
	f, err := os.OpenFile(d.Path, os.O_RDWR, 0)
	if err != nil {
		var rerr error
		if f, rerr = os.Open(d.Path); rerr != nil {
			return nil, 0, fmt.Errorf("bootenv: open %s: %w", d.Path, rerr)
		}
		s.roErr = fmt.Errorf("%w: %s: %v", ErrReadOnly, d.Path, err)
	}
	s.closers = append(s.closers, f)
	block := mode&os.ModeDevice != 0
	devSize := st.Size()
	if block {
		sz, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
		if err != nil {
			return nil, 0, fmt.Errorf("bootenv: %s: size: %w", d.Path, err)
		}
		devSize = int64(sz)
	}
	off := d.Offset
	if off < 0 {
		off += devSize
	}
	if off < 0 || off+d.EnvSize > devSize {
		return nil, 0, fmt.Errorf("%w: %s: environment %#x+%#x, device has %d bytes", ErrShortRead, d.Path, off, d.EnvSize, devSize)
	}
	a := &fileArea{f: f, off: off, size: d.EnvSize, label: d.Path}
	if !block {
		if a.fat, err = onFAT(f); err != nil {
			return nil, 0, err
		}
	}
	if block {
		a.guard = s.blockGuard(f, d.Path)
	}
	return a, FlagsIncrement, nil
}

// openMTD opens raw flash through package mtd. The scheme follows the
// chip, as in libubootenv: NOR boolean, NAND counter.
func (s *DeviceStore) openMTD(d Device) (area, FlagScheme, error) {
	c, err := mtd.Open(d.Path)
	if err != nil {
		// A read-only MTD partition refuses O_RDWR: still readable.
		var rerr error
		if c, rerr = mtd.OpenReadOnly(d.Path); rerr != nil {
			return nil, 0, fmt.Errorf("bootenv: %w", rerr)
		}
		s.roErr = fmt.Errorf("%w: %s: %v", ErrReadOnly, d.Path, err)
	}
	s.closers = append(s.closers, c)
	info := c.Info()
	sector := d.SectorSize
	if sector == 0 {
		sector = info.EraseSize
	}
	if sector%info.EraseSize != 0 {
		return nil, 0, fmt.Errorf("%w: %s: sector size %#x is not a multiple of the erase size %#x", ErrConfig, d.Path, sector, info.EraseSize)
	}
	off := d.Offset
	if off < 0 {
		off += info.Size
	}
	if off < 0 || off+d.EnvSize > info.Size {
		return nil, 0, fmt.Errorf("%w: %s: environment %#x+%#x outside the device (%#x)", ErrShortRead, d.Path, off, d.EnvSize, info.Size)
	}
	scheme := FlagsIncrement
	if info.Kind == mtd.NOR {
		scheme = FlagsBoolean
	}
	return &mediumArea{m: c, off: off, size: d.EnvSize, sector: sector, unit: info.ProgramUnit(), label: d.Path}, scheme, nil
}

// Redundant reports whether the environment has two copies; a single copy
// is not power-fail safe.
func (s *DeviceStore) Redundant() bool { return s.c.redundant() }

// Size is the size of one copy.
func (s *DeviceStore) Size() int { return s.c.size }

// Load returns the current environment (ErrNoValidCopy if none).
func (s *DeviceStore) Load() (*Env, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.c.load()
}

// Save writes e to the out-of-date copy (one write).
func (s *DeviceStore) Save(e *Env) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return s.save(e)
}

// Init writes e to every copy, whatever they hold now: the factory step
// behind "otad env init". Afterwards both copies of a redundant environment
// are valid and the second is current.
func (s *DeviceStore) Init(e *Env) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	for range s.c.areas {
		if err := s.save(e); err != nil {
			return err
		}
	}
	return nil
}

func (s *DeviceStore) save(e *Env) error {
	if s.roErr != nil {
		return s.roErr
	}
	return s.c.save(e)
}

func (s *DeviceStore) update(fn func(*Env) error) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return updateWith(s.c.load, s.save, fn)
}

// Close releases the devices.
func (s *DeviceStore) Close() error {
	var first error
	for _, c := range s.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	s.closers = nil
	return first
}

// lock takes the in-process mutex and libubootenv's flock.
func (s *DeviceStore) lock() (func(), error) {
	s.mu.Lock()
	if s.lockPath == "-" {
		return s.mu.Unlock, nil
	}
	f, err := os.OpenFile(s.lockPath, os.O_WRONLY|os.O_CREATE, 0o666)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.EROFS) {
		// No /var/lock or a read-only /var: nobody can take the lock, so
		// fw_setenv runs unlocked too (libubootenv ignores this failure).
		return s.mu.Unlock, nil
	}
	if err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("bootenv: lock file: %w", err)
	}
	deadline := time.Now().Add(lockWait)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) || time.Now().After(deadline) {
			f.Close()
			s.mu.Unlock()
			return nil, fmt.Errorf("bootenv: lock %s (held by fw_setenv/fw_printenv?): %w", s.lockPath, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
		s.mu.Unlock()
	}, nil
}

// fileArea is a copy in a regular file or block device.
//
// Every write is in place: the file is opened without O_TRUNC, written with
// pwrite inside its existing size and never renamed, so on FAT (the
// Raspberry Pi's uboot.env) the file keeps its directory entry, size and
// cluster chain and a write changes only the data clusters of this copy
// (and the entry's mtime). FAT has no atomic rename and no journal: a
// temp-file-and-rename would rewrite directory and FAT sectors that the
// other copy's file shares, and a truncate would free its clusters, so a
// power cut in either could take both copies.
type fileArea struct {
	f     *os.File
	off   int64
	size  int64
	label string
	guard func(write func() error) error // block devices: force_ro / BLKROGET
	fat   bool                           // a file on a FAT file system
}

func (a *fileArea) name() string { return a.label }

func (a *fileArea) span() (lo, hi int64) { return a.off, a.off + a.size }

func (a *fileArea) read(p []byte, fresh bool) error {
	if fresh {
		// After fdatasync the pages are clean: dropping them makes the
		// read-back come from the device, not from our own write.
		_ = unix.Fadvise(int(a.f.Fd()), a.off, int64(len(p)), unix.FADV_DONTNEED)
	}
	n, err := a.f.ReadAt(p, a.off)
	if n == len(p) {
		return nil
	}
	return fmt.Errorf("%w: %d of %d bytes at %#x: %v", ErrShortRead, n, len(p), a.off, err)
}

func (a *fileArea) write(p []byte) error {
	return a.guarded(func() error {
		if _, err := a.f.WriteAt(p, a.off); err != nil {
			return err
		}
		return a.sync()
	})
}

// sync makes the write durable before Save returns. On FAT it is a full
// fsync: the write dirtied the directory entry (mtime), and writing that
// now keeps every write of a Save inside the Save, instead of at a
// writeback moment later on which a power cut could tear the directory
// sector both env files share. Elsewhere fdatasync is enough.
func (a *fileArea) sync() error {
	if a.fat {
		return a.f.Sync()
	}
	return unix.Fdatasync(int(a.f.Fd()))
}

func (a *fileArea) writeFlag(b byte) error {
	return a.guarded(func() error {
		if _, err := a.f.WriteAt([]byte{b}, a.off+4); err != nil {
			return err
		}
		return a.sync()
	})
}

func (a *fileArea) guarded(write func() error) error {
	if a.guard == nil {
		return write()
	}
	return a.guard(write)
}

// blockGuard honours the read-only switch of a block device. eMMC boot
// partitions carry /sys/dev/block/M:m/force_ro (default 1): like
// libubootenv, clear it for the write and set it back afterwards. Any other
// read-only block device is an error, never a silent no-op.
func (s *DeviceStore) blockGuard(f *os.File, path string) func(func() error) error {
	return func(write func() error) error {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return err
		}
		ro := filepath.Join(s.cfg.SysfsRoot, "dev", "block",
			fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))), "force_ro")
		old, err := os.ReadFile(ro)
		if err == nil && strings.TrimSpace(string(old)) == "1" {
			if err := os.WriteFile(ro, []byte("0"), 0); err != nil {
				return fmt.Errorf("%w: %s: cannot clear %s: %v", ErrReadOnly, path, ro, err)
			}
			defer os.WriteFile(ro, []byte("1"), 0)
			return write()
		}
		if v, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKROGET); err == nil && v != 0 {
			return fmt.Errorf("%w: %s (BLKROGET)", ErrReadOnly, path)
		}
		err = write()
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EROFS) {
			return fmt.Errorf("%w: %s: %v", ErrReadOnly, path, err)
		}
		return err
	}
}
