package slot

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

func corruptByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{^b[0]}, off); err != nil {
		t.Fatal(err)
	}
}

// writeAllOf writes img in uneven pieces and returns the first error of
// the writes and the Close.
func writeAllOf(w Writer, img []byte, piece int) error {
	for i, k := 0, 0; i < len(img); k++ {
		n := min(piece+(k%3)*777, len(img)-i)
		if _, err := w.Write(img[i : i+n]); err != nil {
			w.Close()
			return err
		}
		i += n
	}
	return w.Close()
}

func openLoopSlot(t *testing.T, size int64, o Options) (*fdTarget, string) {
	t.Helper()
	dev, backing := loopDevice(t, size)
	tg, err := OpenWith(Slot{Name: "B", Device: dev}, Slot{Name: "A", Device: "/nonexistent-active"}, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg.(*fdTarget), backing
}

// A verified write is proven chunk by chunk: VerifyReadBack settles from
// the comparison (it does not see damage done after it, which is the
// trade), once; the next VerifyReadBack reads and hashes everything.
func TestCompareProvesVerifiedWrite(t *testing.T) {
	tg, backing := openLoopSlot(t, 16<<20, Options{ChunkSize: 1 << 20})
	ctx := context.Background()
	img := randomImage(11, 9<<20+4321) // odd tail: compared after the final sync
	w, err := OpenVerifiedWriter(ctx, tg, 0, int64(len(img)), sum(img))
	if err != nil {
		t.Fatal(err)
	}
	if w.(*directWriter).pf == nil {
		t.Fatal("verified direct writer from 0 compares nothing")
	}
	if err := writeAllOf(w, img, 200<<10); err != nil {
		t.Fatal(err)
	}
	p := tg.proof
	if p == nil {
		t.Fatal("no proof after the writer closed")
	}
	<-p.done
	if !p.final || p.upto != int64(len(img)) || p.bad != nil || p.gap || p.stop {
		t.Fatalf("proof final=%v upto=%d bad=%v gap=%v stop=%v, want all %d bytes compared",
			p.final, p.upto, p.bad, p.gap, p.stop, len(img))
	}
	// Damage after the comparison: the proof still stands for this call
	// (this is exactly what it does not cover) ...
	corruptByte(t, backing, 7<<20)
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
		t.Fatalf("read-back settled by the comparison: %v", err)
	}
	// ... and any later read-back hashes the medium and catches it.
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); !errors.Is(err, ErrReadBackMismatch) {
		t.Fatalf("corruption after the comparison not caught by the next read-back: %v", err)
	}
}

// The medium returns different bytes for a chunk between its write and its
// comparison: the write fails closed, naming the offset.
func TestCompareCatchesChangedChunk(t *testing.T) {
	const bad = 5<<20 + 1234
	tg, backing := openLoopSlot(t, 16<<20, Options{ChunkSize: 1 << 20})
	ctx := context.Background()
	img := randomImage(12, 12<<20+99)
	tg.afterWrite = func(off int64, n int) {
		if off <= bad && bad < off+int64(n) {
			corruptByte(t, backing, bad) // below the loop device, which reads it back
		}
	}
	w, err := OpenVerifiedWriter(ctx, tg, 0, int64(len(img)), sum(img))
	if err != nil {
		t.Fatal(err)
	}
	err = writeAllOf(w, img, 256<<10)
	if err == nil {
		err = VerifyReadBack(ctx, tg, int64(len(img)), sum(img))
	}
	if !errors.Is(err, ErrReadBackMismatch) || !strings.Contains(err.Error(), "offset 5244114") {
		t.Fatalf("changed chunk not caught with its offset: %v", err)
	}
	// The same at the unaligned tail, which goes through the page cache.
	tail := int64(len(img)) - 50
	tg.afterWrite = func(off int64, n int) {
		if off <= tail && tail < off+int64(n) {
			corruptByte(t, backing, tail)
		}
	}
	w, err = OpenVerifiedWriter(ctx, tg, 0, int64(len(img)), sum(img))
	if err != nil {
		t.Fatal(err)
	}
	if err := writeAllOf(w, img, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); !errors.Is(err, ErrReadBackMismatch) {
		t.Fatalf("changed tail not caught: %v", err)
	}
}

// Where the comparison does not cover [0, size) of the vouched stream, the
// medium is hashed: a resume, another hash, FullReadBack, a cancelled write.
func TestCompareFallsBackToFullHash(t *testing.T) {
	ctx := context.Background()
	img := randomImage(13, 6<<20)

	t.Run("resume", func(t *testing.T) {
		tg, backing := openLoopSlot(t, 8<<20, Options{ChunkSize: 1 << 20})
		w, _ := OpenVerifiedWriter(ctx, tg, 0, int64(len(img)), sum(img))
		writeIn(t, w, img[:3<<20], 1<<20)
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
		corruptByte(t, backing, 1<<20) // before the resume point
		w, err := OpenVerifiedWriter(ctx, tg, 2<<20, int64(len(img)), sum(img))
		if err != nil {
			t.Fatal(err)
		}
		if w.(*directWriter).pf != nil {
			t.Fatal("a resumed writer claims a proof of the whole image")
		}
		if err := writeAllOf(w, img[2<<20:], 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); !errors.Is(err, ErrReadBackMismatch) {
			t.Fatalf("damage before the resume point not caught: %v", err)
		}
	})
	t.Run("other-sum", func(t *testing.T) {
		tg, _ := openLoopSlot(t, 8<<20, Options{ChunkSize: 1 << 20})
		w, _ := OpenVerifiedWriter(ctx, tg, 0, int64(len(img)), sum(nil))
		if err := writeAllOf(w, img, 1<<20); err != nil {
			t.Fatal(err)
		}
		// The proof was for another hash: the device is hashed and passes.
		if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("full-read-back", func(t *testing.T) {
		tg, backing := openLoopSlot(t, 8<<20, Options{ChunkSize: 1 << 20, FullReadBack: true})
		w, _ := OpenVerifiedWriter(ctx, tg, 0, int64(len(img)), sum(img))
		if w.(*directWriter).pf != nil {
			t.Fatal("FullReadBack writer compares")
		}
		if err := writeAllOf(w, img, 1<<20); err != nil {
			t.Fatal(err)
		}
		corruptByte(t, backing, 4<<20)
		if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); !errors.Is(err, ErrReadBackMismatch) {
			t.Fatalf("corruption after the write not caught: %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		tg, _ := openLoopSlot(t, 8<<20, Options{ChunkSize: 1 << 20})
		cctx, cancel := context.WithCancel(ctx)
		w, _ := OpenVerifiedWriter(cctx, tg, 0, int64(len(img)), sum(img))
		writeIn(t, w, img[:2<<20], 1<<20)
		cancel()
		if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); !errors.Is(err, ErrReadBackMismatch) {
			t.Fatalf("partial write passed read-back: %v", err)
		}
		if _, err := w.Write(img[2<<20 : 3<<20]); !errors.Is(err, context.Canceled) {
			t.Fatalf("write after cancel: %v", err)
		}
	})
}
