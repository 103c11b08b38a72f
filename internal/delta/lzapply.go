package delta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"

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

var (
	errLZNoDict     = errors.New("LZ operation without LZDict")
	errLZNotFlagged = errors.New("LZ new extents without ReadsNew")
	errLZPrev       = errors.New("bad LZ previous-output length")
	// A bad count or varint, an extent outside its image, not on blocks,
	// out of order, or over LZDict: walk adds the window.
	errLZExtent = errors.New("bad LZ extent")
)

// lzExtents parses an LZ operation's dictionary from offs: old extents
// (relative old offsets, as COPY and ADD use), left in w.ext; new-image
// extents, in order and wholly before the window, left in w.newExt; their
// total checked against the header's LZDict; then how many bytes of the
// previous window's output start the dictionary, left in w.lzPrev. It
// returns the old position after the last old extent.
func (w *windowApplier) lzExtents(oldPos int64, offs *[]byte) (int64, error) {
	if w.lz.view == nil {
		return 0, errLZNoDict
	}
	var total int64
	var err error
	if w.ext, oldPos, err = w.extents(offs, w.ext, oldPos, w.h.OldSize, -w.h.OldSize, &total); err != nil {
		return 0, err
	}
	if w.newExt, _, err = w.extents(offs, w.newExt, 0, w.newOff, 0, &total); err != nil {
		return 0, err
	}
	if len(w.newExt) > 0 && w.h.Flags&FlagReadsNew == 0 {
		return 0, errLZNotFlagged
	}
	p, m := binary.Varint(*offs)
	if m <= 0 || p < 0 || p > int64(w.lz.prevLen()) {
		return 0, errLZPrev
	}
	*offs = (*offs)[m:]
	w.lzPrev = int(p)
	return oldPos, nil
}

// extents parses a count and that many (offset delta, length) pairs: whole
// SourceBlocks inside [0, limit), each at pos+delta with pos the previous
// one's end and delta at least minDelta, their lengths added to *total.
func (w *windowApplier) extents(offs *[]byte, dst []extent, pos, limit, minDelta int64, total *int64) ([]extent, int64, error) {
	k, m := binary.Varint(*offs)
	if m <= 0 || k < 0 || k > int64(len(*offs)-m)/2 {
		return nil, 0, errLZExtent
	}
	*offs = (*offs)[m:]
	dst = dst[:0]
	for ; k > 0; k-- {
		d, m1 := binary.Varint(*offs)
		l, m2 := binary.Varint((*offs)[max(m1, 0):])
		if m1 <= 0 || m2 <= 0 {
			return nil, 0, errLZExtent
		}
		*offs = (*offs)[m1+m2:]
		off := pos + d
		if l <= 0 || d < minDelta || d > limit || off < 0 || off > limit-l || (off|l)%SourceBlock != 0 {
			return nil, 0, errLZExtent
		}
		if *total += l; *total > int64(w.h.LZDict) {
			return nil, 0, errLZExtent
		}
		dst = append(dst, extent{off, l})
		pos = off + l
	}
	return dst, pos, nil
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
	at, err := lz.place(w)
	if err != nil {
		return fmt.Errorf("delta: window %d: LZ dictionary: %w", n, err)
	}
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
	// The frame decodes from the slots' bytes: a wrong source shows here as
	// often as a corrupt patch, and the hash chain would catch either; both
	// are reported as a malformed window.
	if err := lz.decodeFrame(frame, lz.view.dict(w.lzPrev, at), b); err != nil {
		return fmt.Errorf("%w: window %d: LZ frame: %v", ErrMalformed, n, err)
	}
	w.st.LZBytes += int64(len(b))
	return nil
}

// place puts the operation's extents in the dictionary view, old then new,
// and returns their total. What earlier windows handed dst must be readable
// through the target before it is read back, hence the Sync.
func (lz *lzState) place(w *windowApplier) (int, error) {
	at := 0
	for i, e := range append(w.ext, w.newExt...) {
		r := w.src
		if i >= len(w.ext) {
			r = w.target
			w.st.LZReadBack += e.n
			// Only a Sync makes more of what dst was given readable.
			if e.off+e.n > lz.flush {
				if w.sync != nil {
					if err := w.sync(); err != nil {
						return 0, err
					}
				}
				lz.flush = w.newOff
			}
		}
		if err := lz.view.put(at, r, e.off, int(e.n)); err != nil {
			return 0, err
		}
		at += int(e.n)
	}
	return at, nil
}

// decodeFrame decodes frame with dict into exactly b. A memory fault
// reading a mapped slot (an I/O error, a device shorter than it claimed)
// raises SIGBUS, which must fail the install, not end the daemon.
func (lz *lzState) decodeFrame(frame, dict, b []byte) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mapped slot: %v", r)
		}
	}()
	// A raw dictionary with id 0 is what frames without a dictionary id
	// (zstd --patch-from) are decoded with.
	if err := lz.dec.ResetWithOptions(nil, zstd.WithDecoderDictRaw(0, dict)); err != nil {
		return err
	}
	got, err := lz.dec.DecodeAll(frame, b[:0:len(b)])
	if err == nil && (len(got) != len(b) || (len(b) > 0 && &got[0] != &b[0])) {
		err = fmt.Errorf("makes %d of %d bytes", len(got), len(b))
	}
	return err
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
