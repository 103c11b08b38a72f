package slot

import (
	"context"
	"errors"
	"testing"

	"github.com/otadev/otad/internal/mtd/mtdtest"
)

// FuzzMTDInstall: any geometry choice, factory and grown bad blocks, write
// piece size, sync rhythm and power cut point ends, after resuming from the last synced
// alignment boundary, with exactly the image on flash.
func FuzzMTDInstall(f *testing.F) {
	f.Add(true, uint32(0b100), uint16(3001), uint8(3), uint16(7), uint32(40000))
	f.Add(false, uint32(0), uint16(65535), uint8(1), uint16(0), uint32(1))
	f.Add(true, uint32(0xffff0001), uint16(1), uint8(0), uint16(200), uint32(123456))
	f.Fuzz(func(t *testing.T, nand bool, badMask uint32, piece uint16, syncEvery uint8, cutOp uint16, cutByte uint32) {
		info := simNOR
		var opts []mtdtest.Option
		factory := map[int64]bool{}
		if nand {
			info = simNAND
			for b := range 32 {
				if badMask&(1<<b) != 0 && b%4 != 0 { // keep enough good blocks
					opts = append(opts, mtdtest.WithBadBlocks(b))
					factory[int64(b)] = true
				}
			}
		}
		sim := mtdtest.New(info, append(opts, mtdtest.WithSeed(uint64(cutByte)))...)
		sim.Poke(0, randomImage(uint64(badMask), int(info.Size)))
		img := randomImage(uint64(piece), 6*int(info.EraseSize)+int(cutByte%5000))
		if nand && cutOp%3 == 0 {
			sim.GrowBad(1+int(cutByte%7), int(cutOp/3%40)) // wears out mid-install
		}
		sim.CutAfter(int(cutOp % 64))
		if cutByte%2 == 1 {
			sim.CutAfterBytes(int64(cutByte) % (2 * int64(len(img))))
		}
		step := max(int(piece), 1)
		ctx := context.Background()
		durable := int64(0)
		for attempt := 0; ; attempt++ {
			if attempt > 3 {
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
				for off, k := durable, 0; off < int64(len(img)); k++ {
					n := min(int64(step), int64(len(img))-off)
					if _, err := w.Write(img[off : off+n]); err != nil {
						return err
					}
					off += n
					if syncEvery != 0 && k%int(syncEvery) == 0 {
						if err := w.Sync(); err != nil {
							return err
						}
						durable = off / tg.WriteAlign() * tg.WriteAlign()
					}
				}
				return w.Close()
			}()
			if errors.Is(err, mtdtest.ErrPowerCut) {
				sim.PowerOn()
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
				t.Fatalf("attempt %d: %v", attempt, err)
			}
			// The writer never even tries a block marked bad in the table.
			for _, op := range sim.Log() {
				if (op.Kind == mtdtest.OpWrite || op.Kind == mtdtest.OpErase) && factory[op.Off/info.EraseSize] {
					t.Fatalf("%v attempted on factory bad block at %#x", op.Kind, op.Off)
				}
			}
			return
		}
	})
}
