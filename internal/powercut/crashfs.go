package powercut

import (
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"sort"
	"sync"

	"github.com/otadev/otad/internal/journal"
)

// CrashFS is an in-memory journal.FS that forgets what a real file system
// may forget at a power cut. File data written and not fsynced, and
// creations, renames and removals not followed by SyncDir, are volatile:
// at PowerOn un-synced data survives per sector (TearRandom), not at all
// (LoseUnsynced) or entirely (KeepUnsynced), and un-synced directory
// operations survive as an ordered prefix, as a journaling file system
// replays its log. Counted operations: every write, Sync, Rename, Remove,
// SyncDir, MkdirAll and every open that creates or truncates.
// Directories created by MkdirAll are durable at once.
type CrashFS struct {
	mu    sync.Mutex
	dom   *Domain
	rng   *rand.Rand
	dirs  map[string]bool
	dur   map[string]*inode // names after a cut
	vol   map[string]*inode // names as processes see them
	log   []dirOp           // un-synced name operations, in order
	nodes []*inode
}

type inode struct {
	dur, vol []byte
	dirty    bool
}

type dirOp struct {
	kind     byte // 'c'reate (or replace), 'r'ename, 'd'elete
	from, to string
	ino      *inode
}

var _ journal.FS = (*CrashFS)(nil)

// NewCrashFS returns an empty file system powered by d, with "/".
func NewCrashFS(d *Domain) *CrashFS {
	c := &CrashFS{dom: d, rng: d.newRand(), dirs: map[string]bool{"/": true},
		dur: map[string]*inode{}, vol: map[string]*inode{}}
	d.add(c)
	return c
}

func clean(name string) string { return path.Clean("/" + name) }

func pathErr(op, name string, err error) error { return &fs.PathError{Op: op, Path: name, Err: err} }

// OpenFile opens name. Creating or truncating is one operation.
func (c *CrashFS) OpenFile(name string, flag int, perm fs.FileMode) (journal.File, error) {
	name = clean(name)
	writes := flag&(os.O_WRONLY|os.O_RDWR) != 0
	if flag&(os.O_CREATE|os.O_TRUNC) != 0 {
		tear, err := c.dom.begin()
		if err != nil {
			return nil, pathErr("open", name, err)
		}
		if tear {
			// The creation may or may not have reached the log.
			if c.rng.IntN(2) == 0 {
				c.mu.Lock()
				c.openLocked(name, flag)
				c.mu.Unlock()
			}
			return nil, pathErr("open", name, ErrPowerCut)
		}
	} else if err := c.dom.alive(); err != nil {
		return nil, pathErr("open", name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ino, err := c.openLocked(name, flag)
	if err != nil {
		return nil, err
	}
	return &crashFile{fs: c, ino: ino, name: name, writable: writes}, nil
}

func (c *CrashFS) openLocked(name string, flag int) (*inode, error) {
	if !c.dirs[path.Dir(name)] {
		return nil, pathErr("open", name, fs.ErrNotExist)
	}
	if c.dirs[name] {
		return nil, pathErr("open", name, fmt.Errorf("is a directory"))
	}
	ino := c.vol[name]
	if ino == nil {
		if flag&os.O_CREATE == 0 {
			return nil, pathErr("open", name, fs.ErrNotExist)
		}
		ino = &inode{}
		c.nodes = append(c.nodes, ino)
		c.vol[name] = ino
		c.log = append(c.log, dirOp{kind: 'c', to: name, ino: ino})
	} else if flag&os.O_EXCL != 0 && flag&os.O_CREATE != 0 {
		return nil, pathErr("open", name, fs.ErrExist)
	}
	if flag&os.O_TRUNC != 0 && len(ino.vol) > 0 {
		ino.vol, ino.dirty = nil, true
	}
	return ino, nil
}

// Rename renames oldpath over newpath: one operation.
func (c *CrashFS) Rename(oldpath, newpath string) error {
	oldpath, newpath = clean(oldpath), clean(newpath)
	tear, err := c.dom.begin()
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ino := c.vol[oldpath]
	if ino == nil || !c.dirs[path.Dir(newpath)] {
		if tear {
			err = ErrPowerCut
		} else {
			err = fs.ErrNotExist
		}
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	if tear && c.rng.IntN(2) == 0 {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: ErrPowerCut}
	}
	delete(c.vol, oldpath)
	c.vol[newpath] = ino
	c.log = append(c.log, dirOp{kind: 'r', from: oldpath, to: newpath, ino: ino})
	if tear {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: ErrPowerCut}
	}
	return nil
}

// Remove removes a file: one operation.
func (c *CrashFS) Remove(name string) error {
	name = clean(name)
	tear, err := c.dom.begin()
	if err != nil {
		return pathErr("remove", name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.vol[name] == nil {
		if tear {
			return pathErr("remove", name, ErrPowerCut)
		}
		return pathErr("remove", name, fs.ErrNotExist)
	}
	if tear && c.rng.IntN(2) == 0 {
		return pathErr("remove", name, ErrPowerCut)
	}
	delete(c.vol, name)
	c.log = append(c.log, dirOp{kind: 'd', from: name})
	if tear {
		return pathErr("remove", name, ErrPowerCut)
	}
	return nil
}

// MkdirAll creates dir and its parents, durably: one operation.
func (c *CrashFS) MkdirAll(dir string, perm fs.FileMode) error {
	dir = clean(dir)
	tear, err := c.dom.begin()
	if err != nil {
		return pathErr("mkdir", dir, err)
	}
	if tear {
		return pathErr("mkdir", dir, ErrPowerCut)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for d := dir; !c.dirs[d]; d = path.Dir(d) {
		if c.vol[d] != nil {
			return pathErr("mkdir", d, fmt.Errorf("not a directory"))
		}
		c.dirs[d] = true
	}
	return nil
}

// SyncDir makes every name operation so far durable: one operation. (A
// journaling file system commits its whole log; the model syncs names
// only, never file data.)
func (c *CrashFS) SyncDir(dir string) error {
	dir = clean(dir)
	tear, err := c.dom.begin()
	if err != nil {
		return pathErr("sync", dir, err)
	}
	if tear {
		return pathErr("sync", dir, ErrPowerCut)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dirs[dir] {
		return pathErr("sync", dir, fs.ErrNotExist)
	}
	c.replayLocked(len(c.log))
	return nil
}

func (c *CrashFS) replayLocked(n int) {
	for _, op := range c.log[:n] {
		switch op.kind {
		case 'c':
			c.dur[op.to] = op.ino
		case 'r':
			delete(c.dur, op.from)
			c.dur[op.to] = op.ino
		case 'd':
			delete(c.dur, op.from)
		}
	}
	c.log = c.log[n:]
}

func (c *CrashFS) powerOn(clean bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	mode := c.dom.Mode()
	switch {
	case clean || mode == KeepUnsynced:
		c.replayLocked(len(c.log))
	case mode == LoseUnsynced:
		c.replayLocked(0)
	default:
		c.replayLocked(c.rng.IntN(len(c.log) + 1))
	}
	c.log = nil
	for _, ino := range c.nodes {
		if !ino.dirty {
			continue
		}
		switch {
		case clean || mode == KeepUnsynced:
			ino.dur = ino.vol
		case mode == TearRandom:
			ino.dur = c.tear(ino.dur, ino.vol)
		}
		ino.dirty = false
	}
	c.vol = make(map[string]*inode, len(c.dur))
	live := map[*inode]bool{}
	for name, ino := range c.dur {
		c.vol[name] = ino
		live[ino] = true
	}
	c.nodes = c.nodes[:0]
	names := make([]string, 0, len(c.dur))
	for name := range c.dur {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		ino := c.dur[name]
		if live[ino] {
			delete(live, ino)
			c.nodes = append(c.nodes, ino)
		}
		ino.vol = append([]byte(nil), ino.dur...)
	}
}

// tear mixes the durable and the written content per sector, with either
// length: what an interrupted write-back can leave.
func (c *CrashFS) tear(dur, vol []byte) []byte {
	if c.rng.IntN(3) == 0 {
		return append([]byte(nil), dur...)
	}
	if c.rng.IntN(2) == 0 {
		return append([]byte(nil), vol...)
	}
	n := len(dur)
	if c.rng.IntN(2) == 0 {
		n = len(vol)
	}
	out := make([]byte, n)
	for s := 0; s < n; s += sectorSize {
		src := dur
		if c.rng.IntN(2) == 0 {
			src = vol
		}
		if s < len(src) {
			copy(out[s:min(s+sectorSize, n)], src[s:min(s+sectorSize, len(src))])
		}
	}
	return out
}

// ReadDurable returns the durable content of name (what a cut now would
// leave with LoseUnsynced), ignoring the power.
func (c *CrashFS) ReadDurable(name string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ino := c.dur[clean(name)]
	if ino == nil {
		return nil, false
	}
	return append([]byte(nil), ino.dur...), true
}

type crashFile struct {
	fs       *CrashFS
	ino      *inode
	name     string
	pos      int64
	writable bool
	closed   bool
}

func (f *crashFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.dom.alive(); err != nil {
		return 0, pathErr("read", f.name, err)
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if off >= int64(len(f.ino.vol)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.vol[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *crashFile) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.pos)
	f.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *crashFile) WriteAt(p []byte, off int64) (int, error) {
	if !f.writable || f.closed {
		return 0, pathErr("write", f.name, os.ErrInvalid)
	}
	tear, err := f.fs.dom.begin()
	if err != nil {
		return 0, pathErr("write", f.name, err)
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	n := len(p)
	if tear {
		n = f.fs.rng.IntN(len(p) + 1)
	}
	if end := off + int64(n); end > int64(len(f.ino.vol)) {
		f.ino.vol = append(f.ino.vol, make([]byte, end-int64(len(f.ino.vol)))...)
	}
	copy(f.ino.vol[off:], p[:n])
	if n > 0 {
		f.ino.dirty = true
	}
	if tear {
		return n, pathErr("write", f.name, ErrPowerCut)
	}
	return n, nil
}

func (f *crashFile) Write(p []byte) (int, error) {
	n, err := f.WriteAt(p, f.pos)
	f.pos += int64(n)
	return n, err
}

// Sync makes the file's data durable (not its name): one operation.
func (f *crashFile) Sync() error {
	tear, err := f.fs.dom.begin()
	if err != nil {
		return pathErr("sync", f.name, err)
	}
	if tear {
		return pathErr("sync", f.name, ErrPowerCut)
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	f.ino.dur = append([]byte(nil), f.ino.vol...)
	f.ino.dirty = false
	return nil
}

func (f *crashFile) Close() error {
	if f.closed {
		return pathErr("close", f.name, os.ErrClosed)
	}
	f.closed = true
	return nil
}
