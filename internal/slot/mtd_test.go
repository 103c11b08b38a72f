package slot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/otadev/otad/internal/mtd"
	"github.com/otadev/otad/internal/mtd/mtdtest"
)

var (
	simNAND = mtd.Info{Kind: mtd.NAND, Size: 32 * 16384, EraseSize: 16384, WriteSize: 2048}
	simNOR  = mtd.Info{Kind: mtd.NOR, Size: 32 * 8192, EraseSize: 8192, WriteSize: 1}
)

func writeMTD(t *testing.T, tg Target, img []byte, piece int) {
	t.Helper()
	w, err := OpenWriter(context.Background(), tg, 0, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	writeIn(t, w, img, piece)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMTDWriteNORAndNAND(t *testing.T) {
	for _, info := range []mtd.Info{simNOR, simNAND} {
		t.Run(info.Kind.String(), func(t *testing.T) {
			sim := mtdtest.New(info)
			// Old contents everywhere: the writer must erase before programming.
			sim.Poke(0, randomImage(9, int(info.Size)))
			tg := NewMTDTarget(sim)
			if tg.Size() != info.Size || tg.WriteAlign() != info.EraseSize {
				t.Fatalf("Size %d WriteAlign %d", tg.Size(), tg.WriteAlign())
			}
			img := randomImage(4, int(info.Size/2)+1000) // ends mid-block, mid-page
			writeMTD(t, tg, img, 5000)
			ctx := context.Background()
			if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
				t.Fatal(err)
			}
			raw := sim.Bytes()
			if !bytes.Equal(raw[:len(img)], img) {
				t.Fatal("physical contents differ from the image")
			}
			// The rest of the last block is erased, not left-over data.
			end := (int64(len(img)) + info.EraseSize - 1) / info.EraseSize * info.EraseSize
			if !allFF(raw[len(img):end]) {
				t.Fatal("tail of the last erase block not erased")
			}
			// Every program hit an erased block (the simulator ANDs, so a
			// missing erase would also show up as a mismatch above).
			erased := map[int64]bool{}
			for _, op := range sim.Log() {
				switch op.Kind {
				case mtdtest.OpErase:
					erased[op.Off/info.EraseSize] = true
				case mtdtest.OpWrite:
					if !erased[op.Off/info.EraseSize] {
						t.Fatalf("program at %#x before erasing its block", op.Off)
					}
				}
			}
			// Corruption behind the writer's back is caught.
			sim.Poke(int64(len(img))/2, []byte{^img[len(img)/2]})
			if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); !errors.Is(err, ErrReadBackMismatch) {
				t.Fatalf("corruption not caught: %v", err)
			}
		})
	}
}

func TestNANDSkipsBadBlocksAndBlankPages(t *testing.T) {
	sim := mtdtest.New(simNAND, mtdtest.WithBadBlocks(0, 3, 4))
	tg := NewMTDTarget(sim)
	good := simNAND.Size - 3*simNAND.EraseSize
	if tg.Size() != good {
		t.Fatalf("Size %d, want %d (3 bad blocks)", tg.Size(), good)
	}
	img := randomImage(5, int(good))
	blank := 2*simNAND.EraseSize + 2*simNAND.WriteSize // logical page range left 0xFF
	copy(img[blank:], bytes.Repeat([]byte{0xff}, 3*int(simNAND.WriteSize)))
	writeMTD(t, tg, img, 7000)
	if err := VerifyReadBack(context.Background(), tg, good, sum(img)); err != nil {
		t.Fatal(err)
	}
	for _, op := range sim.Log() {
		if op.Kind != mtdtest.OpErase && op.Kind != mtdtest.OpWrite {
			continue
		}
		if b := op.Off / simNAND.EraseSize; b == 0 || b == 3 || b == 4 {
			t.Fatalf("%v on bad block %d", op.Kind, b)
		}
		// Logical block 2 is physical 5 (0, 3, 4 bad): its blank pages stay unprogrammed.
		pb := 5*simNAND.EraseSize + 2*simNAND.WriteSize
		if op.Kind == mtdtest.OpWrite && op.Off < pb+3*simNAND.WriteSize && op.Off+op.Len > pb {
			t.Fatalf("programmed an all-0xFF page: %+v", op)
		}
	}
	// One byte more than the good blocks hold does not fit.
	if _, err := OpenWriter(context.Background(), tg, 0, good+1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("image larger than the good blocks: %v", err)
	}
}

func TestNANDGrownBadBlockDuringWrite(t *testing.T) {
	sim := mtdtest.New(simNAND, mtdtest.WithBadBlocks(1))
	sim.GrowBad(6, 0) // worn out from the start, not yet in the table
	tg := NewMTDTarget(sim)
	img := randomImage(6, 20*int(simNAND.EraseSize))
	writeMTD(t, tg, img, 9000)
	if bad, _ := sim.IsBad(6 * simNAND.EraseSize); !bad {
		t.Fatal("grown bad block not marked")
	}
	if err := VerifyReadBack(context.Background(), tg, int64(len(img)), sum(img)); err != nil {
		t.Fatal(err)
	}
	// A fresh target (next boot) maps the same way and reads the image.
	if err := VerifyReadBack(context.Background(), NewMTDTarget(sim), int64(len(img)), sum(img)); err != nil {
		t.Fatal(err)
	}
}

func TestNANDSyncMidPageThenContinue(t *testing.T) {
	sim := mtdtest.New(simNAND)
	tg := NewMTDTarget(sim)
	img := randomImage(7, 3*int(simNAND.EraseSize))
	w, err := tg.OpenWriter(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(img); i += 3001 {
		if _, err := w.Write(img[i:min(i+3001, len(img))]); err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(); err != nil { // mid-page, every time
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := VerifyReadBack(context.Background(), tg, int64(len(img)), sum(img)); err != nil {
		t.Fatal(err)
	}
}

// installWithCuts plays the engine: write in WriteAlign chunks, Sync after
// each, remember the last synced offset; on a power cut, power on, rescan
// and resume from there. It returns how many cuts happened.
func installWithCuts(t *testing.T, sim *mtdtest.Sim, img []byte, cut func(*mtdtest.Sim)) int {
	t.Helper()
	ctx := context.Background()
	durable, cuts := int64(0), 0
	cut(sim)
	for attempt := 0; ; attempt++ {
		if attempt > 5 {
			t.Fatal("install never completed")
		}
		tg, err := NewMTDTargetWith(sim, Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = func() error {
			w, err := OpenWriter(ctx, tg, durable, int64(len(img)))
			if err != nil {
				return err
			}
			align := tg.WriteAlign()
			for off := durable; off < int64(len(img)); off += align {
				if _, err := w.Write(img[off:min(off+align, int64(len(img)))]); err != nil {
					return err
				}
				if err := w.Sync(); err != nil {
					return err
				}
				durable = min(off+align, int64(len(img))) / align * align
			}
			return w.Close()
		}()
		if errors.Is(err, mtdtest.ErrPowerCut) {
			cuts++
			sim.PowerOn()
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
			t.Fatalf("after %d cuts: %v", cuts, err)
		}
		return cuts
	}
}

func TestMTDPowerCutThenResume(t *testing.T) {
	img := randomImage(8, 10*int(simNAND.EraseSize)+777)
	for _, info := range []mtd.Info{simNAND, simNOR} {
		var opts []mtdtest.Option
		if info.Kind == mtd.NAND {
			opts = append(opts, mtdtest.WithBadBlocks(2))
		}
		// Count the operations of an uninterrupted install, then cut at each one.
		ref := mtdtest.New(info, opts...)
		installWithCuts(t, ref, img, func(*mtdtest.Sim) {})
		for n := 0; n < ref.Ops(); n++ {
			t.Run(fmt.Sprintf("%s/op%d", info.Kind, n), func(t *testing.T) {
				sim := mtdtest.New(info, append(opts, mtdtest.WithSeed(uint64(n)))...)
				sim.Poke(0, randomImage(uint64(n), int(info.Size))) // previous image
				if cuts := installWithCuts(t, sim, img, func(s *mtdtest.Sim) { s.CutAfter(n) }); cuts != 1 {
					t.Fatalf("%d cuts, want 1", cuts)
				}
			})
		}
	}
	// Cuts by byte count land mid-page.
	for _, b := range []int64{1, 2047, 2049, 16384*3 + 5000, 100000} {
		sim := mtdtest.New(simNAND, mtdtest.WithBadBlocks(5), mtdtest.WithSeed(uint64(b)))
		if cuts := installWithCuts(t, sim, img, func(s *mtdtest.Sim) { s.CutAfterBytes(b) }); cuts != 1 {
			t.Fatalf("cut at byte %d: %d cuts", b, cuts)
		}
	}
}

func TestMTDScanFailureIsReported(t *testing.T) {
	sim := mtdtest.New(simNAND)
	sim.CutAfter(0)
	sim.Erase(0, simNAND.EraseSize) // cut: every later call fails
	if _, err := NewMTDTargetWith(sim, Options{}); !errors.Is(err, mtdtest.ErrPowerCut) {
		t.Fatalf("NewMTDTargetWith: %v", err)
	}
	tg := NewMTDTarget(sim)
	if _, err := OpenWriter(context.Background(), tg, 0, 1); !errors.Is(err, mtdtest.ErrPowerCut) {
		t.Fatalf("OpenWriter on a target whose scan failed: %v", err)
	}
	if _, err := tg.ReadAt(make([]byte, 1), 0); err == nil {
		t.Fatal("ReadAt on a target whose scan failed succeeded")
	}
}

// TestRealMTD writes a kernel MTD device (mtdram or nandsim in the VM):
// OTAD_TEST_MTD=/dev/mtdN names a scratch device this test may destroy.
func TestRealMTD(t *testing.T) {
	dev := os.Getenv("OTAD_TEST_MTD")
	if dev == "" {
		t.Skip("set OTAD_TEST_MTD=/dev/mtdN (a scratch device) to run")
	}
	ctx := context.Background()
	tg, err := Open(Slot{Name: "B", Device: dev, Type: TypeMTD}, Slot{Name: "A", Device: "/nonexistent-active"})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	img := randomImage(12, int(tg.Size()/2)+3333)
	writeMTD(t, tg, img, 10000)
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
		t.Fatal(err)
	}
	// Resume at the second erase block gives the same contents.
	w, err := OpenWriter(ctx, tg, tg.WriteAlign(), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	writeIn(t, w, img[tg.WriteAlign():], 7000)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
		t.Fatal(err)
	}
}
