package floor

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

// TestNoSingleCorruptionLowersTheFloor changes every byte of each copy to
// every other value, and truncates each copy at every length, after 1, 2
// and 3 raises: the floor read back is always the floor that was raised
// (one damaged copy is never a reason to go lower, nor to stop installs).
// Before the two-copy raise, after the first raise only floor.0 existed and
// any damage read as floor 0; after two raises, damage to the newest copy
// read as the previous floor.
func TestNoSingleCorruptionLowersTheFloor(t *testing.T) {
	corruptEachCopy(t, false)
}

// TestJournalBoundBacksALoneCopy: the layout an older otad left (floor.0
// only, floor.1 removed here) with the journal's committed security
// version as Lower: every damage to the lone copy reads as that version or
// refuses installs (ErrNoValidCopy), never lower.
func TestJournalBoundBacksALoneCopy(t *testing.T) {
	corruptEachCopy(t, true)
}

func corruptEachCopy(t *testing.T, lone bool) {
	raises := []uint64{3, 5, 8}
	for n := 1; n <= len(raises); n++ {
		t.Run(fmt.Sprintf("after%d", n), func(t *testing.T) {
			mem := newMemFS()
			s := &Store{FS: mem, Dir: "/data"}
			for _, v := range raises[:n] {
				if err := s.Raise(v); err != nil {
					t.Fatal(err)
				}
			}
			want := raises[n-1]
			if lone {
				mem.Remove(s.path(1))
				s.Lower = func() (uint64, error) { return want, nil }
			}
			failures := 0
			check := func(what string) {
				v, err := s.Get()
				if lone && errors.Is(err, ErrNoValidCopy) {
					return
				}
				if err != nil || v != want {
					failures++
					if failures <= 3 {
						t.Errorf("%s: floor %d, %v; want %d", what, v, err, want)
					}
				}
			}
			for i := 0; i < 2; i++ {
				p := s.path(i)
				orig, ok := mem.get(p)
				if !ok {
					t.Logf("%s does not exist after %d raise(s)", filepath.Base(p), n)
					continue
				}
				put := func(b []byte) { mem.put(p, b) }
				for off := range orig {
					for x := 0; x < 256; x++ {
						if byte(x) == orig[off] {
							continue
						}
						b := append([]byte(nil), orig...)
						b[off] = byte(x)
						put(b)
						check(fmt.Sprintf("%s byte %d = %#02x", filepath.Base(p), off, x))
					}
				}
				for l := 0; l < len(orig); l++ {
					put(orig[:l])
					check(fmt.Sprintf("%s truncated to %d bytes", filepath.Base(p), l))
				}
				put(orig)
			}
			if failures > 0 {
				t.Errorf("%d damaged copies lowered the floor or made it unreadable", failures)
			}
		})
	}
}
