package bootenv_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/mtd"
	"github.com/otadev/otad/internal/mtd/mtdtest"
)

// flagGeometry is a NOR env layout: copy i at offs[i], each in its own
// erase sector.
type flagGeometry struct {
	name        string
	info        mtd.Info
	env, sector int64
	offs        []int64
}

var flagGeometries = []flagGeometry{
	// QEMU's virt pflash as Linux sees it: two interleaved x16 chips with
	// 2 KiB buffers each, 256 KiB sectors, env copies of a whole sector;
	// the 64-byte flag unit tears as one piece of the buffer.
	{"qemu-virt", mtd.Info{Kind: mtd.NOR, Size: 4 << 18, EraseSize: 1 << 18, WriteSize: 1, WriteBufSize: 4096}, 1 << 18, 1 << 18, []int64{0, 1 << 18}},
	// A buffer as small as the unit, copies not at the start of their sector.
	{"buffer-64", mtd.Info{Kind: mtd.NOR, Size: 4 << 16, EraseSize: 1 << 16, WriteSize: 1, WriteBufSize: 64}, 0x2000, 1 << 16, []int64{0x1000, 0x11000}},
	// No write buffer known (as with mtd.Char): torn byte by byte.
	{"no-buffer", mtd.Info{Kind: mtd.NOR, Size: 4 << 16, EraseSize: 1 << 16, WriteSize: 1}, 0x2000, 1 << 16, []int64{0, 1 << 16}},
}

func (g flagGeometry) store(sim *mtdtest.Sim) *bootenv.MediumStore {
	return bootenv.NewSectorMediumStore([]bootenv.Medium{sim, sim}, g.offs, g.env, g.sector, bootenv.FlagsBoolean)
}

// prepared is a sim whose copy 0 holds old (active) and copy 1 is blank, so
// the next Save writes copy 1 and marks copy 0 obsolete.
func (g flagGeometry) prepared(t *testing.T, seed uint64, old *bootenv.Env) *mtdtest.Sim {
	t.Helper()
	sim := mtdtest.New(g.info, mtdtest.WithSeed(seed))
	if err := g.store(sim).Save(old); err != nil {
		t.Fatal(err)
	}
	if b := sim.Bytes(); b[g.offs[0]+4] != 1 {
		t.Fatalf("copy 0 flag %#x after the first Save, want 1 (active)", b[g.offs[0]+4])
	}
	return sim
}

// checkOldCopy fails unless the sector of copy 0 is byte for byte what it
// was, except the flag byte, which may only have lost bits.
func (g flagGeometry) checkOldCopy(before, after []byte) error {
	lo := g.offs[0] - g.offs[0]%g.sector
	flag := g.offs[0] + 4
	for i := lo; i < lo+g.sector; i++ {
		if i == flag {
			if after[i]&^before[i] != 0 {
				return fmt.Errorf("flag byte went %#x -> %#x: a program set bits", before[i], after[i])
			}
			continue
		}
		if after[i] != before[i] {
			return fmt.Errorf("byte %#x of the old copy's sector changed %#x -> %#x (CRC or data)", i-g.offs[0], before[i], after[i])
		}
	}
	return nil
}

// TestFlagWriteOnlyClearsFlagBits: marking the old copy obsolete is one
// aligned program of the medium's program unit (mtd.Info.ProgramUnit: with
// Linux's CFI drivers a buffered program, never a one-word one), and of the old copy it
// changes only the flag byte, 1 -> 0; its CRC and data stay identical.
// No program smaller than the unit ever reaches the flash during a Save.
func TestFlagWriteOnlyClearsFlagBits(t *testing.T) {
	old, next := env("otad_slot", "A", "bootcount", "0"), env("otad_slot", "B", "otad_bootargs", "console=ttyAMA0")
	for _, g := range flagGeometries {
		t.Run(g.name, func(t *testing.T) {
			sim := g.prepared(t, 1, old)
			before := sim.Bytes()
			sim.ResetLog()
			if err := g.store(sim).Save(next); err != nil {
				t.Fatal(err)
			}
			after := sim.Bytes()
			if err := g.checkOldCopy(before, after); err != nil {
				t.Fatal(err)
			}
			if before[g.offs[0]+4] != 1 || after[g.offs[0]+4] != 0 {
				t.Fatalf("old flag %#x -> %#x, want 1 -> 0", before[g.offs[0]+4], after[g.offs[0]+4])
			}
			unit := g.info.ProgramUnit()
			var writes []mtdtest.Op
			for _, op := range sim.Log() {
				if op.Kind == mtdtest.OpWrite {
					writes = append(writes, op)
				}
			}
			if len(writes) != 2 {
				t.Fatalf("%d programs, want 2 (new copy's sector, old copy's flag): %v", len(writes), writes)
			}
			for _, op := range writes {
				if op.Off%unit != 0 || op.Len%unit != 0 {
					t.Errorf("program of %d bytes at %#x is not in whole %d-byte units", op.Len, op.Off, unit)
				}
			}
			if f, pos := writes[1], g.offs[0]+4; f.Len != unit || pos < f.Off || pos >= f.Off+f.Len {
				t.Errorf("flag program %d bytes at %#x, want the %d-byte unit holding %#x", f.Len, f.Off, unit, pos)
			}
			got, err := g.store(sim).Load()
			if err != nil || !got.Equal(next) {
				t.Fatalf("Load after Save: %v %v", got, err)
			}
		})
	}
}

// TestFlagWritePowerCut cuts the power during the obsolete mark, on the
// simulator (which tears the write buffer in flight, or byte by byte when
// there is none): a reader then sees the old or the new environment, the
// old copy differs from before in at most bits of its flag byte, and the
// next Save works.
func TestFlagWritePowerCut(t *testing.T) {
	old, next, third := env("otad_slot", "A", "bootcount", "0"), env("otad_slot", "B", "upgrade_available", "1"), env("after", "cut")
	for _, g := range flagGeometries {
		t.Run(g.name, func(t *testing.T) {
			// A clean run tells how many bytes a Save moves before the mark.
			dry := g.prepared(t, 1, old)
			dry.ResetLog()
			if err := g.store(dry).Save(next); err != nil {
				t.Fatal(err)
			}
			// The mark is the last program; everything erased or programmed
			// before it counts towards the cut point.
			var ops []mtdtest.Op
			for _, op := range dry.Log() {
				if op.Kind == mtdtest.OpWrite || op.Kind == mtdtest.OpErase {
					ops = append(ops, op)
				}
			}
			mark := ops[len(ops)-1]
			if mark.Kind != mtdtest.OpWrite || mark.Off > g.offs[0]+4 || mark.Off+mark.Len <= g.offs[0]+4 {
				t.Fatalf("last flash op %+v is not the flag program", mark)
			}
			var before int64
			for _, op := range ops[:len(ops)-1] {
				before += op.Len
			}
			flagLen := mark.Len
			// Cut points: byte by byte through the mark, several seeds where
			// the flag byte itself tears; a write buffer as large as the unit
			// tears as one wherever the cut falls, so a few points suffice.
			type cut struct {
				k     int64
				seeds uint64
			}
			var cuts []cut
			flagAt := g.offs[0] + 4 - mark.Off
			for k := int64(0); k <= flagLen; k++ {
				switch {
				case g.info.WriteBufSize > 0 && (k == 0 || k == flagAt || k == flagLen-1):
					cuts = append(cuts, cut{k, 8})
				case g.info.WriteBufSize > 0 && k != flagLen:
				case k == flagAt:
					cuts = append(cuts, cut{k, 8})
				default:
					cuts = append(cuts, cut{k, 1})
				}
			}
			outcomes := map[string]int{}
			for _, c := range cuts {
				k := c.k
				for seed := uint64(1); seed <= c.seeds; seed++ {
					sim := g.prepared(t, seed+uint64(k)*7, old)
					snap := sim.Bytes()
					sim.CutAfterBytes(before + k)
					saveErr := g.store(sim).Save(next)
					sim.PowerOn()
					if err := g.checkOldCopy(snap, sim.Bytes()); err != nil {
						t.Fatalf("cut at byte %d of the mark: %v", k, err)
					}
					s := g.store(sim)
					got, err := s.Load()
					switch {
					case err != nil:
						t.Fatalf("cut at byte %d of the mark: %v", k, err)
					case got.Equal(next):
						outcomes["new"]++
					case got.Equal(old):
						outcomes["old"]++
						if saveErr == nil {
							t.Fatalf("cut at byte %d: Save returned nil but readers see the old environment", k)
						}
					default:
						t.Fatalf("cut at byte %d: mixed environment %s", k, got)
					}
					if saveErr != nil && !errors.Is(saveErr, mtdtest.ErrPowerCut) {
						t.Fatalf("cut at byte %d: Save error %v", k, saveErr)
					}
					if err := s.Save(third); err != nil {
						t.Fatalf("cut at byte %d: Save after power-on: %v", k, err)
					}
					if e, err := g.store(sim).Load(); err != nil || !e.Equal(third) {
						t.Fatalf("cut at byte %d: Save after power-on lost: %v %v", k, e, err)
					}
				}
			}
			if outcomes["old"] == 0 || outcomes["new"] == 0 {
				t.Fatalf("outcomes %v: the cuts never tore the flag both ways", outcomes)
			}
			t.Logf("flag program of %d bytes after %d bytes: %v", flagLen, before, outcomes)
		})
	}
}
