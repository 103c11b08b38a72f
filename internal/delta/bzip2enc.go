package delta

import (
	"container/heap"
	"slices"
)

// A bzip2 encoder for the diff sections. Diff bytes are mostly zeros with
// sparse, repetitive changes; a Burrows-Wheeler block sorter codes them
// markedly smaller than the LZ77 coders available in Go, and the device
// decodes them with bz2Reader (bzip2dec.go; a bounded decoder: at most
// 9 × 100,000 × 4 bytes of block state). The encoder only
// has to produce a valid stream, so it is written here from the format: RLE
// of runs of 4+ bytes, BWT (rotations sorted with index/suffixarray on the
// doubled block), move-to-front, zero-run coding and up to six Huffman tables
// chosen per 50 symbols.

const bz2MaxBlock = 900000 - 19 // bytes after the initial run-length step

var bz2CRCTable = func() (t [256]uint32) {
	for i := range t {
		c := uint32(i) << 24
		for k := 0; k < 8; k++ {
			if c&0x80000000 != 0 {
				c = c<<1 ^ 0x04c11db7
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

type bz2BitWriter struct {
	out []byte
	acc uint64
	n   uint
}

func (w *bz2BitWriter) bits(n uint, v uint64) {
	w.acc = w.acc<<n | v&(1<<n-1)
	w.n += n
	for w.n >= 8 {
		w.n -= 8
		w.out = append(w.out, byte(w.acc>>w.n))
	}
}

func (w *bz2BitWriter) flush() []byte {
	if w.n > 0 {
		w.out = append(w.out, byte(w.acc<<(8-w.n)))
		w.n = 0
	}
	return w.out
}

// bzip2Encode returns data compressed as one bzip2 stream. The stream
// header declares the smallest block size that fits, which is what bounds
// the decoder's allocation (4 bytes per block byte).
func bzip2Encode(data []byte) []byte {
	type blk struct {
		b   []byte
		crc uint32
	}
	var blocks []blk
	longest := 0
	for len(data) > 0 {
		block, used := bz2RLE1(data)
		crc := ^uint32(0)
		for _, b := range data[:used] {
			crc = crc<<8 ^ bz2CRCTable[byte(crc>>24)^b]
		}
		blocks = append(blocks, blk{block, ^crc})
		longest = max(longest, len(block))
		data = data[used:]
	}
	w := &bz2BitWriter{}
	w.bits(24, 'B'<<16|'Z'<<8|'h')
	w.bits(8, uint64('0'+max(1, (longest+19+99999)/100000)))
	var combined uint32
	for _, b := range blocks {
		combined = (combined<<1 | combined>>31) ^ b.crc
		bz2Block(w, b.b, b.crc)
	}
	w.bits(24, 0x177245)
	w.bits(24, 0x385090)
	w.bits(32, uint64(combined))
	return w.flush()
}

// bz2RLE1 run-length codes the start of data into at most bz2MaxBlock bytes
// (runs of 4–255 equal bytes become 4 bytes and a count) and returns the
// block and how many input bytes it holds.
func bz2RLE1(data []byte) ([]byte, int) {
	out := make([]byte, 0, min(len(data), bz2MaxBlock))
	i := 0
	for i < len(data) {
		b := data[i]
		j := i + 1
		for j < len(data) && j-i < 255 && data[j] == b {
			j++
		}
		run := j - i
		need := run
		if run >= 4 {
			need = 5
		}
		if len(out)+need > bz2MaxBlock {
			break
		}
		if run >= 4 {
			out = append(out, b, b, b, b, byte(run-4))
		} else {
			for k := 0; k < run; k++ {
				out = append(out, b)
			}
		}
		i = j
	}
	return out, i
}

func bz2Block(w *bz2BitWriter, block []byte, crc uint32) {
	n := len(block)
	// BWT: sort the rotations by sorting the suffixes of the doubled block.
	dbl := make([]byte, 2*n)
	copy(dbl, block)
	copy(dbl[n:], block)
	sa, err := suffixArray(dbl)
	if err != nil {
		panic(err) // blocks are < 1 MB; the serialisation format is fixed
	}
	bwt := make([]byte, 0, n)
	origPtr := 0
	for _, s := range sa {
		if int(s) >= n {
			continue
		}
		if s == 0 {
			origPtr = len(bwt)
		}
		bwt = append(bwt, block[(int(s)+n-1)%n])
	}

	// Move-to-front over the symbols in use, with zero runs as RUNA/RUNB.
	var inUse [256]bool
	for _, b := range block {
		inUse[b] = true
	}
	var order []byte
	var seqToUnseq [256]byte
	for i := 0; i < 256; i++ {
		if inUse[i] {
			seqToUnseq[len(order)] = byte(i)
			order = append(order, byte(i))
		}
	}
	nInUse := len(order)
	alpha := nInUse + 2
	eob := uint16(nInUse + 1)
	mtf := make([]byte, nInUse)
	for i := range mtf {
		mtf[i] = seqToUnseq[i]
	}
	syms := make([]uint16, 0, n/2+2)
	zrun := 0
	flushRun := func() {
		for r := zrun; r > 0; {
			if r&1 == 1 {
				syms = append(syms, 0) // RUNA
				r = (r - 1) / 2
			} else {
				syms = append(syms, 1) // RUNB
				r = (r - 2) / 2
			}
		}
		zrun = 0
	}
	for _, b := range bwt {
		if mtf[0] == b {
			zrun++
			continue
		}
		flushRun()
		k := 1
		for mtf[k] != b {
			k++
		}
		copy(mtf[1:k+1], mtf[:k])
		mtf[0] = b
		syms = append(syms, uint16(k+1))
	}
	flushRun()
	syms = append(syms, eob)

	lens, selectors := bz2Tables(syms, alpha)

	w.bits(24, 0x314159)
	w.bits(24, 0x265359)
	w.bits(32, uint64(crc))
	w.bits(1, 0)
	w.bits(24, uint64(origPtr))
	var ranges uint64
	for r := 0; r < 16; r++ {
		for k := 0; k < 16; k++ {
			if inUse[r*16+k] {
				ranges |= 1 << (15 - r)
				break
			}
		}
	}
	w.bits(16, ranges)
	for r := 0; r < 16; r++ {
		if ranges&(1<<(15-r)) == 0 {
			continue
		}
		var bitsR uint64
		for k := 0; k < 16; k++ {
			if inUse[r*16+k] {
				bitsR |= 1 << (15 - k)
			}
		}
		w.bits(16, bitsR)
	}
	w.bits(3, uint64(len(lens)))
	w.bits(15, uint64(len(selectors)))
	selMTF := []byte{0, 1, 2, 3, 4, 5}[:len(lens)]
	for _, s := range selectors {
		k := 0
		for selMTF[k] != s {
			k++
		}
		copy(selMTF[1:k+1], selMTF[:k])
		selMTF[0] = s
		for ; k > 0; k-- {
			w.bits(1, 1)
		}
		w.bits(1, 0)
	}
	codes := make([][]uint32, len(lens))
	for t, l := range lens {
		cur := int(l[0])
		w.bits(5, uint64(cur))
		for _, x := range l {
			for cur < int(x) {
				w.bits(2, 2)
				cur++
			}
			for cur > int(x) {
				w.bits(2, 3)
				cur--
			}
			w.bits(1, 0)
		}
		codes[t] = bz2Codes(l)
	}
	for i, s := range syms {
		t := selectors[i/50]
		w.bits(uint(lens[t][s]), uint64(codes[t][s]))
	}
}

// bz2Codes assigns canonical codes: shorter lengths first, then by symbol.
func bz2Codes(lens []uint8) []uint32 {
	codes := make([]uint32, len(lens))
	var code uint32
	for l := uint8(1); l <= 20; l++ {
		for s, x := range lens {
			if x == l {
				codes[s] = code
				code++
			}
		}
		code <<= 1
	}
	return codes
}

// bz2Tables chooses 2–6 Huffman tables and a table for every 50 symbols,
// refining the choice a few times as bzip2 does.
func bz2Tables(syms []uint16, alpha int) ([][]uint8, []byte) {
	nt := 6
	switch n := len(syms); {
	case n < 200:
		nt = 2
	case n < 600:
		nt = 3
	case n < 1200:
		nt = 4
	case n < 2400:
		nt = 5
	}
	freq := make([]int, alpha)
	for _, s := range syms {
		freq[s]++
	}
	// Initial tables: split the alphabet into nt ranges of similar weight.
	lens := make([][]uint8, nt)
	remaining := len(syms)
	lo := 0
	for t := 0; t < nt; t++ {
		target := remaining / (nt - t)
		hi, acc := lo-1, 0
		for acc < target && hi < alpha-1 {
			hi++
			acc += freq[hi]
		}
		if hi > lo && t != 0 && t != nt-1 && (nt-t)%2 == 1 {
			acc -= freq[hi]
			hi--
		}
		lens[t] = make([]uint8, alpha)
		for s := range lens[t] {
			if s >= lo && s <= hi {
				lens[t][s] = 0
			} else {
				lens[t][s] = 15
			}
		}
		lo = hi + 1
		remaining -= acc
	}
	nGroups := (len(syms) + 49) / 50
	sel := make([]byte, nGroups)
	for iter := 0; iter < 4; iter++ {
		tf := make([][]int, nt)
		for t := range tf {
			tf[t] = make([]int, alpha)
		}
		for g := 0; g < nGroups; g++ {
			grp := syms[g*50 : min(len(syms), g*50+50)]
			best, bestCost := 0, int(^uint(0)>>1)
			for t := 0; t < nt; t++ {
				c := 0
				for _, s := range grp {
					c += int(lens[t][s])
				}
				if c < bestCost {
					best, bestCost = t, c
				}
			}
			sel[g] = byte(best)
			for _, s := range grp {
				tf[best][s]++
			}
		}
		for t := 0; t < nt; t++ {
			lens[t] = huffmanLengths(tf[t], 17)
		}
	}
	return lens, sel
}

// huffmanLengths returns code lengths (1..limit) for every symbol, giving
// unused symbols the smallest weight so every symbol has a code.
func huffmanLengths(freq []int, limit int) []uint8 {
	w := make([]int, len(freq))
	for i, f := range freq {
		w[i] = max(f, 1) << 8
	}
	for {
		lens := huffmanTry(w)
		if slices.Max(lens) <= uint8(limit) {
			return lens
		}
		for i := range w {
			w[i] = (1 + (w[i]>>8)/2) << 8
		}
	}
}

type hnode struct {
	w           int
	left, right int // -1 for leaves
	sym         int
}

type hheap struct {
	idx   []int
	nodes []hnode
}

func (h *hheap) Len() int { return len(h.idx) }
func (h *hheap) Less(i, j int) bool {
	a, b := h.nodes[h.idx[i]], h.nodes[h.idx[j]]
	if a.w != b.w {
		return a.w < b.w
	}
	return h.idx[i] < h.idx[j]
}
func (h *hheap) Swap(i, j int) { h.idx[i], h.idx[j] = h.idx[j], h.idx[i] }
func (h *hheap) Push(x any)    { h.idx = append(h.idx, x.(int)) }
func (h *hheap) Pop() any {
	x := h.idx[len(h.idx)-1]
	h.idx = h.idx[:len(h.idx)-1]
	return x
}

func huffmanTry(w []int) []uint8 {
	h := &hheap{}
	for s, x := range w {
		h.nodes = append(h.nodes, hnode{x, -1, -1, s})
		h.idx = append(h.idx, s)
	}
	heap.Init(h)
	for h.Len() > 1 {
		a := heap.Pop(h).(int)
		b := heap.Pop(h).(int)
		h.nodes = append(h.nodes, hnode{h.nodes[a].w + h.nodes[b].w, a, b, -1})
		heap.Push(h, len(h.nodes)-1)
	}
	lens := make([]uint8, len(w))
	var walk func(n int, d uint8)
	walk = func(n int, d uint8) {
		nd := h.nodes[n]
		if nd.left < 0 {
			lens[nd.sym] = max(d, 1)
			return
		}
		walk(nd.left, d+1)
		walk(nd.right, d+1)
	}
	walk(h.idx[0], 0)
	return lens
}
