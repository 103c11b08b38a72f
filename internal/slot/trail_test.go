package slot

import (
	"context"
	"errors"
	"os"
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

func TestReadBackWhileWriting(t *testing.T) { bothModes(t, testReadBackWhileWriting) }

func testReadBackWhileWriting(t *testing.T, buffered bool) {
	dev, backing := loopDevice(t, 16<<20)
	ctx := context.Background()
	tg, err := OpenWith(Slot{Name: "B", Device: dev}, Slot{Name: "A", Device: "/nonexistent-active"},
		Options{ChunkSize: 1 << 20, ReadBackWhileWriting: true, Buffered: buffered})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	img := randomImage(11, 9<<20+4321)

	// Clean run: the trailing hash matches and is the device's real hash.
	w, err := OpenWriter(ctx, tg, 0, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	writeIn(t, w, img, 200<<10)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	trailSum := func() []byte {
		t.Helper()
		tr := tg.(*fdTarget).trail
		if tr == nil {
			t.Fatal("no read-back followed the writer")
		}
		s, ok := tr.result(ctx, int64(len(img)))
		if !ok {
			t.Fatal("trail did not cover the image")
		}
		return s
	}
	if string(trailSum()) != string(sum(img)) {
		t.Fatal("trailing hash differs from the image hash")
	}
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
		t.Fatal(err)
	}
	// The trail is used once: damage after it is caught by the next read-back.
	corruptByte(t, backing, 7<<20)
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); !errors.Is(err, ErrReadBackMismatch) {
		t.Fatalf("corruption after the trail not caught: %v", err)
	}

	// The trail reads the medium, not the writer's buffers: damage a chunk
	// after it reached the device but before the trail (which waits for
	// 4 MiB) read it.
	w, err = OpenWriter(ctx, tg, 0, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	writeIn(t, w, img[:1<<20], 1<<20)
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	corruptByte(t, backing, 1000)
	writeIn(t, w, img[1<<20:], 1<<20)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if string(trailSum()) == string(sum(img)) {
		t.Fatal("trailing read-back did not see damage on the medium")
	}
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); !errors.Is(err, ErrReadBackMismatch) {
		t.Fatalf("damage under a trailing read-back not caught: %v", err)
	}

	// An abandoned write (cancelled) leaves no trail result: the read-back
	// reads everything and sees the partial image.
	cctx, cancel := context.WithCancel(ctx)
	w, err = OpenWriter(cctx, tg, 0, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	writeIn(t, w, make([]byte, 2<<20), 1<<20)
	cancel()
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); !errors.Is(err, ErrReadBackMismatch) {
		t.Fatalf("partial write passed read-back: %v", err)
	}
}
