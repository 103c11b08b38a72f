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
	// LZ codes a window as one zstd frame with old extents as its
	// dictionary, where that is smaller than the window's operations (nil:
	// DefaultLZ()). NoLZ turns this off.
	LZ   LZCoder
	NoLZ bool
	// LZDict is the most old bytes an LZ window names as its dictionary
	// (default 8 MiB; with LZNewDict at most MaxLZDict). The coder's time
	// grows with the dictionary, its gain soon stops: on the major root
	// file system pair 8 MiB coded 0.05 % smaller than 16 MiB for 19 %
	// less generation CPU, 4 MiB 0.02 % larger than 16 for 35 % less, but
	// 1.9 % larger on the BusyBox pair. The device maps
	// them from the active slot; a device that cannot map its slots copies
	// them and then takes at most MaxLZDictCopy.
	LZDict int
	// LZNewDict is the most bytes of the new image before a window that its
	// dictionary names (default 4 MiB, -1 none): content that first
	// appears in the new release and recurs, which the device reads back
	// from the slot it writes. Slots that cannot be read back while being
	// written need -1.
	LZNewDict int
	// LZMargin is how far a dictionary reaches beyond the old extents the
	// window's operations read (default 256 KiB): the rest of the old file
	// those extents belong to, most often.
	LZMargin int
	// LZWorkers is how many windows are LZ-coded at once (default
	// GOMAXPROCS).
	LZWorkers int
	// LZMaxWindows caps how many windows are LZ-coded (default 64 per
	// started 256 MiB of new image, at least 16): the zstd program takes
	// 2–6 CPU-seconds a window with the default dictionaries. On the major
	// root file system pair 64 windows with 8 MiB dictionaries made
	// 23,208,165 B where 32 with 16 MiB made 25,337,198, for about the
	// same CPU.
	LZMaxWindows int
	// LZGroup is how many LZ windows, neighbours in the image, share one
	// dictionary (default 1: every window has its own, which starts with
	// the previous window's output). The coder loads a dictionary once per
	// group, and loading is most of its cost, but a window in a group sees
	// neither the previous window nor the group's earlier windows: on the
	// BusyBox pair, groups of 2 took 26 % less generation CPU for a 0.2 %
	// larger patch, groups of 8 63 % less for 14 % larger.
	LZGroup int

	lzAlways bool // tests: every window with new bytes becomes an LZ window
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
	// DiffSparseZstd: sparse tokens left to the zstd body: no bzip2 to
	// decode on the device.
	DiffSparseZstd
)

// Stats describes a generated patch.
type Stats struct {
	PatchSize   int64
	FullSize    int64 // full image zstd size compared against (0 if not compared)
	Windows     int
	CopyBytes   int64 // new bytes copied unchanged from the old image
	ZeroBytes   int64
	AddBytes    int64    // new bytes made from old bytes plus a diff
	LitBytes    int64    // new bytes stored literally (as planned, before LZ windows)
	LZWindows   int      // windows stored as an LZ frame instead
	LZBytes     int64    // new bytes in those windows
	LZTried     int      // windows LZ-coded to compare (at most LZMaxWindows)
	LZCoder     string   // the LZ coder used
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
	if o.LZDict == 0 {
		o.LZDict = 8 << 20
	}
	if o.LZNewDict == 0 {
		o.LZNewDict = 4 << 20
	}
	if o.LZMargin == 0 {
		o.LZMargin = 256 << 10
	}
	if o.LZGroup <= 0 {
		o.LZGroup = 1
	}
	if o.LZWorkers <= 0 {
		o.LZWorkers = runtime.GOMAXPROCS(0)
	}
	if o.LZ == nil && !o.NoLZ {
		o.LZ = DefaultLZ()
	}
	if o.LZDict < 0 || o.LZDict+max(o.LZNewDict, 0) > MaxLZDict || o.LZMargin < 0 {
		return fmt.Errorf("delta: LZ dictionary %d + %d (max %d), margin %d", o.LZDict, max(o.LZNewDict, 0), MaxLZDict, o.LZMargin)
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

	wins, err := planWindows(ctx, h, old, nw, pieces, &opts, &st)
	if err != nil {
		return st, err
	}
	st.Windows = len(wins)
	if !opts.NoLZ {
		if err := chooseLZ(ctx, old, nw, m.zeroBlock, wins, &opts, &st); err != nil {
			return st, err
		}
	}
	buf, srcBytes, err := encodeSmaller(ctx, *h, old, nw, pieces, wins, &opts, &st)
	if err != nil {
		return st, err
	}
	st.SourceBytes = srcBytes
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

// encodeSmaller encodes the patch with the LZ windows chooseLZ picked and,
// if there are any, also without them, and returns the smaller: each
// window's choice was made on an estimate of what its operations cost in
// the body.
func encodeSmaller(ctx context.Context, h Header, old, nw []byte, pieces []piece, wins []*win, opts *GenOptions, st *Stats) (*bytes.Buffer, int64, error) {
	buf, srcBytes, err := encodePatch(ctx, h, old, nw, pieces, wins, opts)
	if err != nil || st.LZWindows == 0 || opts.lzAlways {
		return buf, srcBytes, err
	}
	frames := make([][]byte, len(wins))
	for i, wn := range wins {
		frames[i], wn.lzFrame = wn.lzFrame, nil
	}
	plain, plainSrc, err := encodePatch(ctx, h, old, nw, pieces, wins, opts)
	if err != nil {
		return nil, 0, err
	}
	if plain.Len() <= buf.Len() {
		st.LZWindows, st.LZBytes = 0, 0
		return plain, plainSrc, nil
	}
	for i, wn := range wins {
		wn.lzFrame = frames[i]
	}
	return buf, srcBytes, nil
}

// encodePatch lays out the patch: header, then the zstd body holding the
// source table and the windows. It returns the patch and how many source
// bytes the table covers.
func encodePatch(ctx context.Context, h Header, old, nw []byte, pieces []piece, wins []*win, opts *GenOptions) (*bytes.Buffer, int64, error) {
	var extra []extent
	for _, wn := range wins {
		if wn.lzFrame != nil {
			extra = append(extra, wn.lzExt...)
			var d int64
			for _, e := range wn.lzExt {
				d += e.n
			}
			for _, e := range wn.lzNew {
				d += e.n
			}
			if len(wn.lzNew) > 0 {
				h.Flags |= FlagReadsNew
			}
			h.LZDict = max(h.LZDict, uint32(d), 1)
		}
	}
	var buf bytes.Buffer
	buf.Write(h.marshal())
	enc, err := zstd.NewWriter(&buf,
		zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithWindowSize(opts.ZstdWindow),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, 0, fmt.Errorf("delta: zstd: %w", err)
	}
	srcBytes := writeSourceTable(enc, old, pieces, extra)
	if err := writeWindows(ctx, enc, &h, nw, wins); err != nil {
		return nil, 0, err
	}
	if err := enc.Close(); err != nil {
		return nil, 0, fmt.Errorf("delta: zstd: %w", err)
	}
	return &buf, srcBytes, nil
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

// writeSourceTable writes the chunks of old blocks the pieces and the LZ
// dictionaries (extra) read, each with its hash, and returns the number of
// source bytes covered.
func writeSourceTable(w io.Writer, old []byte, pieces []piece, extra []extent) int64 {
	nBlocks := (len(old) + SourceBlock - 1) / SourceBlock
	used := make([]bool, nBlocks)
	mark := func(off, n int) {
		for b := off / SourceBlock; b <= (off+n-1)/SourceBlock; b++ {
			used[b] = true
		}
	}
	for _, p := range pieces {
		if p.oldOff >= 0 {
			mark(p.oldOff, p.n)
		}
	}
	for _, e := range extra {
		mark(int(e.off), int(e.n))
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
// DiffSparse leaves the tokens to the body's zstd instead where bzip2
// would save less than bzip2Gain of their zstd size (est estimates it):
// decoding bzip2 is most of the device's apply CPU on an executable
// (esbuild 0.24 -> 0.25: half of it), for a few percent of patch size.
func diffSection(diff []byte, coding DiffCoding, est *zstd.Encoder) []byte {
	if len(diff) == 0 {
		return nil
	}
	if coding == DiffSparseZstd {
		return append(appendUvarint(nil, diffSparse), sparseTokens(diff)...)
	}
	if len(diff) >= 256 && coding != DiffRaw {
		enc, b := uint64(diffBzip2), diff
		if coding == DiffSparse {
			enc, b = diffBzip2Sparse, sparseTokens(diff)
		}
		z := bzip2Encode(b)
		if coding == DiffSparse && est != nil {
			if zs := len(est.EncodeAll(b, nil)); float64(len(z)) > (1-bzip2Gain)*float64(zs) {
				return append(appendUvarint(nil, diffSparse), b...)
			}
		}
		if len(z) < len(diff) {
			return append(appendUvarint(appendUvarint(nil, enc), uint64(len(z))), z...)
		}
	}
	return append(appendUvarint(nil, diffRaw), diff...)
}

// bzip2Gain is the least saving over zstd for which a window's diff tokens
// are worth bzip2's decoding cost on the device.
const bzip2Gain = 0.15

// Control section sizes a generator reserves while filling a window.
const (
	maxOp   = 1 + 2*10 // opcode and two varints
	ctrlHdr = 2 * 10   // the count and the length section's size
)

// wop is one operation of a planned window, with its absolute old offset
// (encoded relative to the previous extent only when the window is emitted,
// since an LZ window before it moves that previous extent).
type wop struct {
	op     byte
	n, off int
}

// win is a planned window: its output span, its operations and sections,
// and, once chosen, the LZ form that replaces them.
type win struct {
	start, end int
	ops        []wop
	diff, lit  []byte   // the diff section (encoded) and literal bytes
	changed    int      // ADD and LIT bytes: what an LZ form could code better
	lzExt      []extent // old extents of the LZ dictionary
	lzNew      []extent // new-image extents of the LZ dictionary (before the window)
	lzPrev     int      // bytes of the previous window's output starting the dictionary
	lzFrame    []byte   // nil: the window keeps its operations
}

// planWindows cuts the pieces into windows of operations. A window may end
// early when its control section fills up, but only on a multiple of
// ChainAlign (its check value is the SHA-256 chaining value there). Room is
// kept for ChainAlign operations: the one added while full() was still
// false, and up to ChainAlign-1 more, at least a byte each, before the next
// such offset.
func planWindows(ctx context.Context, h *Header, old, nw []byte, pieces []piece, opts *GenOptions, st *Stats) ([]*win, error) {
	ws := int(h.WindowSize)
	var wins []*win
	cur := &win{}
	ctrlLen, estOld := 0, 0 // estOld: the previous extent's end, as if no window were LZ
	var diff []byte
	est, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
		zstd.WithWindowSize(opts.ZstdWindow), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("delta: zstd: %w", err)
	}
	defer est.Close()
	flush := func(pos int) error {
		if pos == cur.start {
			return nil
		}
		cur.end = pos
		cur.diff = diffSection(diff, opts.DiffCoding, est)
		wins = append(wins, cur)
		cur, ctrlLen, diff = &win{start: pos}, 0, diff[:0]
		return ctx.Err()
	}
	pos := 0
	for _, p := range pieces {
		for p.n > 0 {
			full := func() bool { return ctrlLen+ctrlHdr+ChainAlign*maxOp > int(h.MaxCtrl) }
			if pos-cur.start == ws || (full() && pos%ChainAlign == 0) {
				if err := flush(pos); err != nil {
					return nil, err
				}
			}
			n := min(p.n, ws-(pos-cur.start))
			if full() {
				n = min(n, ChainAlign-pos%ChainAlign)
			}
			nb := nw[p.newOff : p.newOff+n]
			o := wop{n: n, off: p.oldOff}
			switch {
			case p.oldOff == oldZero:
				o.op = opZero
				st.ZeroBytes += int64(n)
			case p.oldOff < 0:
				o.op = opLit
				cur.lit = append(cur.lit, nb...)
				cur.changed += n
				st.LitBytes += int64(n)
			default:
				ob := old[p.oldOff : p.oldOff+n]
				if bytes.Equal(ob, nb) {
					o.op = opCopy
					st.CopyBytes += int64(n)
				} else {
					o.op = opAdd
					diff = appendDiff(diff, nb, ob, int64(pos))
					cur.changed += n
					st.AddBytes += int64(n)
				}
				p.oldOff += n
			}
			cur.ops = append(cur.ops, o)
			ctrlLen += 1 + uvarintLen(uint64(n))
			if o.op == opCopy || o.op == opAdd {
				ctrlLen += varintLen(int64(o.off - estOld))
				estOld = o.off + n
			}
			p.newOff += n
			p.n -= n
			pos += n
		}
	}
	if err := flush(pos); err != nil {
		return nil, err
	}
	return wins, nil
}

func uvarintLen(v uint64) int { return len(binary.AppendUvarint(nil, v)) }

func varintLen(v int64) int { return len(binary.AppendVarint(nil, v)) }

// ctrl encodes w's control section, in its LZ form once chosen; old offsets
// are relative to oldPos, which it returns advanced past the window's last
// extent.
func (w *win) ctrl(oldPos int) ([]byte, int) {
	if w.lzFrame != nil {
		return w.ctrlLZ(oldPos)
	}
	return w.ctrlOps(oldPos)
}

func (w *win) ctrlLZ(oldPos int) ([]byte, int) {
	lens := appendUvarint(nil, uint64(w.end-w.start))
	offs := appendVarint(nil, int64(len(w.lzExt)))
	for _, e := range w.lzExt {
		offs = appendVarint(offs, e.off-int64(oldPos))
		offs = appendVarint(offs, e.n)
		oldPos = int(e.off + e.n)
	}
	offs = appendVarint(offs, int64(len(w.lzNew)))
	newPos := int64(0)
	for _, e := range w.lzNew {
		offs = appendVarint(offs, e.off-newPos)
		offs = appendVarint(offs, e.n)
		newPos = e.off + e.n
	}
	offs = appendVarint(offs, int64(w.lzPrev))
	return ctrlSection([]byte{opLZ}, lens, offs), oldPos
}

func (w *win) ctrlOps(oldPos int) ([]byte, int) {
	var ops, lens, offs []byte
	for _, o := range w.ops {
		ops = append(ops, o.op)
		lens = appendUvarint(lens, uint64(o.n))
		if o.op == opCopy || o.op == opAdd {
			offs = appendVarint(offs, int64(o.off-oldPos))
			oldPos = o.off + o.n
		}
	}
	return ctrlSection(ops, lens, offs), oldPos
}

// ctrlSection lays out a control section by field: opcodes, lengths,
// offsets.
func ctrlSection(ops, lens, offs []byte) []byte {
	ctrl := appendUvarint(nil, uint64(len(ops)))
	ctrl = append(ctrl, ops...)
	ctrl = appendUvarint(ctrl, uint64(len(lens)))
	return append(append(ctrl, lens...), offs...)
}

// sections returns w's diff and literal sections as stored.
func (w *win) sections() (diff, lit []byte) {
	if w.lzFrame != nil {
		return nil, append(appendUvarint(nil, uint64(len(w.lzFrame))), w.lzFrame...)
	}
	return w.diff, w.lit
}

// writeWindows writes each window's header, control, diff and literal
// sections.
func writeWindows(ctx context.Context, w io.Writer, h *Header, nw []byte, wins []*win) error {
	chain := newChain()
	oldPos := 0
	for _, wn := range wins {
		var ctrl []byte
		ctrl, oldPos = wn.ctrl(oldPos)
		if len(ctrl) > int(h.MaxCtrl) {
			return fmt.Errorf("delta: window at %d: control section of %d bytes over %d", wn.start, len(ctrl), h.MaxCtrl)
		}
		hdr, err := windowHeader(chain, nw[wn.start:wn.end], wn.end == len(nw), len(ctrl))
		if err != nil {
			return err
		}
		diff, lit := wn.sections()
		for _, b := range [][]byte{hdr, ctrl, diff, lit} {
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}
