package bootenv_test

import (
	"errors"
	"testing"

	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/mtd"
	"github.com/otadev/otad/internal/mtd/mtdtest"
)

func env(kv ...string) *bootenv.Env {
	e := bootenv.NewEnv()
	for i := 0; i+1 < len(kv); i += 2 {
		e.Set(kv[i], kv[i+1])
	}
	return e
}

// TestFlashSimulatorPowerCut runs the env store on the shared flash
// simulator (NOR: boolean flags, 8 KiB env in 64 KiB sectors; NAND:
// counter flags, whole 16 KiB blocks) and cuts power at every erase/program
// operation of a Save.
func TestFlashSimulatorPowerCut(t *testing.T) {
	for _, tc := range []struct {
		name        string
		info        mtd.Info
		env, sector int64
		scheme      bootenv.FlagScheme
	}{
		{"nor", mtd.Info{Kind: mtd.NOR, Size: 4 << 16, EraseSize: 1 << 16, WriteSize: 1}, 0x2000, 1 << 16, bootenv.FlagsBoolean},
		{"nand", mtd.Info{Kind: mtd.NAND, Size: 8 << 14, EraseSize: 1 << 14, WriteSize: 2048}, 1 << 14, 1 << 14, bootenv.FlagsIncrement},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, next := env("otad_slot", "A", "bootcount", "1"), env("otad_slot", "B", "bootcount", "0", "upgrade_available", "1")
			offs := []int64{0, tc.sector}
			for cut := 0; ; cut++ {
				sim := mtdtest.New(tc.info)
				s := bootenv.NewSectorMediumStore([]bootenv.Medium{sim, sim}, offs, tc.env, tc.sector, tc.scheme)
				for _, e := range []*bootenv.Env{old, old} {
					if err := s.Save(e); err != nil {
						t.Fatal(err)
					}
				}
				sim.CutAfter(cut)
				saveErr := s.Save(next)
				sim.PowerOn()
				got, err := bootenv.NewSectorMediumStore([]bootenv.Medium{sim, sim}, offs, tc.env, tc.sector, tc.scheme).Load()
				if err != nil {
					t.Fatalf("cut after %d ops: %v", cut, err)
				}
				if !got.Equal(old) && !got.Equal(next) {
					t.Fatalf("cut after %d ops: mixed environment\n%s", cut, got)
				}
				if saveErr == nil {
					if !got.Equal(next) {
						t.Fatal("completed Save not visible")
					}
					if cut < 2 {
						t.Fatalf("a Save took only %d flash ops; the cuts tested nothing", cut)
					}
					return
				}
				if !errors.Is(saveErr, mtdtest.ErrPowerCut) {
					t.Fatalf("cut after %d: Save error %v", cut, saveErr)
				}
			}
		})
	}
}

// TestFlashSimulatorBadBlock: a copy on a bad block is refused with an
// error on Save, never skipped; the other copy still loads.
func TestFlashSimulatorBadBlock(t *testing.T) {
	info := mtd.Info{Kind: mtd.NAND, Size: 8 << 14, EraseSize: 1 << 14, WriteSize: 2048}
	sim := mtdtest.New(info)
	s := bootenv.NewMediumStore([]bootenv.Medium{sim, sim}, []int64{0, 1 << 14}, 1<<14, bootenv.FlagsIncrement)
	if err := s.Save(env("a", "1")); err != nil {
		t.Fatal(err)
	}
	sim.MarkBad(1)
	if e, err := s.Load(); err != nil || !e.Equal(env("a", "1")) {
		t.Fatalf("load with copy 1 on a bad block: %v %v", e, err)
	}
	if err := s.Save(env("a", "2")); err == nil {
		t.Fatal("Save onto a bad block succeeded")
	}
}

// TestFlashSimulatorTornBytes cuts the power at byte granularity (stepping
// through the whole Save, plus the last bytes one by one) on the simulator,
// whose torn NOR writes clear a random subset of bits and torn erases leave
// part of a block.
func TestFlashSimulatorTornBytes(t *testing.T) {
	info := mtd.Info{Kind: mtd.NOR, Size: 4 << 16, EraseSize: 1 << 16, WriteSize: 1}
	const envSize, sector = 0x2000, 1 << 16
	offs := []int64{0, sector}
	old, next := env("otad_slot", "A"), env("otad_slot", "B", "upgrade_available", "1")
	total := int64(2*sector + 1) // erase + rewrite of the sector, then the obsolete mark
	var cuts []int64
	for n := int64(0); n < total-64; n += 251 {
		cuts = append(cuts, n)
	}
	for n := total - 64; n <= total; n++ {
		cuts = append(cuts, n)
	}
	outcomes := map[string]int{}
	for _, cut := range cuts {
		sim := mtdtest.New(info, mtdtest.WithSeed(uint64(cut)))
		s := bootenv.NewSectorMediumStore([]bootenv.Medium{sim, sim}, offs, envSize, sector, bootenv.FlagsBoolean)
		for _, e := range []*bootenv.Env{old, old} {
			if err := s.Save(e); err != nil {
				t.Fatal(err)
			}
		}
		sim.CutAfterBytes(cut)
		saveErr := s.Save(next)
		sim.PowerOn()
		got, err := bootenv.NewSectorMediumStore([]bootenv.Medium{sim, sim}, offs, envSize, sector, bootenv.FlagsBoolean).Load()
		if err != nil {
			t.Fatalf("cut at byte %d: %v", cut, err)
		}
		switch {
		case got.Equal(next):
			outcomes["new"]++
		case got.Equal(old):
			outcomes["old"]++
			if saveErr == nil {
				t.Fatalf("cut at byte %d: Save succeeded but reader sees old", cut)
			}
		default:
			t.Fatalf("cut at byte %d: mixed environment %s", cut, got)
		}
	}
	if outcomes["old"] == 0 || outcomes["new"] == 0 {
		t.Fatalf("outcomes %v: the cut points missed one side", outcomes)
	}
	t.Logf("%d cut points: %v", len(cuts), outcomes)
}
