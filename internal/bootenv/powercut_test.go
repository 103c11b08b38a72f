package bootenv

import (
	"bytes"
	"fmt"
	"testing"
)

// powerCutEnvs returns old (current), older (in the other copy) and new
// variable sets of realistic shape.
func powerCutEnvs(size int) (older, old, next *Env) {
	base := func(slot, count string) *Env {
		return envOf("bootcmd", "run otad_boot", "bootargs", "console=ttyS0,115200 rootwait",
			"otad_slot", slot, "otad_prev", "A", "upgrade_available", "1", "bootcount", count,
			"filler", string(bytes.Repeat([]byte{'x'}, size/3)))
	}
	return base("A", "0"), base("A", "1"), base("B", "0")
}

// prepared returns a medium holding older in one copy and old, current, in
// the other (after real Saves, so flags are what they would be).
func prepared(t *testing.T, size int, nor bool, scheme FlagScheme, older, old *Env) *memMedium {
	m := newMemMedium(2*size, nor)
	s := NewMediumStore([]Medium{m, m}, []int64{0, int64(size)}, int64(size), scheme)
	for _, e := range []*Env{older, older, old} {
		if err := s.Save(e); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// TestPowerCutEveryByte cuts a redundant Save after every possible number
// of bytes reaching the medium (an erase counts as one) and checks that a
// reader after power-on sees the whole old or the whole new set, never a
// mix and never the older set, and that the next Save works.
func TestPowerCutEveryByte(t *testing.T) {
	const size = 0x1000
	older, old, next := powerCutEnvs(size)
	third := envOf("after", "cut")
	for _, tc := range []struct {
		name   string
		nor    bool
		scheme FlagScheme
	}{
		{"nand-counter", false, FlagsIncrement},
		{"nor-boolean", true, FlagsBoolean},
		{"nor-counter", true, FlagsIncrement},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := prepared(t, size, tc.nor, tc.scheme, older, old)
			sawNew, sawOld := 0, 0
			for cut := 0; ; cut++ {
				m := &memMedium{data: append([]byte(nil), base.data...), nor: tc.nor, budget: cut}
				s := NewMediumStore([]Medium{m, m}, []int64{0, size}, size, tc.scheme)
				saveErr := s.Save(next)
				m.budget = -1 // power on
				got, err := NewMediumStore([]Medium{m, m}, []int64{0, size}, size, tc.scheme).Load()
				if err != nil {
					t.Fatalf("cut after %d: load: %v", cut, err)
				}
				switch {
				case got.Equal(next):
					sawNew++
				case got.Equal(old):
					sawOld++
				default:
					t.Fatalf("cut after %d: reader sees neither old nor new:\n%s", cut, got)
				}
				if err := s.Save(third); err != nil {
					t.Fatalf("cut after %d: save after power-on: %v", cut, err)
				}
				if e, _ := s.Load(); !e.Equal(third) {
					t.Fatalf("cut after %d: save after power-on lost", cut)
				}
				if saveErr == nil {
					if !got.Equal(next) {
						t.Fatalf("Save returned nil but reader sees old")
					}
					t.Logf("%d cut points: %d old, %d new", cut+1, sawOld, sawNew)
					break
				}
			}
			if sawOld == 0 || sawNew == 0 {
				t.Fatalf("cuts never produced both outcomes (old %d, new %d): the test is blind", sawOld, sawNew)
			}
		})
	}
}

// TestPowerCutSectors models a block device (no erase) whose 512-byte
// sectors of one Save may land in any order: every prefix, every single
// sector missing and every single sector alone.
func TestPowerCutSectors(t *testing.T) {
	const size, sector = 0x4000, 512
	older, old, next := powerCutEnvs(size)
	base := prepared(t, size, false, FlagsIncrement, older, old)
	done := &memMedium{data: append([]byte(nil), base.data...), budget: -1}
	if err := NewMediumStore([]Medium{done, done}, []int64{0, size}, size, FlagsIncrement).Save(next); err != nil {
		t.Fatal(err)
	}
	var changed []int
	for i := 0; i < 2*size/sector; i++ {
		if !bytes.Equal(base.data[i*sector:(i+1)*sector], done.data[i*sector:(i+1)*sector]) {
			changed = append(changed, i)
		}
	}
	if len(changed) < 2 {
		t.Fatalf("only %d sectors change; the test is blind", len(changed))
	}
	check := func(name string, landed map[int]bool) {
		img := append([]byte(nil), base.data...)
		for i := range landed {
			copy(img[i*sector:(i+1)*sector], done.data[i*sector:])
		}
		m := &memMedium{data: img, budget: -1}
		got, err := NewMediumStore([]Medium{m, m}, []int64{0, size}, size, FlagsIncrement).Load()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !got.Equal(old) && !got.Equal(next) {
			t.Fatalf("%s: reader sees a mixed environment", name)
		}
	}
	for k := 0; k <= len(changed); k++ {
		landed := map[int]bool{}
		for _, i := range changed[:k] {
			landed[i] = true
		}
		check(fmt.Sprintf("first %d sectors", k), landed)
	}
	for _, miss := range changed {
		landed := map[int]bool{}
		for _, i := range changed {
			landed[i] = i != miss
		}
		check(fmt.Sprintf("all but sector %d", miss), landed)
		check(fmt.Sprintf("only sector %d", miss), map[int]bool{miss: true})
	}
}
