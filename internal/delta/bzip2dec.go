package delta

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// A bzip2 decoder for the diff sections, written for apply speed: it is the
// largest CPU cost of applying a patch after SHA-256. Compared with the
// standard library's compress/bzip2 it decodes Huffman codes through a
// 10-bit lookup table instead of walking a tree bit by bit, and keeps its
// block state (4 bytes per block byte, at most 3.6 MB) across the windows of
// a patch instead of allocating it per section. It reads exactly one stream
// from exactly n bytes and checks every block CRC and the stream CRC; a
// randomised block (deprecated since bzip2 0.9.5, never written by the
// encoder) is refused.

var errBz2 = errors.New("bzip2 data invalid")

const (
	bz2TableBits  = 10
	bz2MaxCodeLen = 20
	bz2MaxSyms    = 258
	bz2GroupSize  = 50
)

// bz2Huff decodes one canonical Huffman code.
type bz2Huff struct {
	table [1 << bz2TableBits]uint16 // sym<<5 | len for codes <= 10 bits, 0: longer
	first [bz2MaxCodeLen + 1]uint32 // first code of each length
	count [bz2MaxCodeLen + 1]uint32
	index [bz2MaxCodeLen + 1]uint16 // position of the first code of each length in syms
	syms  [bz2MaxSyms]uint16        // symbols sorted by (length, value)
}

func (h *bz2Huff) build(lens []uint8) error {
	clear(h.count[:])
	for _, l := range lens {
		h.count[l]++
	}
	code, idx := uint32(0), uint16(0)
	for l := 1; l <= bz2MaxCodeLen; l++ {
		h.first[l] = code
		h.index[l] = idx
		code += h.count[l]
		idx += uint16(h.count[l])
		if code > 1<<l {
			return fmt.Errorf("%w: over-subscribed Huffman code", errBz2)
		}
		code <<= 1
	}
	next := h.index
	for s, l := range lens {
		h.syms[next[l]] = uint16(s)
		next[l]++
	}
	clear(h.table[:])
	for l := 1; l <= bz2TableBits; l++ {
		for i := uint32(0); i < h.count[l]; i++ {
			sym := h.syms[uint32(h.index[l])+i]
			c := (h.first[l] + i) << (bz2TableBits - l)
			e := sym<<5 | uint16(l)
			for k := uint32(0); k < 1<<(bz2TableBits-l); k++ {
				h.table[c+k] = e
			}
		}
	}
	return nil
}

// bz2Bits reads the section MSB first. Past its end it feeds zero bits and
// counts them, so a stream cut short fails at the next check, not with a
// read error in the middle of a code.
type bz2Bits struct {
	r    *bufio.Reader
	left int64 // section bytes not yet read into acc
	acc  uint64
	n    uint // valid bits in acc (the low n bits; the next bit is bit n-1)
	over uint // zero bits fed past the section's end
	err  error
}

// fill tops acc up to at least 57 bits.
func (b *bz2Bits) fill() {
	for b.n <= 56 {
		var c byte
		if b.left > 0 {
			var err error
			if c, err = b.r.ReadByte(); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				b.err, b.left = err, 0
				c = 0
				b.over += 8
			} else {
				b.left--
			}
		} else {
			b.over += 8
		}
		b.acc = b.acc<<8 | uint64(c)
		b.n += 8
	}
}

// bits reads k <= 32 bits.
func (b *bz2Bits) bits(k uint) uint32 {
	if b.n < k {
		b.fill()
	}
	b.n -= k
	return uint32(b.acc>>b.n) & (1<<k - 1)
}

// short reports a read past the end of the section.
func (b *bz2Bits) short() error {
	if b.n < b.over {
		if b.err != nil {
			return fmt.Errorf("%w: %v", errBz2, b.err)
		}
		return fmt.Errorf("%w: %v", errBz2, io.ErrUnexpectedEOF)
	}
	return nil
}

// decode reads one symbol of h.
func (b *bz2Bits) decode(h *bz2Huff) (uint16, error) {
	if b.n < bz2MaxCodeLen {
		b.fill()
	}
	e := h.table[(b.acc>>(b.n-bz2TableBits))&(1<<bz2TableBits-1)]
	if e != 0 {
		b.n -= uint(e & 31)
		return e >> 5, nil
	}
	for l := uint(bz2TableBits + 1); l <= bz2MaxCodeLen; l++ {
		c := uint32(b.acc>>(b.n-l)) & (1<<l - 1)
		if d := c - h.first[l]; d < h.count[l] {
			b.n -= l
			return h.syms[uint32(h.index[l])+d], nil
		}
	}
	return 0, fmt.Errorf("%w: bad Huffman code", errBz2)
}

// bz2Reader is an io.Reader over one bzip2 stream in a section of n bytes.
type bz2Reader struct {
	br        bz2Bits
	tt        []uint32 // BWT block state, kept across streams
	blockMax  int      // the stream header's block size
	streamCRC uint32
	done      bool // the end-of-stream marker and CRC were read
	// output of the current block
	tPos    uint32
	left    int // BWT bytes not yet emitted
	last    int // previous output byte (-1 at block start)
	run     int // how many times last has been repeated in a row
	repeat  int // pending copies of last from a run-length byte
	crc     uint32
	wantCRC uint32
	inBlock bool
	huff    [6]bz2Huff
	sel     []uint8
	lens    [bz2MaxSyms]uint8
}

// reset starts reading one stream from the next n bytes of r.
func (z *bz2Reader) reset(r *bufio.Reader, n int64) error {
	z.br = bz2Bits{r: r, left: n}
	z.streamCRC, z.done, z.inBlock = 0, false, false
	if z.br.bits(24) != 'B'<<16|'Z'<<8|'h' {
		return fmt.Errorf("%w: bad stream header", errBz2)
	}
	lvl := z.br.bits(8)
	if lvl < '1' || lvl > '9' {
		return fmt.Errorf("%w: bad block size", errBz2)
	}
	if err := z.br.short(); err != nil {
		return err
	}
	z.blockMax = int(lvl-'0') * 100000
	if cap(z.tt) < z.blockMax {
		z.tt = make([]uint32, z.blockMax)
	}
	return nil
}

// finish checks that the stream ends here (reading its end checks the last
// block's CRC and the stream CRC) and that nothing but the final byte's
// padding follows it in the section.
func (z *bz2Reader) finish() error {
	var one [1]byte
	if n, err := z.Read(one[:]); n != 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("%w: stream longer than its window needs", errBz2)
		}
		return err
	}
	if br := &z.br; br.left > 0 || (br.n > br.over && br.n-br.over >= 8) {
		return fmt.Errorf("%w: data after the stream", errBz2)
	}
	return nil
}

func (z *bz2Reader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if z.repeat > 0 || z.left > 0 {
			n += z.emit(p[n:])
			continue
		}
		if z.inBlock {
			z.inBlock = false
			if ^z.crc != z.wantCRC {
				return n, fmt.Errorf("%w: block checksum mismatch", errBz2)
			}
			z.streamCRC = (z.streamCRC<<1 | z.streamCRC>>31) ^ z.wantCRC
		}
		if z.done {
			if n > 0 {
				return n, nil
			}
			return 0, io.EOF
		}
		if err := z.readBlock(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// emit undoes the initial run-length step (4 equal bytes, then a count of
// further copies) while walking the BWT permutation.
func (z *bz2Reader) emit(p []byte) int {
	tt, tPos, crc := z.tt, z.tPos, z.crc
	last, run, repeat, left := z.last, z.run, z.repeat, z.left
	i := 0
	for i < len(p) {
		if repeat > 0 {
			k := min(repeat, len(p)-i)
			b := byte(last)
			for j := 0; j < k; j++ {
				p[i+j] = b
				crc = crc<<8 ^ bz2CRCTable[byte(crc>>24)^b]
			}
			i += k
			repeat -= k
			continue
		}
		if left == 0 {
			break
		}
		tPos = tt[tPos]
		b := int(tPos & 0xff)
		tPos >>= 8
		left--
		if run == 4 {
			repeat, run = b, 0
			continue
		}
		if b == last {
			run++
		} else {
			last, run = b, 1
		}
		p[i] = byte(b)
		crc = crc<<8 ^ bz2CRCTable[byte(crc>>24)^byte(b)]
		i++
	}
	z.tPos, z.crc = tPos, crc
	z.last, z.run, z.repeat, z.left = last, run, repeat, left
	return i
}

// readBlock reads the next block, or the end-of-stream marker.
func (z *bz2Reader) readBlock() error {
	br := &z.br
	magic := uint64(br.bits(24))<<24 | uint64(br.bits(24))
	if magic == 0x177245385090 {
		crc := br.bits(32)
		if err := br.short(); err != nil {
			return err
		}
		if crc != z.streamCRC {
			return fmt.Errorf("%w: stream checksum mismatch", errBz2)
		}
		z.done = true
		return nil
	}
	if magic != 0x314159265359 {
		return fmt.Errorf("%w: bad block magic", errBz2)
	}
	z.wantCRC = br.bits(32)
	if br.bits(1) != 0 {
		return fmt.Errorf("%w: randomised block", errBz2)
	}
	origPtr := int(br.bits(24))

	// Symbol map: 16 ranges of 16 bytes.
	var seqToUnseq [256]byte
	nInUse := 0
	ranges := br.bits(16)
	for r := 0; r < 16; r++ {
		if ranges&(1<<(15-r)) == 0 {
			continue
		}
		bits := br.bits(16)
		for k := 0; k < 16; k++ {
			if bits&(1<<(15-k)) != 0 {
				seqToUnseq[nInUse] = byte(r*16 + k)
				nInUse++
			}
		}
	}
	if nInUse == 0 {
		return fmt.Errorf("%w: no symbols in use", errBz2)
	}
	alpha := nInUse + 2
	nTrees := int(br.bits(3))
	nSel := int(br.bits(15))
	if nTrees < 2 || nTrees > 6 || nSel == 0 {
		return fmt.Errorf("%w: %d tables, %d selectors", errBz2, nTrees, nSel)
	}
	if err := br.short(); err != nil {
		return err
	}
	// Selectors, move-to-front coded in unary.
	if cap(z.sel) < nSel {
		z.sel = make([]uint8, nSel)
	}
	sel := z.sel[:nSel]
	mtf := [6]uint8{0, 1, 2, 3, 4, 5}
	for i := range sel {
		k := 0
		for br.bits(1) == 1 {
			if k++; k >= nTrees {
				return fmt.Errorf("%w: bad selector", errBz2)
			}
		}
		v := mtf[k]
		copy(mtf[1:k+1], mtf[:k])
		mtf[0] = v
		sel[i] = v
	}
	if err := br.short(); err != nil {
		return err
	}
	// Code lengths, delta coded.
	lens := z.lens[:alpha]
	for t := 0; t < nTrees; t++ {
		l := int(br.bits(5))
		for s := range lens {
			for br.bits(1) == 1 {
				if br.bits(1) == 0 {
					l++
				} else {
					l--
				}
				if l < 1 || l > bz2MaxCodeLen {
					return fmt.Errorf("%w: code length %d", errBz2, l)
				}
			}
			if l < 1 || l > bz2MaxCodeLen {
				return fmt.Errorf("%w: code length %d", errBz2, l)
			}
			lens[s] = uint8(l)
		}
		if err := br.short(); err != nil {
			return err
		}
		if err := z.huff[t].build(lens); err != nil {
			return err
		}
	}

	// Symbols: MTF indices with zero runs as RUNA/RUNB, up to EOB.
	var order [256]byte
	copy(order[:], seqToUnseq[:nInUse])
	var counts [256]int
	tt := z.tt[:z.blockMax]
	eob := uint16(alpha - 1)
	n := 0
	runLen, runShift := 0, 0
	g, inGroup := 0, 0
	var h *bz2Huff
	// The bit buffer lives in locals here (the hot loop of the decoder) and
	// goes back to br around fills and the slow path.
	acc, nb := br.acc, br.n
	for {
		if inGroup == 0 {
			if g >= nSel {
				return fmt.Errorf("%w: more symbol groups than selectors", errBz2)
			}
			h = &z.huff[sel[g]]
			g++
			inGroup = bz2GroupSize
		}
		inGroup--
		if nb < bz2MaxCodeLen {
			br.acc, br.n = acc, nb
			br.fill()
			acc, nb = br.acc, br.n
		}
		var sym uint16
		if e := h.table[(acc>>(nb-bz2TableBits))&(1<<bz2TableBits-1)]; e != 0 {
			nb -= uint(e & 31)
			sym = e >> 5
		} else {
			br.acc, br.n = acc, nb
			var err error
			if sym, err = br.decode(h); err != nil {
				return err
			}
			nb = br.n
		}
		if sym <= 1 { // RUNA, RUNB
			if runShift > 20 {
				return fmt.Errorf("%w: run too long", errBz2)
			}
			runLen += int(sym+1) << runShift
			runShift++
			continue
		}
		if runLen > 0 {
			if runLen > len(tt)-n {
				return fmt.Errorf("%w: block too long", errBz2)
			}
			b := order[0]
			counts[b] += runLen
			for k := 0; k < runLen; k++ {
				tt[n+k] = uint32(b)
			}
			n += runLen
			runLen, runShift = 0, 0
		}
		if sym == eob {
			break
		}
		if sym >= eob || n >= len(tt) {
			return fmt.Errorf("%w: bad symbol or block too long", errBz2)
		}
		k := int(sym - 1)
		b := order[k]
		copy(order[1:k+1], order[:k])
		order[0] = b
		counts[b]++
		tt[n] = uint32(b)
		n++
		if nb < br.over {
			break // past the end: br.short reports it
		}
	}
	br.acc, br.n = acc, nb
	if err := br.short(); err != nil {
		return err
	}
	if origPtr >= n {
		return fmt.Errorf("%w: origin pointer outside the block", errBz2)
	}
	// Inverse BWT: link each position to the next output byte.
	sum := 0
	for i := range counts {
		c := counts[i]
		counts[i] = sum
		sum += c
	}
	for i := 0; i < n; i++ {
		b := tt[i] & 0xff
		tt[counts[b]] |= uint32(i) << 8
		counts[b]++
	}
	z.tPos = tt[origPtr] >> 8
	z.left, z.last, z.run, z.repeat = n, -1, 0, 0
	z.crc = ^uint32(0)
	z.inBlock = true
	return nil
}
