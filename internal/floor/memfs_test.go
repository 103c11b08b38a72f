package floor

import (
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/otadev/otad/internal/journal"
)

// memFS is a journal.FS in memory for the exhaustive loops (tens of
// thousands of reads): names map to contents, no durability model (that is
// internal/powercut's CrashFS).
type memFS struct {
	mu    sync.Mutex
	files map[string][]byte
}

func newMemFS() *memFS { return &memFS{files: map[string][]byte{}} }

func (m *memFS) get(name string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.files[name]
	return b, ok
}

func (m *memFS) put(name string, b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[name] = append([]byte(nil), b...)
}

func (m *memFS) OpenFile(name string, flag int, _ fs.FileMode) (journal.File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.files[name]
	switch {
	case !ok && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case !ok || flag&os.O_TRUNC != 0:
		b = nil
		m.files[name] = b
	}
	return &memFile{fs: m, name: name, data: append([]byte(nil), b...)}, nil
}

func (m *memFS) Rename(oldpath, newpath string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.files[oldpath]
	if !ok {
		return &fs.PathError{Op: "rename", Path: oldpath, Err: fs.ErrNotExist}
	}
	delete(m.files, oldpath)
	m.files[newpath] = b
	return nil
}

func (m *memFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.files, name)
	return nil
}

func (m *memFS) MkdirAll(string, fs.FileMode) error { return nil }
func (m *memFS) SyncDir(string) error               { return nil }

// memFile works on a private copy and publishes it on Sync and Close.
type memFile struct {
	fs   *memFS
	name string
	data []byte
	off  int64
}

func (f *memFile) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	return n, err
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Write(p []byte) (int, error) {
	n, err := f.WriteAt(p, f.off)
	f.off += int64(n)
	return n, err
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(f.data)) {
		f.data = append(f.data, make([]byte, end-int64(len(f.data)))...)
	}
	return copy(f.data[off:], p), nil
}

func (f *memFile) Sync() error  { f.fs.put(f.name, f.data); return nil }
func (f *memFile) Close() error { f.fs.put(f.name, f.data); return nil }
