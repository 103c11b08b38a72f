package powercut

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"sync"

	"github.com/otadev/otad/internal/slot"
)

// Block device geometry: the cache tracks 4 KiB pages; a torn write or an
// un-synced page survives per 512-byte sector, the unit a disk writes
// atomically.
const (
	pageSize   = 4096
	sectorSize = 512
)

// BlockDev is a block device (eMMC, SD card, a file slot) with a volatile
// write cache: WriteAt lands in the cache, Sync makes it durable. It counts
// each WriteAt and each Sync as one operation. It implements
// bootenv.Medium (Erase is a no-op: block devices overwrite in place).
type BlockDev struct {
	mu    sync.Mutex
	dom   *Domain
	rng   *rand.Rand
	dur   []byte
	vol   []byte
	dirty map[int64]bool // pages of vol not yet in dur
}

// NewBlockDev returns a zero-filled device of size bytes powered by d.
func NewBlockDev(d *Domain, size int64) *BlockDev {
	b := &BlockDev{dom: d, rng: d.newRand(), dur: make([]byte, size), vol: make([]byte, size), dirty: map[int64]bool{}}
	d.add(b)
	return b
}

// Size is the device size in bytes.
func (b *BlockDev) Size() int64 { return int64(len(b.vol)) }

// Poke sets durable content directly (factory flashing), ignoring power.
func (b *BlockDev) Poke(off int64, p []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	copy(b.dur[off:], p)
	copy(b.vol[off:], p)
}

// Bytes is the content as a reader sees it now (cache included).
func (b *BlockDev) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.vol...)
}

// Durable is the content that survives a power cut for sure.
func (b *BlockDev) Durable() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.dur...)
}

// ReadAt reads through the cache.
func (b *BlockDev) ReadAt(p []byte, off int64) (int, error) {
	if err := b.dom.alive(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if off < 0 || off > int64(len(b.vol)) {
		return 0, fmt.Errorf("powercut: read at %d of %d-byte device", off, len(b.vol))
	}
	n := copy(p, b.vol[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes into the cache: one operation. A torn write leaves a
// random prefix of p in the cache.
func (b *BlockDev) WriteAt(p []byte, off int64) (int, error) {
	tear, err := b.dom.begin()
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(b.vol)) {
		if tear {
			return 0, ErrPowerCut
		}
		return 0, fmt.Errorf("powercut: write of %d bytes at %d beyond %d-byte device", len(p), off, len(b.vol))
	}
	n := len(p)
	if tear {
		n = b.rng.IntN(len(p) + 1)
	}
	copy(b.vol[off:], p[:n])
	for pg := off / pageSize; pg*pageSize < off+int64(n); pg++ {
		b.dirty[pg] = true
	}
	if tear {
		return n, ErrPowerCut
	}
	return n, nil
}

// Erase is a no-op on a block device (it still fails without power).
func (b *BlockDev) Erase(off, n int64) error { return b.dom.alive() }

// Sync flushes the cache: one operation. A cut sync flushes nothing; what
// survives is decided at power-on like any un-synced data.
func (b *BlockDev) Sync() error {
	tear, err := b.dom.begin()
	if err != nil {
		return err
	}
	if tear {
		return ErrPowerCut
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
	return nil
}

func (b *BlockDev) flushLocked() {
	for pg := range b.dirty {
		s, e := pg*pageSize, min((pg+1)*pageSize, int64(len(b.vol)))
		copy(b.dur[s:e], b.vol[s:e])
	}
	clear(b.dirty)
}

func (b *BlockDev) powerOn(clean bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	mode := b.dom.Mode()
	if clean || mode == KeepUnsynced {
		b.flushLocked()
	}
	pages := make([]int64, 0, len(b.dirty))
	for pg := range b.dirty {
		pages = append(pages, pg)
	}
	sort.Slice(pages, func(i, j int) bool { return pages[i] < pages[j] }) // reproducible draws
	for _, pg := range pages {
		if mode == LoseUnsynced {
			break
		}
		for s := pg * pageSize; s < min((pg+1)*pageSize, int64(len(b.vol))); s += sectorSize {
			if b.rng.IntN(2) == 0 {
				copy(b.dur[s:s+sectorSize], b.vol[s:s+sectorSize])
			}
		}
	}
	clear(b.dirty)
	copy(b.vol, b.dur)
}

// Target returns the device as a slot: writes go through the cache in page
// units, Sync flushes, Close does not sync (like close(2)).
func (b *BlockDev) Target() slot.Target { return &blockTarget{b} }

type blockTarget struct{ b *BlockDev }

func (t *blockTarget) ReadAt(p []byte, off int64) (int, error) { return t.b.ReadAt(p, off) }
func (t *blockTarget) Size() int64                             { return t.b.Size() }
func (t *blockTarget) WriteAlign() int64                       { return pageSize }
func (t *blockTarget) Close() error                            { return nil }

func (t *blockTarget) OpenWriter(ctx context.Context, off int64) (slot.Writer, error) {
	if off < 0 || off%pageSize != 0 || off > t.b.Size() {
		return nil, fmt.Errorf("%w: offset %d", slot.ErrAlign, off)
	}
	return &blockWriter{ctx: ctx, b: t.b, off: off}, nil
}

type blockWriter struct {
	ctx context.Context
	b   *BlockDev
	off int64
}

// Write writes page by page, so every page is one operation and a cut can
// land between any two of them.
func (w *blockWriter) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n := min(len(p)-done, int(pageSize-w.off%pageSize))
		if w.off+int64(n) > w.b.Size() {
			return done, fmt.Errorf("%w: write past %d", slot.ErrTooLarge, w.b.Size())
		}
		m, err := w.b.WriteAt(p[done:done+n], w.off)
		done += m
		w.off += int64(m)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (w *blockWriter) Sync() error  { return w.b.Sync() }
func (w *blockWriter) Close() error { return nil }
