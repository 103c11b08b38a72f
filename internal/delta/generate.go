package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"time"

	"github.com/klauspost/compress/zstd"
)

// GenOptions tunes Generate; the zero value gives the defaults.
type GenOptions struct {
	// WindowSize is the output per window (default 1 MiB, max MaxWindowSize).
	WindowSize int
	// ZstdWindow is the compression window (default 2 MiB, max MaxZstdWindow);
	// the device's decoder keeps this much history.
	ZstdWindow int
	// FullSize is the size of the full image compressed with zstd, for the
	// fallback decision. 0: Generate compresses the new image itself to find
	// out; < 0: no comparison.
	FullSize int64
	// MaxSuffixArray is the largest old image indexed as a whole (default
	// 256 MiB; the index needs 8 bytes per old byte while it is built).
	// Larger images are indexed in SegmentSize pieces around each changed
	// region.
	MaxSuffixArray int
	// SegmentSize is the old-image span indexed per changed region when the
	// old image exceeds MaxSuffixArray (default 32 MiB).
	SegmentSize int
	// CopyRun is the shortest run of unchanged bytes inside an approximate
	// match that becomes a COPY of its own instead of zero diff bytes
	// (default 4096; < 0: never). Shorter runs compress better as diff bytes,
	// longer ones are cheaper to apply as copies.
	CopyRun int
	// DiffCoding selects how each window's diff bytes are stored.
	DiffCoding DiffCoding
}

// DiffCoding is the encoding of diff sections.
type DiffCoding int

const (
	// DiffSparse (default): bzip2 of (zero run, non-zero bytes) tokens; zero
	// runs are skipped on the device instead of decompressed and added.
	DiffSparse DiffCoding = iota
	// DiffBzip2: bzip2 of the diff bytes: about 2% smaller patches, about
	// twice the apply CPU.
	DiffBzip2
	// DiffRaw: diff bytes left to the zstd body: much larger patches,
	// least apply CPU.
	DiffRaw
)

// Stats describes a generated patch.
type Stats struct {
	PatchSize   int64
	FullSize    int64 // full image zstd size compared against (0 if not compared)
	Windows     int
	CopyBytes   int64 // new bytes copied unchanged from the old image
	ZeroBytes   int64
	AddBytes    int64    // new bytes made from old bytes plus a diff
	LitBytes    int64    // new bytes stored literally
	SourceBytes int64    // old bytes the patch reads (and verifies)
	OldSHA256   [32]byte // the source image (bundle: DeltaSource.SourceSHA256)
	NewSHA256   [32]byte // the new image (bundle: Image.SHA256)
	Duration    time.Duration
}

func (o *GenOptions) defaults() error {
	if o.WindowSize == 0 {
		o.WindowSize = 1 << 20
	}
	if o.ZstdWindow == 0 {
		o.ZstdWindow = 2 << 20
	}
	if o.MaxSuffixArray == 0 {
		o.MaxSuffixArray = 256 << 20
	}
	if o.CopyRun == 0 {
		o.CopyRun = 4096
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = 32 << 20
	}
	if o.WindowSize < SourceBlock || o.WindowSize > MaxWindowSize || o.WindowSize%ChainAlign != 0 {
		return fmt.Errorf("delta: window size %d out of range or not a multiple of %d", o.WindowSize, ChainAlign)
	}
	if o.ZstdWindow < 1<<10 || o.ZstdWindow > MaxZstdWindow || o.ZstdWindow&(o.ZstdWindow-1) != 0 {
		return fmt.Errorf("delta: zstd window %d not a power of two up to %d", o.ZstdWindow, MaxZstdWindow)
	}
	return nil
}

// Generate writes a patch that turns the old image into the new one. It runs
// on the build host and holds both images in memory. If the patch would not
// be smaller than the full image compressed with zstd it writes nothing and
// returns ErrDeltaNotSmaller (with Stats filled in), so the caller ships the
// full image instead.
func Generate(ctx context.Context, oldImg io.ReaderAt, oldSize int64, newImg io.ReaderAt, newSize int64, w io.Writer, opts GenOptions) (Stats, error) {
	start := time.Now()
	var st Stats
	if err := opts.defaults(); err != nil {
		return st, err
	}
	if oldSize < 0 || newSize < 0 || oldSize > 1<<40 || newSize > 1<<40 {
		return st, fmt.Errorf("delta: image sizes %d/%d out of range", oldSize, newSize)
	}
	old, err := readAll(oldImg, oldSize)
	if err != nil {
		return st, fmt.Errorf("delta: read old image: %w", err)
	}
	nw, err := readAll(newImg, newSize)
	if err != nil {
		return st, fmt.Errorf("delta: read new image: %w", err)
	}
	h := &Header{
		Version:    formatVersion,
		WindowSize: uint32(opts.WindowSize),
		MaxCtrl:    uint32(min(MaxCtrlSize, max(opts.WindowSize/4, 4096))),
		ZstdWindow: uint32(opts.ZstdWindow),
		OldSize:    oldSize,
		NewSize:    newSize,
		OldSHA256:  sha256.Sum256(old),
		NewSHA256:  sha256.Sum256(nw),
	}

	st.OldSHA256, st.NewSHA256 = h.OldSHA256, h.NewSHA256
	m := newMatcher(old, nw, &opts)
	pieces, err := m.plan(ctx)
	if err != nil {
		return st, err
	}
	pieces = avoidZeroBlocks(pieces, m.zeroBlock, old, nw)
	if opts.CopyRun > 0 {
		pieces = splitEqualRuns(pieces, old, nw, opts.CopyRun)
	}

	var buf bytes.Buffer
	buf.Write(h.marshal())
	enc, err := zstd.NewWriter(&buf,
		zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithWindowSize(opts.ZstdWindow),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true))
	if err != nil {
		return st, fmt.Errorf("delta: zstd: %w", err)
	}
	st.SourceBytes = writeSourceTable(enc, old, pieces)
	if err := writeWindows(ctx, enc, h, old, nw, pieces, &opts, &st); err != nil {
		return st, err
	}
	if err := enc.Close(); err != nil {
		return st, fmt.Errorf("delta: zstd: %w", err)
	}
	st.PatchSize = int64(buf.Len())
	st.Duration = time.Since(start)

	switch {
	case opts.FullSize > 0:
		st.FullSize = opts.FullSize
	case opts.FullSize == 0:
		st.FullSize = zstdSize(nw)
	}
	if st.FullSize > 0 && st.PatchSize >= st.FullSize {
		st.Duration = time.Since(start)
		return st, ErrDeltaNotSmaller
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return st, fmt.Errorf("delta: write patch: %w", err)
	}
	st.Duration = time.Since(start)
	return st, nil
}

func readAll(r io.ReaderAt, n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(io.NewSectionReader(r, 0, n), b); err != nil {
		return nil, err
	}
	return b, nil
}

// zstdSize is the size of b compressed as a full image would be.
func zstdSize(b []byte) int64 {
	var cw countWriter
	enc, err := zstd.NewWriter(&cw, zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	if err != nil {
		return 0
	}
	enc.Write(b)
	enc.Close()
	return cw.n
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// writeSourceTable writes the chunks of old blocks the pieces read, each with
// its hash, and returns the number of source bytes covered.
func writeSourceTable(w io.Writer, old []byte, pieces []piece) int64 {
	nBlocks := (len(old) + SourceBlock - 1) / SourceBlock
	used := make([]bool, nBlocks)
	for _, p := range pieces {
		if p.oldOff >= 0 {
			for b := p.oldOff / SourceBlock; b <= (p.oldOff+p.n-1)/SourceBlock; b++ {
				used[b] = true
			}
		}
	}
	const chunkBlocks = 1024 // 4 MiB of source per hash
	type run struct{ start, count int }
	var chunks [][]run
	var cur []run
	inChunk := 0
	for b := 0; b < nBlocks; b++ {
		if !used[b] {
			continue
		}
		if len(cur) > 0 && cur[len(cur)-1].start+cur[len(cur)-1].count == b {
			cur[len(cur)-1].count++
		} else {
			cur = append(cur, run{b, 1})
		}
		if inChunk++; inChunk == chunkBlocks {
			chunks, cur, inChunk = append(chunks, cur), nil, 0
		}
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	var out []byte
	var total int64
	out = appendUvarint(out, uint64(len(chunks)))
	next := 0
	for _, c := range chunks {
		out = appendUvarint(out, uint64(len(c)))
		var crc uint32
		for _, r := range c {
			out = appendUvarint(out, uint64(r.start-next))
			out = appendUvarint(out, uint64(r.count))
			next = r.start + r.count
			b := old[r.start*SourceBlock : min(len(old), next*SourceBlock)]
			crc = crc32.Update(crc, castagnoli, b)
			total += int64(len(b))
		}
		out = binary.LittleEndian.AppendUint32(out, crc)
	}
	w.Write(out)
	return total
}

// windowHeader is a window's header: its output length, its control
// section's length and its check value — the SHA-256 chaining value after
// b, or for the last window the image's SHA-256.
func windowHeader(c *chain, b []byte, last bool, ctrlLen int) ([]byte, error) {
	hdr := appendUvarint(nil, uint64(len(b)))
	hdr = appendUvarint(hdr, uint64(ctrlLen))
	c.write(b)
	var sum [32]byte
	if last {
		sum = c.sum()
	} else {
		var err error
		if sum, err = c.value(); err != nil {
			return nil, err
		}
	}
	return append(hdr, sum[:]...), nil
}

// diffSection encodes a window's diff bytes: under bzip2 (as sparse tokens
// with DiffSparse) when that is smaller, else raw; nothing for no diff.
func diffSection(diff []byte, coding DiffCoding) []byte {
	if len(diff) == 0 {
		return nil
	}
	if len(diff) >= 256 && coding != DiffRaw {
		enc, b := uint64(diffBzip2), diff
		if coding == DiffSparse {
			enc, b = diffBzip2Sparse, sparseTokens(diff)
		}
		if z := bzip2Encode(b); len(z) < len(diff) {
			return append(appendUvarint(appendUvarint(nil, enc), uint64(len(z))), z...)
		}
	}
	return append(appendUvarint(nil, diffRaw), diff...)
}

// Control section sizes a generator reserves while filling a window.
const (
	maxOp   = 1 + 2*10 // opcode and two varints
	ctrlHdr = 2 * 10   // the count and the length section's size
)

// writeWindows cuts the pieces into windows and writes each window's
// header, control, diff and literal sections.
func writeWindows(ctx context.Context, w io.Writer, h *Header, old, nw []byte, pieces []piece, opts *GenOptions, st *Stats) error {
	ws := int(h.WindowSize)
	var ops, lens, offs, diff, lit []byte
	oldPos := 0
	winStart, pos := 0, 0
	chain := newChain()
	flush := func() error {
		if pos == winStart {
			return nil
		}
		ctrl := appendUvarint(nil, uint64(len(ops)))
		ctrl = append(ctrl, ops...)
		ctrl = appendUvarint(ctrl, uint64(len(lens)))
		ctrl = append(append(ctrl, lens...), offs...)
		hdr, err := windowHeader(chain, nw[winStart:pos], pos == len(nw), len(ctrl))
		if err != nil {
			return err
		}
		for _, b := range [][]byte{hdr, ctrl, diffSection(diff, opts.DiffCoding), lit} {
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		st.Windows++
		ops, lens, offs, diff, lit = ops[:0], lens[:0], offs[:0], diff[:0], lit[:0]
		winStart = pos
		return ctx.Err()
	}
	for _, p := range pieces {
		for p.n > 0 {
			// A window may end early when its control section fills up, but
			// only on a multiple of ChainAlign (its check value is the SHA-256
			// chaining value there). Room is kept for ChainAlign operations:
			// the one added while full() was still false, and up to
			// ChainAlign-1 more, at least a byte each, before the next such
			// offset.
			full := func() bool { return len(ops)+len(lens)+len(offs)+ctrlHdr+ChainAlign*maxOp > int(h.MaxCtrl) }
			if pos-winStart == ws || (full() && pos%ChainAlign == 0) {
				if err := flush(); err != nil {
					return err
				}
			}
			n := min(p.n, ws-(pos-winStart))
			if full() {
				n = min(n, ChainAlign-pos%ChainAlign)
			}
			nb := nw[p.newOff : p.newOff+n]
			switch {
			case p.oldOff == -2: // zero run
				ops = append(ops, opZero)
				lens = appendUvarint(lens, uint64(n))
				st.ZeroBytes += int64(n)
			case p.oldOff < 0:
				ops = append(ops, opLit)
				lens = appendUvarint(lens, uint64(n))
				lit = append(lit, nb...)
				st.LitBytes += int64(n)
			default:
				ob := old[p.oldOff : p.oldOff+n]
				if bytes.Equal(ob, nb) {
					ops = append(ops, opCopy)
					st.CopyBytes += int64(n)
				} else {
					ops = append(ops, opAdd)
					diff = appendDiff(diff, nb, ob, int64(pos))
					st.AddBytes += int64(n)
				}
				lens = appendUvarint(lens, uint64(n))
				offs = appendVarint(offs, int64(p.oldOff-oldPos))
				oldPos = p.oldOff + n
				p.oldOff += n
			}
			p.newOff += n
			p.n -= n
			pos += n
		}
	}
	return flush()
}
