package delta

import "encoding/binary"

// Diff bytes are differences of little-endian words aligned on the new
// image's offset: each aligned 4-byte word (or the part of it an operation
// covers) is new - old modulo 2^(8·len). Shifted code and data change
// addresses and offsets stored as words; a word difference keeps a constant
// shift one constant value instead of spreading carries over several bytes,
// which compresses markedly better.

// appendDiff appends the diff of nb against ob, nb starting at new offset pos.
func appendDiff(diff, nb, ob []byte, pos int64) []byte {
	start := len(diff)
	diff = append(diff, nb...)
	d := diff[start:]
	forWords(len(d), pos, func(i, j int) {
		if j-i == 4 {
			binary.LittleEndian.PutUint32(d[i:], binary.LittleEndian.Uint32(nb[i:])-binary.LittleEndian.Uint32(ob[i:]))
			return
		}
		borrow := 0
		for k := i; k < j; k++ {
			v := int(nb[k]) - int(ob[k]) - borrow
			d[k] = byte(v)
			borrow = 0
			if v < 0 {
				borrow = 1
			}
		}
	})
	return diff
}

// addDiffWords adds diff d to dst in place, dst starting at new offset pos.
func addDiffWords(dst, d []byte, pos int64) {
	n := len(d)
	i := 0
	if r := int(pos & 3); r != 0 {
		i = min(n, 4-r)
		addPartial(dst[:i], d[:i])
	}
	for ; i+4 <= n; i += 4 {
		if y := binary.LittleEndian.Uint32(d[i:]); y != 0 {
			binary.LittleEndian.PutUint32(dst[i:], binary.LittleEndian.Uint32(dst[i:])+y)
		}
	}
	if i < n {
		addPartial(dst[i:n], d[i:n])
	}
}

// addPartial adds d to dst as little-endian numbers of len(d) bytes.
func addPartial(dst, d []byte) {
	carry := 0
	for k := range d {
		v := int(dst[k]) + int(d[k]) + carry
		dst[k] = byte(v)
		carry = v >> 8
	}
}

// forWords calls fn(i, j) for each piece [i, j) of [0, n) that lies in one
// aligned word of the image, where index 0 is at image offset pos.
func forWords(n int, pos int64, fn func(i, j int)) {
	i := 0
	if r := int(pos & 3); r != 0 {
		i = min(n, 4-r)
		fn(0, i)
	}
	for ; i+4 <= n; i += 4 {
		fn(i, i+4)
	}
	if i < n {
		fn(i, n)
	}
}

// sparseTokens writes diff as tokens "uvarint zeros, uvarint n, n bytes"
// covering it exactly, each n bytes a maximal run of non-zero bytes (on the
// executable pair, keeping short zero gaps inside the runs compresses worse).
func sparseTokens(diff []byte) []byte {
	var out []byte
	for i := 0; i < len(diff); {
		z := i
		for z < len(diff) && diff[z] == 0 {
			z++
		}
		e := z
		for e < len(diff) && diff[e] != 0 {
			e++
		}
		out = appendUvarint(out, uint64(z-i))
		out = appendUvarint(out, uint64(e-z))
		out = append(out, diff[z:e]...)
		i = e
	}
	return out
}
