package delta

import (
	"encoding/binary"
	"sort"
)

// kmerIndex finds where in the old image a new window's content came from
// when the window's operations do not say (new files, rebuilt binaries):
// the hash of the 16 bytes at every kmerStep-aligned old offset, in a
// direct-mapped table (a collision replaces the entry: this only ranks old
// regions for a dictionary, nothing depends on a hit being right).
type kmerIndex struct {
	tab  []uint32 // old offset / kmerStep + 1; 0: empty
	bits uint
}

const (
	kmerLen   = 16
	kmerStep  = 32
	voteChunk = 64 << 10 // dictionary regions are ranked in chunks of this size
)

func kmerHash(b []byte) uint64 {
	a := binary.LittleEndian.Uint64(b) * 0x9E3779B97F4A7C15
	c := binary.LittleEndian.Uint64(b[8:]) * 0xC2B2AE3D27D4EB4F
	return (a ^ (c>>29 | c<<35)) * 0x165667B19E3779F9
}

// newKmerIndex indexes img, skipping the blocks zeroBlock marks (may be
// nil). With first, a k-mer seen again keeps its first offset: the index of
// the new image is asked where content first appeared, before the window
// looking for it.
func newKmerIndex(img []byte, zeroBlock []bool, first bool) *kmerIndex {
	bits := uint(16)
	for (1<<bits)*2 < len(img)/kmerStep && bits < 26 {
		bits++
	}
	x := &kmerIndex{tab: make([]uint32, 1<<bits), bits: bits}
	for off := 0; off+kmerLen <= len(img); off += kmerStep {
		if zeroBlock != nil && zeroBlock[off/SourceBlock] {
			continue
		}
		slot := &x.tab[kmerHash(img[off:])>>(64-bits)]
		if first && *slot != 0 {
			continue
		}
		*slot = uint32(off/kmerStep + 1)
	}
	return x
}

// newExtents picks the chunks of the new image before offset before that
// most of bs's 16-byte strings were first seen in, up to maxBytes, in image
// order.
func newExtents(bs [][]byte, before int, idx *kmerIndex, maxBytes int) []extent {
	v := map[int]int{}
	for _, b := range bs {
		idx.votes(b, v)
	}
	var chunks []int
	for c, n := range v {
		if n >= 64 && (c+1)*voteChunk <= before {
			chunks = append(chunks, c)
		}
	}
	sort.Slice(chunks, func(i, j int) bool {
		if v[chunks[i]] != v[chunks[j]] {
			return v[chunks[i]] > v[chunks[j]]
		}
		return chunks[i] < chunks[j]
	})
	chunks = chunks[:min(len(chunks), maxBytes/voteChunk)]
	sort.Ints(chunks)
	var ext []extent
	for _, c := range chunks {
		off := int64(c) * voteChunk
		if k := len(ext) - 1; k >= 0 && ext[k].off+ext[k].n == off {
			ext[k].n += voteChunk
			continue
		}
		ext = append(ext, extent{off, voteChunk})
	}
	return ext
}

// votes adds to v, per voteChunk of the indexed image, the positions of b
// whose 16 bytes hash like an indexed k-mer there.
func (x *kmerIndex) votes(b []byte, v map[int]int) {
	for p := 0; p+kmerLen <= len(b); p++ {
		if e := x.tab[kmerHash(b[p:])>>(64-x.bits)]; e != 0 {
			v[int(e-1)*kmerStep/voteChunk]++
		}
	}
}

// dictExtents picks the old bytes LZ windows ws use as their dictionary, up
// to maxDict: first the old chunks most of the windows' 16-byte strings
// were found in (idx, may be nil; on the BusyBox pair this ranks better
// than the extents bsdiff matched, 2.10 against 2.31 MB), then the blocks
// the windows' operations read, then margin around those. Never an all-zero
// block of the old image (Apply does not read those: a trimmed slot may
// return anything there). Extents come back in old-image order, whole
// SourceBlocks.
func dictExtents(ws []*win, nw []byte, oldLen int, zeroBlock []bool, idx *kmerIndex, maxDict, margin int) []extent {
	budget := maxDict / SourceBlock
	picked := map[int]bool{}
	add := func(b int) bool {
		if len(picked) >= budget {
			return false
		}
		if b >= 0 && b < len(zeroBlock) && !zeroBlock[b] {
			picked[b] = true
		}
		return true
	}
	type span struct{ a, b int } // blocks [a, b)
	var spans []span
	for _, wn := range ws {
		for _, o := range wn.ops {
			if o.op == opCopy || o.op == opAdd {
				spans = append(spans, span{o.off / SourceBlock, (o.off+o.n-1)/SourceBlock + 1})
			}
		}
	}
	if idx != nil {
		v := map[int]int{}
		for _, wn := range ws {
			idx.votes(nw[wn.start:wn.end], v)
		}
		chunks := make([]int, 0, len(v))
		for c, n := range v {
			if n >= 64 { // a handful of hits is noise
				chunks = append(chunks, c)
			}
		}
		sort.Slice(chunks, func(i, j int) bool {
			if v[chunks[i]] != v[chunks[j]] {
				return v[chunks[i]] > v[chunks[j]]
			}
			return chunks[i] < chunks[j]
		})
		per := voteChunk / SourceBlock
	chunk:
		for _, c := range chunks {
			for b := c * per; b < (c+1)*per; b++ {
				if !add(b) {
					break chunk
				}
			}
		}
	}
	for _, s := range spans {
		for b := s.a; b < s.b; b++ {
			if !add(b) {
				break
			}
		}
	}
	mb := margin / SourceBlock
	for d := 1; d <= mb && len(picked) < budget; d++ {
		for _, s := range spans {
			if !add(s.a-d) || !add(s.b-1+d) {
				break
			}
		}
	}
	blocks := make([]int, 0, len(picked))
	for b := range picked {
		// Whole blocks only: Apply maps extents, and a partial last block
		// of the old image could not be followed by the next extent.
		if (b+1)*SourceBlock <= oldLen {
			blocks = append(blocks, b)
		}
	}
	sort.Ints(blocks)
	var ext []extent
	for _, b := range blocks {
		off := int64(b) * SourceBlock
		n := int64(SourceBlock)
		if k := len(ext) - 1; k >= 0 && ext[k].off+ext[k].n == off {
			ext[k].n += n
			continue
		}
		ext = append(ext, extent{off, n})
	}
	return ext
}
