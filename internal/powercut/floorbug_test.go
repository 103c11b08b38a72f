package powercut

import (
	"errors"
	"testing"

	"github.com/otadev/otad/internal/floor"
)

// TestPowerCutFloorFirstRaiseTorn is the regression test of a finding of
// the campaign in package floor (fixed in 2195cde: an invalid floor.0 with
// no floor.1 now reads as 0). On a device whose floor was never raised, the
// first Raise creates floor.0 and writes its 24-byte record; floor.1 does
// not exist. If the power goes before that write is durable, a file system
// may keep the file with a partial or zero-filled record (data=writeback
// ext4, XFS: size committed, data not). floor.Store.Get then saw one
// existing copy, no valid one, and returned ErrNoValidCopy — for good: the
// engine checks the floor before every install (openBundle), so otad never
// installed again. The package comment's claim "a single torn write cannot
// do it, since the other copy is never touched" missed that on the first
// raise there is no other copy. The floor before the cut was 0 and must
// read as 0 (or the new value), never as an error.
func TestPowerCutFloorFirstRaiseTorn(t *testing.T) {
	hits := 0
	for seed := uint64(1); seed <= 16; seed++ {
		d := NewDomain(KeepUnsynced, seed)
		c := NewCrashFS(d)
		if err := c.MkdirAll(dataDir, 0o755); err != nil {
			t.Fatal(err)
		}
		d.ResetOps()
		// Raise: MkdirAll (1), create floor.0 (2), write the record (3) -
		// cut there: a random prefix of the record reaches the file.
		d.CutAt(3)
		s := &floor.Store{FS: c, Dir: dataDir}
		if err := s.Raise(2); !errors.Is(err, ErrPowerCut) {
			t.Fatalf("seed %d: raise: %v, want a power cut", seed, err)
		}
		d.PowerOn()
		got, err := s.Get()
		if err != nil {
			hits++
			if hits == 1 {
				b, _ := c.ReadDurable(dataDir + "/floor.0")
				t.Errorf("seed %d: after a cut in the first Raise(2), floor.0 holds %d of 24 bytes, floor.1 does not exist, "+
					"and Get() = %v: the floor (0 before, at most 2 after) is unreadable and every later install is refused", seed, len(b), err)
			}
			continue
		}
		if got != 0 && got != 2 {
			t.Errorf("seed %d: floor %d after a cut in Raise(2) from 0", seed, got)
		}
	}
	if hits > 0 {
		t.Logf("%d of 16 torn first raises left the floor unreadable", hits)
	}
}
