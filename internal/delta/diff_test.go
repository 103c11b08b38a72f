package delta

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// Word diffs round-trip at every alignment, and adding them piecewise
// (addCarry on arbitrary runs, as the sparse decoder does) equals adding
// them whole (addDiffWords).
func TestWordDiffPiecewise(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for iter := 0; iter < 2000; iter++ {
		n := 1 + r.IntN(40)
		pos := int64(r.IntN(8))
		old, nw := randBytes(r, n), randBytes(r, n)
		for i := range nw { // mostly small changes, so carries and zero bytes mix
			if r.IntN(3) > 0 {
				nw[i] = old[i] + byte(r.IntN(3))
			}
		}
		d := appendDiff(nil, nw, old, pos)
		whole := bytes.Clone(old)
		addDiffWords(whole, d, pos)
		if !bytes.Equal(whole, nw) {
			t.Fatalf("addDiffWords: pos %d old %x new %x diff %x got %x", pos, old, nw, d, whole)
		}
		piece := bytes.Clone(old)
		for i := 0; i < n; {
			k := 1 + r.IntN(n-i)
			if d := d[i : i+k]; !bytes.Equal(d, make([]byte, k)) {
				addCarry(piece, i, d, pos)
			}
			i += k
		}
		if !bytes.Equal(piece, nw) {
			t.Fatalf("addCarry: pos %d old %x new %x diff %x got %x", pos, old, nw, d, piece)
		}
	}
}

func TestSparseTokensCoverDiff(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for iter := 0; iter < 500; iter++ {
		d := make([]byte, r.IntN(300))
		for i := range d {
			if r.IntN(5) == 0 {
				d[i] = byte(1 + r.IntN(255))
			}
		}
		tok := sparseTokens(d)
		var got []byte
		for br := bytes.NewReader(tok); br.Len() > 0; {
			z, _ := binary.ReadUvarint(br)
			n, _ := binary.ReadUvarint(br)
			got = append(got, make([]byte, z)...)
			b := make([]byte, n)
			br.Read(b)
			got = append(got, b...)
		}
		if !bytes.Equal(got, d) {
			t.Fatalf("tokens of %x decode to %x", d, got)
		}
	}
}
