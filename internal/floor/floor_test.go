package floor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/journal"
)

func TestRaiseWritesBothCopiesAndNeverLowers(t *testing.T) {
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
	// 3, 7 and 9 wrote both copies; 2 and the second 7 wrote nothing.
	a, _ := os.ReadFile(filepath.Join(s.Dir, "floor.0"))
	b, _ := os.ReadFile(filepath.Join(s.Dir, "floor.1"))
	if ca, cb := decode(a), decode(b); !ca.valid || !cb.valid || ca.floor != 9 || cb.floor != 9 || ca.seq != 3 || cb.seq != 3 {
		t.Fatalf("copies %+v %+v, want both {seq 3, floor 9}", ca, cb)
	}
}

// renameLog records the order in which copies are replaced.
type renameLog struct {
	journal.OSFS
	names []string
}

func (r *renameLog) Rename(oldpath, newpath string) error {
	r.names = append(r.names, filepath.Base(newpath))
	return r.OSFS.Rename(oldpath, newpath)
}

// TestRaiseWritesOlderCopyFirst: the copy written first is the one that
// does not hold the newest record, so a cut between the two writes leaves
// the newest record intact.
func TestRaiseWritesOlderCopyFirst(t *testing.T) {
	for _, tc := range []struct {
		name   string
		c0, c1 []byte
		first  string
	}{
		{"floor.1 stale", encode(2, 5), encode(1, 3), "floor.1"},
		{"floor.0 stale", encode(1, 3), encode(2, 5), "floor.0"},
		{"floor.1 damaged", encode(2, 5), []byte("junk"), "floor.1"},
		{"floor.0 damaged", []byte("junk"), encode(2, 5), "floor.0"},
		{"equal", encode(2, 5), encode(2, 5), "floor.0"},
		{"fresh", nil, nil, "floor.0"},
	} {
		dir := t.TempDir()
		if tc.c0 != nil {
			os.WriteFile(filepath.Join(dir, "floor.0"), tc.c0, 0o644)
			os.WriteFile(filepath.Join(dir, "floor.1"), tc.c1, 0o644)
		}
		fs := &renameLog{}
		s := &Store{FS: fs, Dir: dir}
		if err := s.Raise(6); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(fs.names) != 2 || fs.names[0] != tc.first || fs.names[0] == fs.names[1] {
			t.Errorf("%s: copies written in order %v, want %s first and both", tc.name, fs.names, tc.first)
		}
		if v, err := s.Get(); err != nil || v != 6 {
			t.Errorf("%s: floor %d %v after Raise(6)", tc.name, v, err)
		}
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

// TestNoValidCopyRefusesUntilReset: once raised, no valid copy at all is
// an error that says what to do, Raise refuses too, and Reset starts over.
func TestNoValidCopyRefusesUntilReset(t *testing.T) {
	for _, damage := range []struct {
		name   string
		c0, c1 []byte // nil: remove the file
	}{
		{"both damaged", []byte("junkjunkjunkjunkjunkjunk"), []byte("x")},
		{"floor.0 missing, floor.1 damaged", nil, encode(1, 5)[:20]},
		{"both empty", []byte{}, []byte{}},
	} {
		s := New(t.TempDir())
		s.Raise(4)
		s.Raise(5)
		for i, b := range [][]byte{damage.c0, damage.c1} {
			p := filepath.Join(s.Dir, fmt.Sprintf("floor.%d", i))
			if b == nil {
				os.Remove(p)
			} else {
				os.WriteFile(p, b, 0o644)
			}
		}
		_, err := s.Get()
		if !errors.Is(err, ErrNoValidCopy) || !strings.Contains(err.Error(), "otad floor reset") {
			t.Fatalf("%s: Get: %v", damage.name, err)
		}
		if err := s.Raise(9); !errors.Is(err, ErrNoValidCopy) {
			t.Fatalf("%s: Raise: %v", damage.name, err)
		}
		if err := s.Reset(5); err != nil {
			t.Fatal(err)
		}
		if h, err := s.Check(); err != nil || h.Floor != 5 || len(h.Damaged) != 0 {
			t.Fatalf("%s: after Reset(5): %+v %v", damage.name, h, err)
		}
	}
}

// TestLowerBound: the journal's committed security version is a floor the
// store never reads below, and knowing that a raise happened it turns "no
// copy" into a refusal instead of "never raised".
func TestLowerBound(t *testing.T) {
	lower := uint64(7)
	s := New(t.TempDir())
	s.Lower = func() (uint64, error) { return lower, nil }
	// No copy at all but the journal records a commit at 7: refused.
	if _, err := s.Get(); !errors.Is(err, ErrNoValidCopy) {
		t.Fatalf("no copies, lower 7: %v", err)
	}
	// An older otad's layout: only floor.0, damaged (or a torn first raise).
	os.WriteFile(filepath.Join(s.Dir, "floor.0"), encode(1, 7)[:10], 0o644)
	if _, err := s.Get(); !errors.Is(err, ErrNoValidCopy) {
		t.Fatalf("legacy floor.0 damaged, lower 7: %v", err)
	}
	lower = 0
	if v, err := s.Get(); err != nil || v != 0 {
		t.Fatalf("torn first raise, nothing committed: %d %v", v, err)
	}
	// Copies behind the journal (an older otad, one copy): the journal wins
	// and the damage is reported; a raise to the same value heals them.
	os.WriteFile(filepath.Join(s.Dir, "floor.0"), encode(1, 4), 0o644)
	lower = 7
	h, err := s.Check()
	if err != nil || h.Floor != 7 || len(h.Damaged) != 2 {
		t.Fatalf("stale legacy copy: %+v %v", h, err)
	}
	if err := s.Raise(7); err != nil {
		t.Fatal(err)
	}
	s.Lower = nil
	if h, err := s.Check(); err != nil || h.Floor != 7 || len(h.Damaged) != 0 {
		t.Fatalf("after Raise(7) heals: %+v %v", h, err)
	}
	// A failing bound is an error, not a lower floor.
	s.Lower = func() (uint64, error) { return 0, errors.New("journal unreadable") }
	if _, err := s.Get(); err == nil {
		t.Fatal("Get ignored a failing lower bound")
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

// TestJournalBound reads the committed install record and the slots'
// commit records, ignores records not committed, and fails on a corrupt
// record instead of guessing.
func TestJournalBound(t *testing.T) {
	j, err := journal.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	lower := JournalBound(j, "A", "B")
	if v, err := lower(); err != nil || v != 0 {
		t.Fatalf("empty journal: %d %v", v, err)
	}
	j.Save(&journal.Record{State: journal.StateWriting, Bundle: journal.Bundle{SecurityVersion: 9}})
	if v, _ := lower(); v != 0 {
		t.Fatalf("an install being written counted: %d", v)
	}
	j.Save(&journal.Record{State: journal.StateCommitted, Bundle: journal.Bundle{SecurityVersion: 4}})
	j.SaveSlot(&journal.SlotRecord{Name: "B", State: journal.SlotGood, CommittedSecurityVersion: 6})
	if v, _ := lower(); v != 6 {
		t.Fatalf("bound %d, want 6", v)
	}
	os.WriteFile(filepath.Join(j.Dir, "slot-A.json"), []byte("{"), 0o644)
	if _, err := lower(); !errors.Is(err, journal.ErrCorrupt) {
		t.Fatalf("corrupt slot record: %v", err)
	}
}
