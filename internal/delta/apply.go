package delta

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/zstd"
)

// Applier applies patches; the zero value is ready to use.
type Applier struct {
	// NewSize, when > 0, is the size the caller expects (the manifest's
	// image size); a patch declaring another size is refused up front.
	NewSize int64
	// MaxOldSize, when > 0, refuses patches made from a larger source
	// (e.g. the active slot's size).
	MaxOldSize int64
	// NewSHA256, when not zero, is the image hash the caller expects (the
	// bundle manifest's); a patch making another image is refused up front.
	NewSHA256 [32]byte
	// SourceChecked says the caller has run VerifySource on this same patch
	// against this same src: the source table is then parsed but its extents
	// are not read a second time. The SHA-256 chain still checks every
	// output byte, so a source that changed since is still caught before the
	// window it affects is written, only as ErrOutputHash.
	SourceChecked bool
	// Stats, when not nil, receives the counts of the last Apply.
	Stats *ApplyStats
	// Target reads back the slot dst writes, from its start: patches
	// flagged FlagReadsNew name bytes earlier windows wrote in their LZ
	// dictionaries. Nil: dst itself if it is an io.ReaderAt, else such
	// patches are refused before anything is written. Sync, if set, makes
	// everything dst was given readable through Target; Apply calls it
	// before reading back.
	Target io.ReaderAt
	Sync   func() error
}

// ApplyStats counts what one Apply read and hashed.
type ApplyStats struct {
	Windows      int
	SourceBytes  int64 // source bytes checked against the source table (CRC-32C)
	HashedOutput int64 // output bytes hashed with SHA-256 (all of them)
	CopyBytes    int64 // output copied from the source
	ZeroBytes    int64
	LZBytes      int64 // output decoded from LZ frames
	LZReadBack   int64 // new-image bytes LZ dictionaries read back from the target
	LZMapped     bool  // LZ dictionaries were mapped from the slots, not copied
}

// Apply reconstructs the new image from patch (read once, sequentially) and
// the old image src (read with ReadAt), writing it sequentially to dst. It
// checks the whole source table before writing anything, then each window's
// output against the SHA-256 chain before writing that window; the last
// window is written only once the whole output hashes to Header.NewSHA256.
// So if Apply returns nil, the bytes it wrote are the image with that
// SHA-256, and if it fails, it failed before handing dst the last window
// (what slot.OpenVerifiedWriter needs). Memory use is bounded by the patch
// header's limits (at most a few MiB), not by the image size.
func Apply(ctx context.Context, patch io.Reader, src io.ReaderAt, dst io.Writer) error {
	return (&Applier{}).Apply(ctx, patch, src, dst)
}

// VerifySource reads the header and source table from the start of patch and
// checks every source extent the patch will read against src, writing
// nothing. It returns an error matching ErrSourceMismatch if src is not the
// image the patch was made for. See Applier.VerifySource.
func VerifySource(ctx context.Context, patch io.Reader, src io.ReaderAt) error {
	return (&Applier{}).VerifySource(ctx, patch, src)
}

// VerifySource makes every check Apply makes before it would write the
// first byte — the header against the Applier's expectations (NewSize,
// NewSHA256, MaxOldSize) and the source table against src — and nothing
// else. It is for callers that can read the patch start twice, to refuse a
// patch before touching anything (e.g. to fall back to a full image); Apply
// with SourceChecked then skips the second read of the source.
func (a *Applier) VerifySource(ctx context.Context, patch io.Reader, src io.ReaderAt) error {
	h, s, err := a.open(patch)
	if err != nil {
		return err
	}
	defer s.close()
	_, err = s.verifySourceTable(ctx, h, src, make([]byte, 256<<10))
	return err
}

// open reads and checks the header and starts the body.
func (a *Applier) open(patch io.Reader) (*Header, *stream, error) {
	h, err := ReadHeader(patch)
	if err != nil {
		return nil, nil, err
	}
	if a.NewSize > 0 && h.NewSize != a.NewSize {
		return nil, nil, fmt.Errorf("%w: patch makes %d bytes, expected %d", ErrMalformed, h.NewSize, a.NewSize)
	}
	if a.NewSHA256 != ([32]byte{}) && h.NewSHA256 != a.NewSHA256 {
		return nil, nil, fmt.Errorf("%w: patch makes image %x…, expected %x…", ErrMalformed, h.NewSHA256[:6], a.NewSHA256[:6])
	}
	if a.MaxOldSize > 0 && h.OldSize > a.MaxOldSize {
		return nil, nil, fmt.Errorf("%w: patch source is %d bytes, slot holds %d", ErrSourceMismatch, h.OldSize, a.MaxOldSize)
	}
	s, err := newStream(patch, h)
	if err != nil {
		return nil, nil, err
	}
	return h, s, nil
}

// Apply is the configurable form of the package-level Apply.
func (a *Applier) Apply(ctx context.Context, patch io.Reader, src io.ReaderAt, dst io.Writer) error {
	h, s, err := a.open(patch)
	if err != nil {
		return err
	}
	defer s.close()
	w := &windowApplier{
		h:      h,
		s:      s,
		src:    src,
		target: a.Target,
		sync:   a.Sync,
		out:    make([]byte, h.WindowSize),
		ctrl:   make([]byte, h.MaxCtrl),
		sh:     newChain(),
	}
	defer w.lz.close()
	if err := w.prepareLZ(dst); err != nil {
		return err
	}
	// The window buffer is free until the first window: source reads use it.
	tableSrc := src
	if a.SourceChecked {
		tableSrc = nil
	}
	srcBytes, err := s.verifySourceTable(ctx, h, tableSrc, w.out)
	if err != nil {
		return err
	}
	w.st.SourceBytes = srcBytes
	if a.Stats != nil {
		defer func() { *a.Stats = w.st }()
	}
	var written int64
	for n := 0; written < h.NewSize; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		out, err := w.window(n, written, h.NewSize-written)
		if err != nil {
			return err
		}
		w.lz.remember(out)
		if _, err := dst.Write(out); err != nil {
			return fmt.Errorf("delta: write window %d: %w", n, err)
		}
		written += int64(len(out))
		w.newOff = written
		w.st.Windows++
	}
	if h.NewSize == 0 && w.sh.sum() != h.NewSHA256 { // no window checked it
		return fmt.Errorf("%w: empty image, header hash %x…", ErrOutputHash, h.NewSHA256[:6])
	}
	// The stream must end here; reading to EOF also checks the zstd frame
	// checksum.
	var one [1]byte
	if n, err := io.ReadFull(s.r, one[:]); n != 0 || err != io.EOF {
		if err == nil || err == io.ErrUnexpectedEOF {
			err = errors.New("trailing data")
		}
		return fmt.Errorf("%w: after last window: %v", ErrMalformed, err)
	}
	return nil
}

// stream is the decompressed patch body.
type stream struct {
	d *zstd.Decoder
	r *bufio.Reader
}

func newStream(patch io.Reader, h *Header) (*stream, error) {
	d, err := zstd.NewReader(patch,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(uint64(h.ZstdWindow)),
		zstd.WithDecoderMaxMemory(uint64(h.ZstdWindow)))
	if err != nil {
		return nil, fmt.Errorf("delta: zstd: %w", err)
	}
	return &stream{d: d, r: bufio.NewReaderSize(d, 16<<10)}, nil
}

func (s *stream) close() { s.d.Close() }

func (s *stream) uvarint(what string) (uint64, error) {
	v, err := binary.ReadUvarint(s.r)
	if err != nil {
		return 0, s.bodyErr(what, err)
	}
	return v, nil
}

func (s *stream) full(p []byte, what string) error {
	if _, err := io.ReadFull(s.r, p); err != nil {
		return s.bodyErr(what, err)
	}
	return nil
}

func (s *stream) bodyErr(what string, err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
}

// verifySourceTable checks the source table: chunks of block runs (strictly
// increasing, so the work is bounded by the source size) each with the
// CRC-32C of the blocks' bytes. It returns the number of source bytes
// checked; buf is scratch space for reading them. With a nil src it only
// parses the table (Applier.SourceChecked) and returns 0.
func (s *stream) verifySourceTable(ctx context.Context, h *Header, src io.ReaderAt, buf []byte) (int64, error) {
	oldBlocks := uint64((h.OldSize + SourceBlock - 1) / SourceBlock)
	nChunks, err := s.uvarint("source table")
	if err != nil {
		return 0, err
	}
	if nChunks > oldBlocks {
		return 0, fmt.Errorf("%w: %d source chunks for %d blocks", ErrMalformed, nChunks, oldBlocks)
	}
	var total int64
	var next uint64 // first block not yet covered
	var want [4]byte
	for c := uint64(0); c < nChunks; c++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		nRuns, err := s.uvarint("source chunk")
		if err != nil {
			return 0, err
		}
		if nRuns == 0 || nRuns > oldBlocks-next {
			return 0, fmt.Errorf("%w: source chunk %d has %d runs", ErrMalformed, c, nRuns)
		}
		var crc uint32
		for i := uint64(0); i < nRuns; i++ {
			gap, err := s.uvarint("source run")
			if err != nil {
				return 0, err
			}
			count, err := s.uvarint("source run")
			if err != nil {
				return 0, err
			}
			if gap > oldBlocks-next || count == 0 || count > oldBlocks-next-gap {
				return 0, fmt.Errorf("%w: source run outside the %d-block source", ErrMalformed, oldBlocks)
			}
			start := next + gap
			next = start + count
			off, end := int64(start)*SourceBlock, min(int64(next)*SourceBlock, h.OldSize)
			if src == nil {
				continue
			}
			if crc, err = crcSource(src, off, end-off, buf, crc); err != nil {
				return 0, err
			}
			total += end - off
		}
		if err := s.full(want[:], "source chunk check"); err != nil {
			return 0, err
		}
		if src != nil && binary.LittleEndian.Uint32(want[:]) != crc {
			return 0, &SourceMismatchError{Where: fmt.Sprintf("source table chunk %d (blocks up to %d)", c, next)}
		}
	}
	return total, nil
}

// crcSource continues crc over src[off:off+n], read through buf.
func crcSource(src io.ReaderAt, off, n int64, buf []byte, crc uint32) (uint32, error) {
	for n > 0 {
		b := buf[:min(int64(len(buf)), n)]
		if err := readOld(src, off, b); err != nil {
			return 0, err
		}
		crc = crc32.Update(crc, castagnoli, b)
		off += int64(len(b))
		n -= int64(len(b))
	}
	return crc, nil
}

// readOld fills p from src at off; a source shorter than the patch expects is
// a mismatch, not a malformed patch.
func readOld(src io.ReaderAt, off int64, p []byte) error {
	n, err := src.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		return &SourceMismatchError{Where: fmt.Sprintf("source ends before offset %d", off+int64(len(p)))}
	}
	return fmt.Errorf("delta: read source at %d: %w", off, err)
}

type windowApplier struct {
	st     ApplyStats
	sh     *chain
	h      *Header
	s      *stream
	src    io.ReaderAt
	out    []byte
	ctrl   []byte
	raw    rawDiff
	bz     bz2Diff
	sparse sparseDiff
	oldPos int64 // end of the last old extent read; offsets are relative to it
	lz     lzState
	ext    []extent // the current LZ operation's old extents (walk)
	newExt []extent // its new-image extents
	lzPrev int      // and how much of the previous output starts it
	target io.ReaderAt
	sync   func() error
	newOff int64 // where in the new image the current window starts
}

// prepareLZ sets up LZ dictionaries before anything is written: a patch
// that reads the new image back needs a target to read it from, and
// dictionaries too large to copy need slots that can be mapped.
func (w *windowApplier) prepareLZ(dst io.Writer) error {
	h := w.h
	if h.LZDict == 0 {
		return nil
	}
	if h.Flags&FlagReadsNew != 0 && w.target == nil {
		r, ok := dst.(io.ReaderAt)
		if !ok {
			return errors.New("delta: patch reads back its target; none given")
		}
		w.target = r
	}
	_, srcMap := fdOf(w.src)
	mapped := srcMap
	if h.Flags&FlagReadsNew != 0 {
		_, tgtMap := fdOf(w.target)
		mapped = mapped && tgtMap
	}
	v, err := newDictView(int(h.WindowSize), int(h.LZDict), mapped)
	if err != nil {
		return err
	}
	w.lz.view, w.lz.keep = v, true
	w.st.LZMapped = v.mapped
	return nil
}

// extent is a span of the old image.
type extent struct{ off, n int64 }

// window decodes, builds and verifies window n (at most left bytes) and
// returns its output, which the caller may write.
func (w *windowApplier) window(n int, newOff, left int64) ([]byte, error) {
	s := w.s
	outLen, ctrlLen, want, err := w.header(n, newOff, left)
	if err != nil {
		return nil, err
	}
	last := outLen == uint64(left)
	ctrl := w.ctrl[:ctrlLen]
	if err := s.full(ctrl, "window control"); err != nil {
		return nil, err
	}
	out := w.out[:outLen]
	// Pass 1: old extents and diff bytes (the diff section comes first).
	lits := false
	base := w.oldPos
	var diff diffSource // the diff section, opened at the first ADD
	err = w.walk(n, base, ctrl, out, func(op byte, off int64, at int, b []byte) error {
		switch op {
		case opCopy, opAdd:
			if err := readOld(w.src, off, b); err != nil {
				return err
			}
			if op == opCopy {
				w.st.CopyBytes += int64(len(b))
			}
			if op == opAdd {
				if diff == nil {
					if diff, err = w.openDiff(); err != nil {
						return err
					}
				}
				return diff.add(b, newOff+int64(at))
			}
		case opZero:
			clear(b)
			w.st.ZeroBytes += int64(len(b))
		case opLit, opLZ:
			lits = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if diff != nil {
		if err := diff.finish(); err != nil {
			return nil, fmt.Errorf("window %d: %w", n, err)
		}
	}
	if lits { // Pass 2: the literal section (literal bytes and LZ frames).
		err = w.walk(n, base, ctrl, out, func(op byte, _ int64, _ int, b []byte) error {
			switch op {
			case opLit:
				return s.full(b, "literal bytes")
			case opLZ:
				return w.lz.decode(n, w, b)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := w.check(n, out, last, want); err != nil {
		return nil, err
	}
	return out, nil
}

// header reads window n's header: output and control lengths, checked
// against the patch header and what is left of the image (a window other
// than the last ends on a ChainAlign multiple), and the check value.
func (w *windowApplier) header(n int, newOff, left int64) (outLen, ctrlLen uint64, want [32]byte, err error) {
	s, h := w.s, w.h
	if outLen, err = s.uvarint("window length"); err != nil {
		return 0, 0, want, err
	}
	if ctrlLen, err = s.uvarint("window control length"); err != nil {
		return 0, 0, want, err
	}
	if outLen == 0 || outLen > uint64(h.WindowSize) || outLen > uint64(left) || ctrlLen == 0 || ctrlLen > uint64(h.MaxCtrl) {
		return 0, 0, want, fmt.Errorf("%w: window %d: sizes %d/%d", ErrMalformed, n, outLen, ctrlLen)
	}
	if outLen != uint64(left) && (uint64(newOff)+outLen)%ChainAlign != 0 {
		return 0, 0, want, fmt.Errorf("%w: window %d ends at %d, not a multiple of %d", ErrMalformed, n, uint64(newOff)+outLen, ChainAlign)
	}
	err = s.full(want[:], "window check value")
	return outLen, ctrlLen, want, err
}

// check hashes window n's output and compares the chaining value (the
// image's SHA-256 for the last window) with the window's check value. A
// mismatch means a corrupt patch, or a source that differs where the
// source table's CRC did not notice or that changed since the check.
func (w *windowApplier) check(n int, out []byte, last bool, want [32]byte) error {
	w.sh.write(out)
	w.st.HashedOutput += int64(len(out))
	var sum [32]byte
	if last {
		if sum = w.sh.sum(); sum != w.h.NewSHA256 {
			return fmt.Errorf("%w: window %d: image SHA-256 %x…, header says %x…", ErrOutputHash, n, sum[:6], w.h.NewSHA256[:6])
		}
	} else {
		var err error
		if sum, err = w.sh.value(); err != nil {
			return err
		}
	}
	if sum != want {
		return fmt.Errorf("%w: window %d", ErrOutputHash, n)
	}
	return nil
}

// walk parses the control section, checking every operation against the
// window and the source, and calls fn with each operation's output slice.
// Old offsets are relative to the end of the previous extent, starting at
// oldPos; w.oldPos is left at the end of the window's last extent.
func (w *windowApplier) walk(n int, oldPos int64, ctrl, out []byte, fn func(op byte, off int64, at int, b []byte) error) error {
	bad := func(what string) error { return fmt.Errorf("%w: window %d: %s", ErrMalformed, n, what) }
	// The control section is stored by field: opcodes, lengths, offsets.
	nOps, k := binary.Uvarint(ctrl)
	if k <= 0 || nOps == 0 || nOps > uint64(len(ctrl)-k) {
		return bad("bad operation count")
	}
	ops, rest := ctrl[k:k+int(nOps)], ctrl[k+int(nOps):]
	lensLen, k := binary.Uvarint(rest)
	if k <= 0 || lensLen > uint64(len(rest)-k) {
		return bad("bad length section")
	}
	lens, offs := rest[k:k+int(lensLen)], rest[k+int(lensLen):]
	pos := 0
	for _, op := range ops {
		l, k := binary.Uvarint(lens)
		if k <= 0 || l == 0 || l > uint64(len(out)-pos) {
			return bad("bad operation length")
		}
		lens = lens[k:]
		var off int64
		switch op {
		case opCopy, opAdd:
			d, k := binary.Varint(offs)
			if k <= 0 {
				return bad("bad offset")
			}
			offs = offs[k:]
			off = oldPos + d
			if d < -w.h.OldSize || d > w.h.OldSize || off < 0 || off > w.h.OldSize-int64(l) {
				return bad("extent outside source")
			}
			oldPos = off + int64(l)
		case opLZ:
			var err error
			if oldPos, err = w.lzExtents(oldPos, &offs); err != nil {
				return bad(err.Error())
			}
		case opZero, opLit:
		default:
			return bad(fmt.Sprintf("operation %d", op))
		}
		if err := fn(op, off, pos, out[pos:pos+int(l)]); err != nil {
			return err
		}
		pos += int(l)
	}
	if pos != len(out) || len(lens) != 0 || len(offs) != 0 {
		return bad(fmt.Sprintf("operations make %d of %d bytes", pos, len(out)))
	}
	w.oldPos = oldPos
	return nil
}
