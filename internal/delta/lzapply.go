package delta

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// lzState is what Apply keeps for LZ operations: the dictionary view
// (allocated at the first window, since every window's output may end the
// next dictionary), the frame buffer (a window plus the most a zstd frame
// can add to it) and one decoder reused with a new raw dictionary for every
// operation.
type lzState struct {
	view  *dictView
	frame []byte
	dec   *zstd.Decoder
	keep  bool  // the patch has LZ operations: keep the previous output
	flush int64 // new-image bytes known to be readable through the target
}

// remember keeps a copy of a window's output, the new bytes the next LZ
// operation's dictionary may start with.
func (lz *lzState) remember(out []byte) {
	if lz.keep {
		lz.view.remember(out)
	}
}

// lzFrameMax is the largest frame accepted for n output bytes: stored
// (uncompressed) zstd blocks add 3 bytes per 128 KiB block, the frame
// header at most 18.
func lzFrameMax(n int) int { return n + n/1024 + 64 }

// lzExtents parses an LZ operation's dictionary from offs: old extents
// (relative old offsets, as COPY and ADD use), each checked against the
// source and their total against the header's LZDict, left in w.ext; then
// how many bytes of the previous window's output end the dictionary, left
// in w.lzPrev. It returns the old position after the last extent.
func (w *windowApplier) lzExtents(oldPos int64, offs *[]byte, outLen int64) (int64, error) {
	if w.lz.view == nil {
		return 0, errors.New("LZ operation in a patch without LZ dictionaries")
	}
	k, m := binary.Varint(*offs)
	if m <= 0 || k < 0 || k > int64(w.h.LZDict) || k > int64(len(*offs)-m)/2 {
		return 0, errors.New("bad LZ extent count")
	}
	*offs = (*offs)[m:]
	w.ext = w.ext[:0]
	var total int64
	for i := int64(0); i < k; i++ {
		d, m1 := binary.Varint(*offs)
		if m1 <= 0 {
			return 0, errors.New("bad LZ extent")
		}
		l, m2 := binary.Varint((*offs)[m1:])
		if m2 <= 0 {
			return 0, errors.New("bad LZ extent")
		}
		*offs = (*offs)[m1+m2:]
		off := oldPos + d
		if l <= 0 || d < -w.h.OldSize || d > w.h.OldSize || off < 0 || l > w.h.OldSize || off > w.h.OldSize-l {
			return 0, errors.New("LZ extent outside source")
		}
		if off%SourceBlock != 0 || l%SourceBlock != 0 {
			return 0, errors.New("LZ extent not on source blocks")
		}
		if total += l; total > int64(w.h.LZDict) {
			return 0, fmt.Errorf("LZ dictionary over the header's %d bytes", w.h.LZDict)
		}
		w.ext = append(w.ext, extent{off, l})
		oldPos = off + l
	}
	j, m := binary.Varint(*offs)
	if m <= 0 || j < 0 || j > int64(w.h.LZDict) || j > int64(len(*offs)-m)/2 {
		return 0, errors.New("bad LZ new extent count")
	}
	*offs = (*offs)[m:]
	if j > 0 && w.h.Flags&FlagReadsNew == 0 {
		return 0, errors.New("LZ new extents in a patch not flagged to read them")
	}
	w.newExt = w.newExt[:0]
	var newPos int64
	for i := int64(0); i < j; i++ {
		d, m1 := binary.Varint(*offs)
		if m1 <= 0 {
			return 0, errors.New("bad LZ new extent")
		}
		l, m2 := binary.Varint((*offs)[m1:])
		if m2 <= 0 {
			return 0, errors.New("bad LZ new extent")
		}
		*offs = (*offs)[m1+m2:]
		off := newPos + d
		// Only what earlier windows wrote, whole blocks, in order.
		if l <= 0 || d < 0 || d > w.newOff || off > w.newOff-l || off%SourceBlock != 0 || l%SourceBlock != 0 {
			return 0, errors.New("LZ new extent outside the written image")
		}
		if total += l; total > int64(w.h.LZDict) {
			return 0, fmt.Errorf("LZ dictionary over the header's %d bytes", w.h.LZDict)
		}
		w.newExt = append(w.newExt, extent{off, l})
		newPos = off + l
	}
	p, m := binary.Varint(*offs)
	if m <= 0 || p < 0 || p > int64(w.lz.prevLen()) {
		return 0, errors.New("bad LZ previous-output length")
	}
	*offs = (*offs)[m:]
	w.lzPrev = int(p)
	if outLen > int64(w.h.WindowSize) {
		return 0, errors.New("bad LZ length")
	}
	return oldPos, nil
}

// decode reads the dictionary extents w.walk left in w.ext from the
// source, then the operation's frame from the literal section, and decodes
// it into b, which it must fill exactly.
func (lz *lzState) decode(n int, w *windowApplier, b []byte) error {
	if lz.dec == nil {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(MaxLZWindow),
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			return fmt.Errorf("delta: zstd: %w", err)
		}
		lz.dec = d
		lz.frame = make([]byte, lzFrameMax(int(w.h.WindowSize)))
	}
	at := 0
	for _, e := range w.ext {
		if err := lz.view.put(at, w.src, e.off, int(e.n)); err != nil {
			return err
		}
		at += int(e.n)
	}
	if len(w.newExt) > 0 {
		// What earlier windows handed dst must be readable through the
		// target before it is read back.
		if last := w.newExt[len(w.newExt)-1]; last.off+last.n > lz.flush {
			if w.sync != nil {
				if err := w.sync(); err != nil {
					return fmt.Errorf("delta: window %d: sync before read-back: %w", n, err)
				}
			}
			lz.flush = w.newOff
		}
		for _, e := range w.newExt {
			if err := lz.view.put(at, w.target, e.off, int(e.n)); err != nil {
				return fmt.Errorf("delta: window %d: read back: %w", n, err)
			}
			at += int(e.n)
			w.st.LZReadBack += e.n
		}
	}
	dict := lz.view.dict(w.lzPrev, at)
	fl, err := w.s.uvarint("LZ frame length")
	if err != nil {
		return err
	}
	if fl == 0 || fl > uint64(lzFrameMax(len(b))) {
		return fmt.Errorf("%w: window %d: LZ frame of %d bytes for %d", ErrMalformed, n, fl, len(b))
	}
	frame := lz.frame[:fl]
	if err := w.s.full(frame, "LZ frame"); err != nil {
		return err
	}
	var got []byte
	err = guardFaults(func() error {
		// A raw dictionary with id 0 is what frames without a dictionary id
		// (zstd --patch-from) are decoded with.
		if err := lz.dec.ResetWithOptions(nil, zstd.WithDecoderDictRaw(0, dict)); err != nil {
			return fmt.Errorf("delta: zstd: %w", err)
		}
		var err error
		got, err = lz.dec.DecodeAll(frame, b[:0:len(b)])
		if err != nil {
			// The frame decoded from the slots' bytes: a wrong source shows
			// here as often as a corrupt patch, and the hash chain would
			// catch either; both are reported as a malformed window.
			return fmt.Errorf("%w: window %d: LZ frame: %v", ErrMalformed, n, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(got) != len(b) || (len(b) > 0 && &got[0] != &b[0]) {
		return fmt.Errorf("%w: window %d: LZ frame makes %d of %d bytes", ErrMalformed, n, len(got), len(b))
	}
	w.st.LZBytes += int64(len(b))
	return nil
}

func (lz *lzState) prevLen() int {
	if lz.view == nil {
		return 0
	}
	return lz.view.prevLen
}

func (lz *lzState) close() {
	if lz.dec != nil {
		lz.dec.Close()
	}
	if lz.view != nil {
		lz.view.close()
	}
}
