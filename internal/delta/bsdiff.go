package delta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"index/suffixarray"
	"math/bits"
)

// suffixArray builds the suffix array of data with the standard library's
// SA-IS implementation. index/suffixarray does not expose the array itself,
// only its serialisation, so the array is decoded from Index.Write, whose
// layout (length, data, varint chunks) is stable across Go releases because
// Index.Read must read what older releases wrote.
func suffixArray(data []byte) ([]int32, error) {
	if len(data) >= 1<<31-1 {
		return nil, errors.New("delta: suffix array input too large")
	}
	d := &saDecoder{n: len(data)}
	if err := suffixarray.New(data).Write(d); err != nil {
		return nil, err
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.sa) != len(data) {
		return nil, errors.New("delta: unexpected suffix array serialisation")
	}
	return d.sa, nil
}

type saDecoder struct {
	n     int
	phase int
	left  int
	sa    []int32
	err   error
}

var errSAFormat = errors.New("delta: unexpected suffix array serialisation")

func (d *saDecoder) Write(p []byte) (int, error) {
	switch d.phase {
	case 0: // length, a varint in a MaxVarintLen64-byte field
		v, k := binary.Varint(p)
		if k <= 0 || v != int64(d.n) {
			d.err = errSAFormat
			return 0, d.err
		}
		d.sa = make([]int32, 0, d.n)
		d.left = d.n
		d.phase = 1
		if d.left == 0 {
			d.phase = 2
		}
	case 1: // the data itself
		d.left -= len(p)
		if d.left < 0 {
			d.err = errSAFormat
			return 0, d.err
		}
		if d.left == 0 {
			d.phase = 2
		}
	case 2: // one chunk per call: total size, then uvarints
		size, k := binary.Varint(p)
		if k <= 0 || size != int64(len(p)) || len(p) < binary.MaxVarintLen64 {
			d.err = errSAFormat
			return 0, d.err
		}
		q := p[binary.MaxVarintLen64:]
		for len(q) > 0 {
			v, k := binary.Uvarint(q)
			if k <= 0 || v >= uint64(d.n) {
				d.err = errSAFormat
				return 0, d.err
			}
			d.sa = append(d.sa, int32(v))
			q = q[k:]
		}
	}
	return len(p), nil
}

// matchLen returns the length of the common prefix of a and b.
func matchLen(a, b []byte) int {
	n := min(len(a), len(b))
	i := 0
	for ; i+8 <= n; i += 8 {
		x := binary.LittleEndian.Uint64(a[i:]) ^ binary.LittleEndian.Uint64(b[i:])
		if x != 0 {
			return i + bits.TrailingZeros64(x)/8
		}
	}
	for ; i < n && a[i] == b[i]; i++ {
	}
	return i
}

// saIndex is a suffix array with the range of suffixes per leading
// keyLen bytes, so that a search starts inside the range that shares nw's
// first bytes. bsdiff searches at every byte of new data it cannot match,
// and in a 256 MiB array the top levels of a whole-range binary search were
// most of generation time (a major-release root file system: 91 of 120
// CPU-seconds in search).
type saIndex struct {
	sa     []int32
	bkt    []int32 // bkt[k]: suffixes whose zero-padded key is below k
	keyLen int
}

// saKeyLen is the key length for an index of n bytes: three bytes (64 MiB
// of bounds, about 16 suffixes a key in 256 MiB) once that is at most a
// quarter of the array itself (4 bytes a suffix), two below.
func saKeyLen(n int) int {
	if n >= 64<<20 {
		return 3
	}
	return 2
}

func newSAIndex(data []byte, keyLen int) (*saIndex, error) {
	sa, err := suffixArray(data)
	if err != nil {
		return nil, err
	}
	x := &saIndex{sa: sa, keyLen: keyLen}
	// Zero padding keeps the order: a suffix shorter than keyLen sorts
	// before every longer one with its bytes as a prefix, and so does its
	// padded key.
	x.bkt = make([]int32, 1<<(8*x.keyLen)+1)
	for i := range data {
		x.bkt[x.key(data[i:])+1]++
	}
	for k := 1; k < len(x.bkt); k++ {
		x.bkt[k] += x.bkt[k-1]
	}
	return x, nil
}

func (x *saIndex) key(b []byte) int {
	k := 0
	for i := 0; i < x.keyLen; i++ {
		k <<= 8
		if i < len(b) {
			k |= int(b[i])
		}
	}
	return k
}

// search finds the longest prefix of nw that occurs in old, using x: a
// binary search over the suffixes that share nw's first keyLen bytes, or
// over all of them when none does.
func (x *saIndex) search(old, nw []byte) (pos, n int) {
	sa := x.sa
	st, en := 0, len(sa)-1
	if len(nw) >= x.keyLen {
		k := x.key(nw)
		if lo, hi := int(x.bkt[k]), int(x.bkt[k+1]); hi > lo {
			st, en = lo, hi-1
		}
	}
	for en-st >= 2 {
		mid := st + (en-st)/2
		o := old[sa[mid]:]
		if bytes.Compare(o[:min(len(o), len(nw))], nw) < 0 {
			st = mid
		} else {
			en = mid
		}
	}
	a := matchLen(old[sa[st]:], nw)
	b := matchLen(old[sa[en]:], nw)
	if a > b {
		return int(sa[st]), a
	}
	return int(sa[en]), b
}

// piece is one span of the new image: an approximate match of old at oldOff
// (diff op) or, with oldOff < 0, literal bytes.
type piece struct {
	newOff, oldOff, n int
}

// splitOverlap divides the bytes both the forward extension (lenf bytes
// from lastScan/lastPos) and the backward extension (lenb bytes before
// scan/pos) claim at the point where the forward one matches best, and
// returns the shortened lengths.
func splitOverlap(old, nw []byte, lastScan, lastPos, lenf, scan, pos, lenb int) (int, int) {
	overlap := (lastScan + lenf) - (scan - lenb)
	s, ss, lens := 0, 0, 0
	for i := 0; i < overlap; i++ {
		if nw[lastScan+lenf-overlap+i] == old[lastPos+lenf-overlap+i] {
			s++
		}
		if nw[scan-lenb+i] == old[pos-lenb+i] {
			s--
		}
		if s > ss {
			ss, lens = s, i+1
		}
	}
	return lenf + lens - overlap, lenb - lens
}

// bsdiffRegion matches nw (the new bytes at newBase) against old (whose
// first byte is the old image's byte oldBase) with the bsdiff scan: find
// exact matches with the suffix array, widen them into approximate matches
// where at least half of the bytes agree, and leave the rest as literals.
// lastOffset is the old-new offset the previous region ended with.
func bsdiffRegion(sx *saIndex, old []byte, oldBase int, nw []byte, newBase int, lastOffset int, emit func(piece)) {
	oldSize, newSize := len(old), len(nw)
	if oldSize == 0 || sx == nil || len(sx.sa) == 0 {
		emit(piece{newBase, -1, newSize})
		return
	}
	lastOffset -= oldBase - newBase // into region coordinates
	var scan, pos, ln, lastScan int
	// Continue the previous region's alignment: the bytes before the first
	// exact match are diffed against the old bytes at the same offset.
	lastPos := min(max(lastOffset, 0), oldSize)
	for scan < newSize {
		oldScore := 0
		scan += ln
		for scsc := scan; scan < newSize; scan++ {
			pos, ln = sx.search(old, nw[scan:])
			for ; scsc < scan+ln; scsc++ {
				if o := scsc + lastOffset; o >= 0 && o < oldSize && old[o] == nw[scsc] {
					oldScore++
				}
			}
			if (ln == oldScore && ln != 0) || ln > oldScore+8 {
				break
			}
			if o := scan + lastOffset; o >= 0 && o < oldSize && old[o] == nw[scan] {
				oldScore--
			}
		}
		if ln == oldScore && scan != newSize {
			continue
		}
		// Forward extension of the previous match.
		s, sf, lenf := 0, 0, 0
		for i := 0; lastScan+i < scan && lastPos+i < oldSize; {
			if old[lastPos+i] == nw[lastScan+i] {
				s++
			}
			i++
			if s*2-i > sf*2-lenf {
				sf, lenf = s, i
			}
		}
		// Backward extension of the current one.
		lenb := 0
		if scan < newSize {
			s, sb := 0, 0
			for i := 1; scan >= lastScan+i && pos >= i; i++ {
				if old[pos-i] == nw[scan-i] {
					s++
				}
				if s*2-i > sb*2-lenb {
					sb, lenb = s, i
				}
			}
		}
		if lastScan+lenf > scan-lenb { // overlap: split where it scores best
			lenf, lenb = splitOverlap(old, nw, lastScan, lastPos, lenf, scan, pos, lenb)
		}
		if lenf > 0 {
			emit(piece{newBase + lastScan, oldBase + lastPos, lenf})
		}
		if x := (scan - lenb) - (lastScan + lenf); x > 0 {
			emit(piece{newBase + lastScan + lenf, -1, x})
		}
		lastScan = scan - lenb
		lastPos = pos - lenb
		lastOffset = pos - scan
	}
}
