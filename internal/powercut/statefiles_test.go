package powercut

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/journal"
)

// The crash FS itself: synced data and names survive, un-synced ones do not
// under LoseUnsynced, and every call after the cut fails.
func TestCrashFSLosesUnsynced(t *testing.T) {
	d := NewDomain(LoseUnsynced, 1)
	c := NewCrashFS(d)
	if err := c.MkdirAll("/data", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := journal.WriteFileAtomic(c, "/data/a", []byte("old")); err != nil {
		t.Fatal(err)
	}
	f, err := c.OpenFile("/data/a", 0x1|0x200, 0) // O_WRONLY|O_TRUNC
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("new but never synced")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	nf, err := c.OpenFile("/data/b", 0x1|0x40, 0o644) // O_WRONLY|O_CREATE
	if err != nil {
		t.Fatal(err)
	}
	nf.Write([]byte("b"))
	nf.Sync() // data durable, name not
	nf.Close()
	d.CutAt(d.Ops() + 1)
	if err := c.SyncDir("/data"); !errors.Is(err, ErrPowerCut) {
		t.Fatalf("cut SyncDir: %v", err)
	}
	if _, err := journal.ReadFile(c, "/data/a"); !errors.Is(err, ErrPowerCut) {
		t.Fatalf("read without power: %v", err)
	}
	d.PowerOn()
	if b, err := journal.ReadFile(c, "/data/a"); err != nil || string(b) != "old" {
		t.Fatalf("after cut a = %q, %v; want the synced %q", b, err, "old")
	}
	if _, err := journal.ReadFile(c, "/data/b"); err == nil {
		t.Fatal("b survived without SyncDir")
	}
}

// sweep runs seq with a cut at every one of its operations, in every tear
// mode and a few seeds, then checks state after power-on with check(i),
// where i is the index of the step that was cut. It returns the number of
// cut points.
func sweep(t *testing.T, steps int, setup func(*CrashFS), step func(c *CrashFS, i int) error,
	check func(c *CrashFS, cutStep int) error) int {
	t.Helper()
	d := NewDomain(LoseUnsynced, 0)
	c := NewCrashFS(d)
	setup(c)
	d.ResetOps()
	for i := 0; i < steps; i++ {
		if err := step(c, i); err != nil {
			t.Fatalf("uncut step %d: %v", i, err)
		}
	}
	n := d.Ops()
	points := 0
	for k := 1; k <= n; k++ {
		for _, mode := range []TearMode{LoseUnsynced, KeepUnsynced, TearRandom, TearRandom, TearRandom} {
			points++
			d := NewDomain(mode, uint64(k*7+points))
			c := NewCrashFS(d)
			setup(c)
			d.ResetOps()
			d.CutAt(k)
			cut := -1
			for i := 0; i < steps; i++ {
				if err := step(c, i); err != nil {
					if !errors.Is(err, ErrPowerCut) {
						t.Fatalf("cut %d (%v): step %d: %v", k, mode, i, err)
					}
					cut = i
					break
				}
			}
			if cut < 0 {
				t.Fatalf("cut %d of %d never happened", k, n)
			}
			d.PowerOn()
			if err := check(c, cut); err != nil {
				t.Errorf("cut at op %d (step %d, %v): %v", k, cut, mode, err)
				continue
			}
			// The file system must stay usable: finish the sequence.
			for i := cut; i < steps; i++ {
				if err := step(c, i); err != nil {
					t.Errorf("cut at op %d (%v): step %d after power-on: %v", k, mode, i, err)
					break
				}
			}
		}
	}
	return points
}

func TestPowerCutJournalSaves(t *testing.T) {
	const steps = 12
	rec := func(i int) *journal.Record {
		return &journal.Record{State: journal.StateWriting, Tx: fmt.Sprintf("tx-%d", i), Target: "B", Active: "A",
			Resume: journal.Resume{Chunks: i, Bytes: int64(i) << 14}, Updated: time.Unix(int64(i), 0).UTC()}
	}
	j := func(c *CrashFS) *journal.Journal { return &journal.Journal{FS: c, Dir: "/data"} }
	setup := func(c *CrashFS) {
		if err := c.MkdirAll("/data", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	step := func(c *CrashFS, i int) error {
		if i%3 == 2 {
			return j(c).UpdateSlot("B", func(s *journal.SlotRecord) { s.State, s.Version = journal.SlotPending, fmt.Sprint(i) })
		}
		return j(c).Save(rec(i))
	}
	check := func(c *CrashFS, cut int) error {
		got, err := j(c).Load()
		if err != nil {
			return fmt.Errorf("journal unreadable after the cut: %w", err)
		}
		// The last completed save, or the one in flight.
		last := -1
		for i := 0; i < cut; i++ {
			if i%3 != 2 {
				last = i
			}
		}
		ok := (last < 0 && got.State == journal.StateIdle) || (last >= 0 && got.Tx == rec(last).Tx)
		if cut%3 != 2 && got.Tx == rec(cut).Tx {
			ok = true
		}
		if !ok {
			return fmt.Errorf("journal holds %q (state %s), want tx-%d or tx-%d", got.Tx, got.State, last, cut)
		}
		s, err := j(c).LoadSlot("B")
		if err != nil {
			return fmt.Errorf("slot record unreadable: %w", err)
		}
		lastSlot := ""
		for i := 0; i < cut; i++ {
			if i%3 == 2 {
				lastSlot = fmt.Sprint(i)
			}
		}
		if s.Version != lastSlot && !(cut%3 == 2 && s.Version == fmt.Sprint(cut)) {
			return fmt.Errorf("slot record version %q, want %q", s.Version, lastSlot)
		}
		return nil
	}
	n := sweep(t, steps, setup, step, check)
	t.Logf("journal: %d cut points, 0 violations", n)
}

func TestPowerCutFloorRaises(t *testing.T) {
	vals := []uint64{1, 2, 2, 5, 3, 9, 10, 11, 40}
	st := func(c *CrashFS) *floor.Store { return &floor.Store{FS: c, Dir: "/data"} }
	setup := func(c *CrashFS) {
		if err := c.MkdirAll("/data", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	step := func(c *CrashFS, i int) error { return st(c).Raise(vals[i]) }
	check := func(c *CrashFS, cut int) error {
		got, err := st(c).Get()
		if err != nil {
			return fmt.Errorf("floor unreadable after the cut: %w", err)
		}
		var before uint64
		for _, v := range vals[:cut] {
			before = max(before, v)
		}
		if got < before {
			return fmt.Errorf("floor went down: %d, was %d", got, before)
		}
		if got > max(before, vals[cut]) {
			return fmt.Errorf("floor %d above anything raised (%d)", got, max(before, vals[cut]))
		}
		return nil
	}
	n := sweep(t, len(vals), setup, step, check)
	t.Logf("floor: %d cut points, 0 violations", n)
}
