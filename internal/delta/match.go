package delta

import (
	"bytes"
	"context"
)

const (
	hashBlock = 4096 // old blocks indexed for exact (COPY) matches
	zeroRun   = 4096 // shortest run of zeros in the new image made a ZERO op
	hashMul   = 0x100000001b3
	smallGap  = 256 // changed regions up to this size are diffed in place
)

const (
	oldLit  = -1 // piece.oldOff of literal bytes
	oldZero = -2 // piece.oldOff of a zero run
)

// matcher plans a patch in three passes: zero runs of the new image, exact
// matches of whole old blocks anywhere in it (a rolling hash, so shifted and
// moved data is found at any byte offset), and bsdiff over the changed
// regions left between them.
type matcher struct {
	old, nw   []byte
	opts      *GenOptions
	zeroBlock []bool // old blocks that are all zero: never read from the source
	sx        *saIndex
	saBase    int // old offset of the indexed span
	saLen     int
}

func newMatcher(old, nw []byte, opts *GenOptions) *matcher {
	m := &matcher{old: old, nw: nw, opts: opts}
	m.zeroBlock = make([]bool, (len(old)+SourceBlock-1)/SourceBlock)
	for b := range m.zeroBlock {
		m.zeroBlock[b] = allZero(old[b*SourceBlock : min(len(old), (b+1)*SourceBlock)])
	}
	return m
}

var zeros [SourceBlock]byte

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// plan returns pieces covering the new image in order.
func (m *matcher) plan(ctx context.Context) ([]piece, error) {
	var out []piece
	lastOffset := 0
	emit := func(p piece) {
		if p.oldOff >= 0 {
			lastOffset = p.oldOff - p.newOff
		}
		out = append(out, p)
	}
	gap := func(a, b int) error {
		if a == b {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// A short gap between exact matches is an in-place edit: diff it
		// against the old bytes at the same alignment, no index needed.
		if o := a + lastOffset; b-a <= smallGap && o >= 0 && o+(b-a) <= len(m.old) {
			emit(piece{a, o, b - a})
			return nil
		}
		sx, base, span, err := m.index(a + lastOffset)
		if err != nil {
			return err
		}
		bsdiffRegion(sx, m.old[base:base+span], base, m.nw[a:b], a, lastOffset, emit)
		return nil
	}
	idx := m.blockIndex()
	for _, seg := range m.nonZeroSegments() {
		if seg.oldOff == oldZero {
			emit(seg)
			continue
		}
		a, b := seg.newOff, seg.newOff+seg.n
		done := a
		err := m.exactMatches(idx, a, b, func(p piece) error {
			if err := gap(done, p.newOff); err != nil {
				return err
			}
			emit(p)
			done = p.newOff + p.n
			return nil
		})
		if err != nil {
			return nil, err
		}
		if err := gap(done, b); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// nonZeroSegments splits the new image at long zero runs; zero runs come
// back as oldZero pieces.
func (m *matcher) nonZeroSegments() []piece {
	var segs []piece
	nw := m.nw
	start := 0
	for i := 0; i < len(nw); {
		if nw[i] != 0 {
			i++
			continue
		}
		j := i + 1
		for j < len(nw) && nw[j] == 0 {
			j++
		}
		if j-i >= zeroRun {
			if i > start {
				segs = append(segs, piece{start, 0, i - start})
			}
			segs = append(segs, piece{i, oldZero, j - i})
			start = j
		}
		i = j
	}
	if start < len(nw) {
		segs = append(segs, piece{start, 0, len(nw) - start})
	}
	return segs
}

// blockIndex maps the rolling hash of every non-zero aligned old block to
// its offset (the first one wins).
func (m *matcher) blockIndex() map[uint64]int {
	idx := make(map[uint64]int, len(m.old)/hashBlock)
	for off := 0; off+hashBlock <= len(m.old); off += hashBlock {
		if m.zeroBlock[off/SourceBlock] {
			continue
		}
		h := rollHash(m.old[off : off+hashBlock])
		if _, ok := idx[h]; !ok {
			idx[h] = off
		}
	}
	return idx
}

func rollHash(b []byte) uint64 {
	var h uint64
	for _, c := range b {
		h = h*hashMul + uint64(c) + 1
	}
	return h
}

// exactMatches finds maximal exact matches of at least one indexed old
// block within nw[a:b] and calls fn for each, in order.
func (m *matcher) exactMatches(idx map[uint64]int, a, b int, fn func(piece) error) error {
	old, nw := m.old, m.nw
	var pow uint64 = 1 // hashMul^hashBlock
	for i := 0; i < hashBlock; i++ {
		pow *= hashMul
	}
	done := a
	i := a
	if b-i < hashBlock {
		return nil
	}
	h := rollHash(nw[i : i+hashBlock])
	for {
		if off, ok := idx[h]; ok && bytes.Equal(old[off:off+hashBlock], nw[i:i+hashBlock]) {
			s, o := i, off
			for s > done && o > 0 && nw[s-1] == old[o-1] {
				s--
				o--
			}
			e := i + hashBlock + matchLen(old[off+hashBlock:], nw[i+hashBlock:b])
			if err := fn(piece{s, o, e - s}); err != nil {
				return err
			}
			done, i = e, e
			if b-i < hashBlock {
				return nil
			}
			h = rollHash(nw[i : i+hashBlock])
			continue
		}
		if i+hashBlock >= b {
			return nil
		}
		h = h*hashMul + uint64(nw[i+hashBlock]) + 1 - (uint64(nw[i])+1)*pow
		i++
	}
}

// index returns a suffix array over the old image, or over a segment of it
// around old offset near when the old image is too large to index whole.
func (m *matcher) index(near int) (*saIndex, int, int, error) {
	if len(m.old) <= m.opts.MaxSuffixArray {
		if m.sx == nil && len(m.old) > 0 {
			sx, err := newSAIndex(m.old, saKeyLen(len(m.old)))
			if err != nil {
				return nil, 0, 0, err
			}
			m.sx, m.saLen = sx, len(m.old)
		}
		return m.sx, 0, m.saLen, nil
	}
	seg := m.opts.SegmentSize
	// Reuse the current segment while near stays in its middle half.
	if m.sx != nil && near >= m.saBase+seg/4 && near < m.saBase+seg*3/4 {
		return m.sx, m.saBase, m.saLen, nil
	}
	base := near - seg/2
	base -= base % (seg / 4)
	base = max(0, min(base, len(m.old)-seg))
	m.sx = nil // let the old one go before building the next
	sx, err := newSAIndex(m.old[base:base+seg], saKeyLen(seg))
	if err != nil {
		return nil, 0, 0, err
	}
	m.sx, m.saBase, m.saLen = sx, base, seg
	return sx, base, seg, nil
}

// avoidZeroBlocks rewrites pieces so that no operation reads an all-zero
// old block: over such blocks the old bytes are known to be zero, so the
// new bytes are emitted as a ZERO run or as literals (which equal the diff
// against zeros, so they compress the same).
func avoidZeroBlocks(in []piece, zeroBlock []bool, old, nw []byte) []piece {
	out := make([]piece, 0, len(in))
	add := func(p piece) {
		if p.n == 0 {
			return
		}
		if p.oldOff == oldLit && allZero(nw[p.newOff:p.newOff+p.n]) && p.n >= 64 {
			p.oldOff = oldZero
		}
		if k := len(out) - 1; k >= 0 {
			q := &out[k]
			if q.newOff+q.n == p.newOff && ((q.oldOff < 0 && q.oldOff == p.oldOff) ||
				(q.oldOff >= 0 && p.oldOff == q.oldOff+q.n)) {
				q.n += p.n
				return
			}
		}
		out = append(out, p)
	}
	for _, p := range in {
		if p.oldOff < 0 {
			add(p)
			continue
		}
		for p.n > 0 {
			b := p.oldOff / SourceBlock
			n := min(p.n, (b+1)*SourceBlock-p.oldOff)
			q := piece{p.newOff, p.oldOff, n}
			if zeroBlock[b] {
				q.oldOff = oldLit
			}
			add(q)
			p.newOff += n
			p.oldOff += n
			p.n -= n
		}
	}
	return out
}

// splitEqualRuns cuts approximate-match pieces around runs of at least
// minRun unchanged bytes, so those runs become COPY operations.
func splitEqualRuns(in []piece, old, nw []byte, minRun int) []piece {
	out := make([]piece, 0, len(in))
	for _, p := range in {
		if p.oldOff < 0 {
			out = append(out, p)
			continue
		}
		ob, nb := old[p.oldOff:p.oldOff+p.n], nw[p.newOff:p.newOff+p.n]
		start := 0 // start of the pending (not yet emitted) part
		for i := 0; i < p.n; {
			l := matchLen(ob[i:], nb[i:])
			if l < minRun {
				i += l + 1
				continue
			}
			if i > start {
				out = append(out, piece{p.newOff + start, p.oldOff + start, i - start})
			}
			out = append(out, piece{p.newOff + i, p.oldOff + i, l})
			i += l
			start = i
		}
		if start < p.n {
			out = append(out, piece{p.newOff + start, p.oldOff + start, p.n - start})
		}
	}
	return out
}
