package slot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/otadev/otad/internal/mtd"
)

// mtdTarget presents the good erase blocks of a flash device as one
// contiguous logical space: logical block i is the i-th good block. The
// mapping depends only on the bad block table, so every writer — fresh or
// resumed — and every reader agree on it.
type mtdTarget struct {
	d      mtd.Device
	info   mtd.Info
	o      Options
	closer io.Closer // set when this package opened the device
	rw     bool

	mu   sync.Mutex
	good []int64 // physical offsets of good blocks, ascending
	err  error   // scan failure: the target is unusable
}

// NewMTDTarget wraps a flash device (kernel or simulator) as a slot. A bad
// block scan failure makes every later call fail with it; use
// NewMTDTargetWith to see it at once. Close does not close d.
func NewMTDTarget(d mtd.Device) Target {
	t, err := NewMTDTargetWith(d, Options{})
	if err != nil {
		return &mtdTarget{d: d, info: d.Info(), err: err}
	}
	return t
}

// NewMTDTargetWith is NewMTDTarget with options, reporting scan errors.
func NewMTDTargetWith(d mtd.Device, o Options) (Target, error) {
	t := &mtdTarget{d: d, info: d.Info(), o: o.withDefaults(), rw: true}
	if err := t.info.Validate(); err != nil {
		return nil, err
	}
	for off := int64(0); off < t.info.Size; off += t.info.EraseSize {
		bad, err := d.IsBad(off)
		if err != nil {
			return nil, fmt.Errorf("slot: bad block scan at %#x: %w", off, err)
		}
		if !bad {
			t.good = append(t.good, off)
		}
	}
	return t, nil
}

func openMTD(path string, o Options, rw bool) (Target, error) {
	open := mtd.OpenReadOnly
	if rw {
		open = mtd.Open
	}
	c, err := open(path)
	if err != nil {
		return nil, fmt.Errorf("slot: %w", err)
	}
	t, err := NewMTDTargetWith(c, o)
	if err != nil {
		c.Close()
		return nil, err
	}
	mt := t.(*mtdTarget)
	mt.closer, mt.rw = c, rw
	return mt, nil
}

func (t *mtdTarget) Size() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return int64(len(t.good)) * t.info.EraseSize
}

// usable reports a failed bad block scan, which otherwise looks like an
// empty device.
func (t *mtdTarget) usable() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

func (t *mtdTarget) WriteAlign() int64 { return t.info.EraseSize }

func (t *mtdTarget) Close() error {
	if t.closer != nil {
		return t.closer.Close()
	}
	return nil
}

// phys maps logical erase block l to its physical offset.
func (t *mtdTarget) phys(l int64) (int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return 0, t.err
	}
	if l >= int64(len(t.good)) {
		return 0, fmt.Errorf("%w: logical block %d, only %d good erase blocks", ErrTooLarge, l, len(t.good))
	}
	return t.good[l], nil
}

// retire drops a block that failed to erase or program from the mapping and
// records it in the bad block table, so later scans map around it too.
func (t *mtdTarget) retire(l, phys int64) error {
	t.mu.Lock()
	if l < int64(len(t.good)) && t.good[l] == phys {
		t.good = append(t.good[:l], t.good[l+1:]...)
	}
	t.mu.Unlock()
	if m, ok := t.d.(mtd.BadBlockMarker); ok {
		if err := m.MarkBadBlock(phys); err != nil {
			return fmt.Errorf("slot: marking grown bad block at %#x: %w", phys, err)
		}
	}
	return nil
}

// ReadAt reads logical bytes.
func (t *mtdTarget) ReadAt(p []byte, off int64) (int, error) {
	es := t.info.EraseSize
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		if pos >= t.Size() {
			return done, io.EOF
		}
		phys, err := t.phys(pos / es)
		if err != nil {
			return done, err
		}
		n := min(int64(len(p)-done), es-pos%es)
		m, err := t.d.ReadAt(p[done:done+int(n)], phys+pos%es)
		done += m
		if err != nil && !(err == io.EOF && int64(m) == n) {
			return done, err
		}
	}
	return done, nil
}

func (t *mtdTarget) OpenWriter(ctx context.Context, off int64) (Writer, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if !t.rw {
		return nil, fmt.Errorf("slot: target opened read-only")
	}
	if err := checkResume(t, off); err != nil {
		return nil, err
	}
	return &mtdWriter{ctx: ctx, t: t, lblock: off / t.info.EraseSize, buf: make([]byte, 0, t.info.EraseSize)}, nil
}

// mtdWriter fills one erase block at a time in memory, then erases its
// physical block and programs it. Pages that are all 0xFF are not programmed:
// on NAND a programmed 0xFF page carries ECC and can no longer be written by
// UBI or a filesystem, while an unprogrammed one reads the same.
type mtdWriter struct {
	ctx    context.Context
	t      *mtdTarget
	lblock int64
	buf    []byte // data for logical block lblock, received so far
	// State of lblock's physical block in this session.
	erased  bool
	flushed int64 // bytes of buf known to be on flash
	progEnd int64 // page-aligned end of what was programmed (> flushed: last page padded)
	err     error
	closed  bool
}

func (w *mtdWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	es := w.t.info.EraseSize
	if end := w.lblock*es + int64(len(w.buf)) + int64(len(p)); end > w.t.Size() {
		return 0, fmt.Errorf("%w: write would end at %d, %d good bytes", ErrTooLarge, end, w.t.Size())
	}
	done := 0
	for done < len(p) {
		n := copy(w.buf[len(w.buf):es], p[done:])
		w.buf = w.buf[:len(w.buf)+n]
		done += n
		if int64(len(w.buf)) == es {
			if err := w.commit(true); err != nil {
				return done, err
			}
			w.lblock++
			w.buf = w.buf[:0]
			w.erased, w.flushed, w.progEnd = false, 0, 0
		}
	}
	return done, nil
}

// commit brings the flash up to date with buf; whole is true when buf is the
// block's final content (full block, or the image's last bytes).
func (w *mtdWriter) commit(whole bool) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	upto := int64(len(w.buf))
	if upto <= w.flushed {
		return nil
	}
	for tries := 0; ; tries++ {
		phys, err := w.t.phys(w.lblock)
		if err != nil {
			w.err = err
			return err
		}
		err = w.program(phys, upto, whole)
		if err == nil {
			return nil
		}
		if !errors.Is(err, mtd.ErrBadBlock) || tries > 16 {
			w.err = err
			return err
		}
		if err := w.t.retire(w.lblock, phys); err != nil {
			w.err = err
			return err
		}
		w.erased, w.flushed, w.progEnd = false, 0, 0
	}
}

func (w *mtdWriter) program(phys, upto int64, whole bool) error {
	info := w.t.info
	if w.progEnd > w.flushed {
		// The last programmed page was padded and now needs more data: a
		// page cannot be programmed twice, so start the block over.
		w.erased, w.flushed, w.progEnd = false, 0, 0
	}
	if !w.erased && whole && w.t.o.SkipUnchanged {
		old := make([]byte, upto)
		if _, err := w.t.d.ReadAt(old, phys); err == nil && bytes.Equal(old, w.buf[:upto]) {
			w.flushed, w.progEnd = upto, upto
			w.erased = true // nothing more will be written to this block
			return nil
		}
	}
	if !w.erased {
		if err := w.t.d.Erase(phys, info.EraseSize); err != nil {
			return err
		}
		w.erased = true
	}
	end := (upto + info.WriteSize - 1) / info.WriteSize * info.WriteSize
	data := w.buf[w.progEnd:upto]
	if end > upto {
		data = make([]byte, end-w.progEnd)
		copy(data, w.buf[w.progEnd:upto])
		for i := upto - w.progEnd; i < int64(len(data)); i++ {
			data[i] = 0xff
		}
	}
	if err := w.writePages(phys+w.progEnd, data); err != nil {
		return err
	}
	w.flushed, w.progEnd = upto, end
	return nil
}

// writePages programs runs of pages that are not all 0xFF.
func (w *mtdWriter) writePages(off int64, data []byte) error {
	ws := int(w.t.info.WriteSize)
	if w.t.info.Kind == mtd.NOR {
		ws = len(data) // AND with 0xFF is a no-op: one write
	}
	for i := 0; i < len(data); {
		if allFF(data[i : i+ws]) {
			i += ws
			continue
		}
		j := i + ws
		for j < len(data) && !allFF(data[j:j+ws]) {
			j += ws
		}
		if _, err := w.t.d.WriteAt(data[i:j], off+int64(i)); err != nil {
			return err
		}
		i = j
	}
	return nil
}

func allFF(b []byte) bool {
	for _, c := range b {
		if c != 0xff {
			return false
		}
	}
	return true
}

// Sync programs everything buffered. MTD writes are synchronous, so that is
// all durability takes.
func (w *mtdWriter) Sync() error {
	if w.closed {
		return ErrClosed
	}
	if w.err != nil {
		return w.err
	}
	return w.commit(false)
}

// Close programs the final partial block.
func (w *mtdWriter) Close() error {
	if w.closed {
		return ErrClosed
	}
	w.closed = true
	if w.err != nil {
		return w.err
	}
	return w.commit(true)
}
