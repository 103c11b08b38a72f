package floor

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRaiseAlternatesAndNeverLowers(t *testing.T) {
	s := New(t.TempDir())
	if v, err := s.Get(); err != nil || v != 0 {
		t.Fatalf("fresh floor %d %v", v, err)
	}
	for _, v := range []uint64{3, 2, 7, 7, 9} {
		if err := s.Raise(v); err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := s.Get(); v != 9 {
		t.Fatalf("floor %d, want 9", v)
	}
	// 3 → floor.0, 7 → floor.1, 9 → floor.0: both copies in use.
	a, _ := os.ReadFile(filepath.Join(s.Dir, "floor.0"))
	b, _ := os.ReadFile(filepath.Join(s.Dir, "floor.1"))
	if decode(a).floor != 9 || decode(b).floor != 7 {
		t.Fatalf("copies %+v %+v", decode(a), decode(b))
	}
}

// TestTornRaise damages the copy being written in every way a torn write
// can (every prefix of the new record over the old one, and garbage): the
// floor read back is the old or the new value, never lower.
func TestTornRaise(t *testing.T) {
	for cut := 0; cut <= recSize; cut++ {
		s := New(t.TempDir())
		s.Raise(5)
		s.Raise(6) // floor.0 = {1,5}, floor.1 = {2,6}; next raise writes floor.0
		old, _ := os.ReadFile(filepath.Join(s.Dir, "floor.0"))
		torn := append(encode(3, 10)[:cut], old[cut:]...)
		os.WriteFile(filepath.Join(s.Dir, "floor.0"), torn, 0o644)
		v, err := s.Get()
		if err != nil || (v != 6 && v != 10) {
			t.Fatalf("cut at %d: floor %d %v", cut, v, err)
		}
		// A following raise still works and lands in the damaged copy.
		if err := s.Raise(11); err != nil {
			t.Fatal(err)
		}
		if v, _ := s.Get(); v != 11 {
			t.Fatalf("cut at %d: after re-raise %d", cut, v)
		}
	}
}

func TestBothCopiesDamaged(t *testing.T) {
	s := New(t.TempDir())
	s.Raise(4)
	s.Raise(5)
	os.WriteFile(filepath.Join(s.Dir, "floor.0"), []byte("junkjunkjunkjunkjunkjunk"), 0o644)
	os.WriteFile(filepath.Join(s.Dir, "floor.1"), []byte("x"), 0o644)
	if _, err := s.Get(); !errors.Is(err, ErrNoValidCopy) {
		t.Fatalf("got %v", err)
	}
}

func TestMem(t *testing.T) {
	m := &Mem{}
	m.Raise(4)
	m.Raise(2)
	if v, _ := m.Get(); v != 4 {
		t.Fatalf("mem floor %d", v)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encode(1, 2))
	f.Add([]byte("OTFL"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := decode(b)
		if r.valid && string(encode(r.seq, r.floor)) != string(b[:recSize]) {
			t.Fatal("decode accepted a record that does not re-encode")
		}
	})
}

// The first raise creates floor.0; a cut before its record is durable can
// leave the file with a partial or zeroed record and no floor.1. That is
// "never raised", not an unreadable floor (finding of the power-cut
// campaign, internal/powercut TestFloorFirstRaiseTornLeavesNoValidCopy).
func TestFirstRaiseTorn(t *testing.T) {
	for _, torn := range [][]byte{{}, make([]byte, recSize), encode(1, 9)[:10]} {
		s := New(t.TempDir())
		os.WriteFile(filepath.Join(s.Dir, "floor.0"), torn, 0o644)
		if v, err := s.Get(); err != nil || v != 0 {
			t.Fatalf("torn first raise %x: floor %d %v, want 0", torn, v, err)
		}
		if err := s.Raise(9); err != nil {
			t.Fatal(err)
		}
		if v, _ := s.Get(); v != 9 {
			t.Fatalf("raise after torn first raise: %d", v)
		}
	}
}
