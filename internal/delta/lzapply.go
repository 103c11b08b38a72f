package delta

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// lzState is what Apply keeps for LZ operations, allocated at the first one:
// the dictionary buffer (the header's LZDict), the frame buffer (a window
// plus the most a zstd frame can add to it) and one decoder reused with a
// new raw dictionary for every operation.
type lzState struct {
	dict  []byte
	frame []byte
	dec   *zstd.Decoder
	prev  []byte // the previous window's output, for the dictionary's end
	keep  bool   // the patch has LZ operations: keep prev
}

// remember keeps a copy of a window's output, the new bytes the next LZ
// operation's dictionary may end with.
func (lz *lzState) remember(out []byte, windowSize int) {
	if !lz.keep {
		return
	}
	if lz.prev == nil {
		lz.prev = make([]byte, 0, windowSize)
	}
	lz.prev = append(lz.prev[:0], out...)
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
		if total += l; total > int64(w.h.LZDict) {
			return 0, fmt.Errorf("LZ dictionary over the header's %d bytes", w.h.LZDict)
		}
		w.ext = append(w.ext, extent{off, l})
		oldPos = off + l
	}
	p, m := binary.Varint(*offs)
	if m <= 0 || p < 0 || p > int64(len(w.lz.prev)) {
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
		lz.dict = make([]byte, 0, int(w.h.LZDict)+int(w.h.WindowSize))
		lz.frame = make([]byte, lzFrameMax(int(w.h.WindowSize)))
	}
	dict := lz.dict[:0]
	for _, e := range w.ext {
		at := len(dict)
		dict = dict[:at+int(e.n)]
		if err := readOld(w.src, e.off, dict[at:]); err != nil {
			return err
		}
	}
	dict = append(dict, lz.prev[len(lz.prev)-w.lzPrev:]...)
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
	// A raw dictionary with id 0 is what frames without a dictionary id
	// (zstd --patch-from) are decoded with.
	if err := lz.dec.ResetWithOptions(nil, zstd.WithDecoderDictRaw(0, dict)); err != nil {
		return fmt.Errorf("delta: zstd: %w", err)
	}
	got, err := lz.dec.DecodeAll(frame, b[:0:len(b)])
	if err != nil {
		// The frame decoded from the source's bytes: a wrong source shows
		// here as often as a corrupt patch, and the hash chain would catch
		// either; both are reported as a malformed window.
		return fmt.Errorf("%w: window %d: LZ frame: %v", ErrMalformed, n, err)
	}
	if len(got) != len(b) || (len(b) > 0 && &got[0] != &b[0]) {
		return fmt.Errorf("%w: window %d: LZ frame makes %d of %d bytes", ErrMalformed, n, len(got), len(b))
	}
	w.st.LZBytes += int64(len(b))
	return nil
}

func (lz *lzState) close() {
	if lz.dec != nil {
		lz.dec.Close()
	}
}
