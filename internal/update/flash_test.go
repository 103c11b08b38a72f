package update

import (
	"bytes"
	"io"
	"testing"

	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/mtd"
	"github.com/otadev/otad/internal/mtd/mtdtest"
	"github.com/otadev/otad/internal/slot"
)

// TestCycleOnFlashSimulator runs install → trial boot → commit with both
// slots on simulated NAND (one with a factory bad block) and the redundant
// env on a simulated NOR flash, through the real MTD slot writer and the
// real env medium store.
func TestCycleOnFlashSimulator(t *testing.T) {
	d := newDevice(t)
	nand := mtd.Info{Kind: mtd.NAND, Size: 8 << 20, EraseSize: 128 << 10, WriteSize: 2048}
	sims := map[string]*mtdtest.Sim{"A": mtdtest.New(nand), "B": mtdtest.New(nand, mtdtest.WithBadBlocks(3))}
	// Factory image in A, through the same writer.
	img1 := image(1, 3<<20)
	writeFlash(t, sims["A"], img1)

	nor := mtd.Info{Kind: mtd.NOR, Size: 256 << 10, EraseSize: 64 << 10, WriteSize: 1}
	envFlash := mtdtest.New(nor)
	store := bootenv.NewMediumStore([]bootenv.Medium{envFlash, envFlash}, []int64{0, 64 << 10}, 64<<10, bootenv.FlagsBoolean)
	env := bootenv.NewEnv()
	env.Set("otad_slot", "A")
	env.Set("otad_prev", "A")
	env.Set("upgrade_available", "0")
	env.Set("bootcount", "0")
	for i := 0; i < 2; i++ { // both copies valid, as after "otad env init"
		if err := store.Save(env); err != nil {
			t.Fatal(err)
		}
	}
	d.env = &cutStore{Store: store, c: d.cut}

	open := func(s slot.Slot) (slot.Target, error) { return slot.NewMTDTarget(sims[s.Name]), nil }
	flash := func(c *Config) {
		c.OpenSlot = func(target, active slot.Slot) (slot.Target, error) {
			if target.Name == active.Name {
				return nil, slot.ErrActiveSlot
			}
			return open(target)
		}
		c.OpenReadOnly = open
	}
	img2 := image(2, 5<<20+777)
	b := d.bundleFile("v2.otab", "2.0", 2, img2, bundle.EncodingZstd)
	e := d.engine(flash)
	d.start(e)
	activeBefore := bytes.Clone(sims["A"].Bytes())
	if _, err := e.installNow(b, nil); err != nil {
		t.Fatalf("install onto NAND: %v", err)
	}
	if !bytes.Equal(activeBefore, sims["A"].Bytes()) {
		t.Fatal("active flash changed during the install")
	}
	got := make([]byte, len(img2))
	tg := slot.NewMTDTarget(sims["B"])
	if _, err := tg.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, img2) {
		t.Fatal("NAND slot B does not read back the image (bad block not skipped?)")
	}
	d.powerOn()
	e = d.engine(flash)
	d.start(e)
	if d.booted != "B" || d.envVar("upgrade_available") != "0" || d.slotRec("B").State != journal.SlotGood {
		t.Fatalf("not committed on flash: booted %s ua %s", d.booted, d.envVar("upgrade_available"))
	}
}

func writeFlash(t *testing.T, s *mtdtest.Sim, b []byte) {
	t.Helper()
	tg := slot.NewMTDTarget(s)
	w, err := slot.OpenWriter(t.Context(), tg, 0, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
