package delta

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// The bucketed search finds a longest match, whatever the key length, on
// data with long repeats and a small alphabet (many shared prefixes, short
// suffixes at the end, empty buckets).
func TestSAIndexSearch(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, alpha := range []int{2, 4, 256} {
		old := make([]byte, 20000)
		for i := range old {
			old[i] = byte(r.IntN(alpha))
		}
		copy(old[9000:], old[1000:3000]) // a long repeat
		for _, keyLen := range []int{2, 3} {
			x, err := newSAIndex(old, keyLen)
			if err != nil {
				t.Fatal(err)
			}
			for k := 0; k+1 < len(x.bkt); k++ {
				for _, p := range x.sa[x.bkt[k]:x.bkt[k+1]] {
					if x.key(old[p:]) != k {
						t.Fatalf("alphabet %d, key length %d: suffix %d in bucket %d has key %d", alpha, keyLen, p, k, x.key(old[p:]))
					}
				}
			}
			for q := 0; q < 200; q++ {
				var nw []byte
				switch q % 3 {
				case 0: // a piece of old, mutated past some point
					at := r.IntN(len(old) - 100)
					nw = bytes.Clone(old[at : at+1+r.IntN(99)])
					nw[len(nw)-1] ^= 1
				case 1: // random
					nw = make([]byte, 1+r.IntN(40))
					for i := range nw {
						nw[i] = byte(r.IntN(alpha))
					}
				default: // the end of old (short suffixes), then more
					nw = append(bytes.Clone(old[len(old)-1-r.IntN(3):]), byte(r.IntN(alpha)))
				}
				pos, n := x.search(old, nw)
				best := 0
				for p := range old {
					best = max(best, matchLen(old[p:], nw))
				}
				if n != best || matchLen(old[pos:], nw) != n {
					t.Fatalf("alphabet %d, key length %d, query %x: got %d at %d, longest %d", alpha, keyLen, nw, n, pos, best)
				}
			}
		}
	}
}
