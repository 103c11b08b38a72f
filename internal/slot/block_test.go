package slot

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// bothModes runs f for the O_DIRECT writer and the buffered one.
func bothModes(t *testing.T, f func(t *testing.T, buffered bool)) {
	for _, buffered := range []bool{false, true} {
		name := "direct"
		if buffered {
			name = "buffered"
		}
		t.Run(name, func(t *testing.T) { f(t, buffered) })
	}
}

func TestBlockWriteVerifyAndCorruption(t *testing.T) { bothModes(t, testBlockWriteVerifyAndCorruption) }

func testBlockWriteVerifyAndCorruption(t *testing.T, buffered bool) {
	dev, backing := loopDevice(t, 16<<20)
	other, _ := loopDevice(t, 1<<20)
	ctx := context.Background()
	tg, err := OpenWith(Slot{Name: "B", Device: dev, Type: TypeBlock},
		Slot{Name: "A", Device: other, Type: TypeBlock},
		Options{ChunkSize: 1 << 20, SyncEvery: 3 << 20, Buffered: buffered})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if tg.Size() != 16<<20 {
		t.Fatalf("Size = %d, want BLKGETSIZE64 16 MiB", tg.Size())
	}
	img := randomImage(1, 10<<20+123) // odd tail
	w, err := OpenWriter(ctx, tg, 0, int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if _, direct := w.(*directWriter); direct == buffered {
		t.Fatalf("writer %T with Buffered=%v", w, buffered)
	}
	writeIn(t, w, img, 300<<10)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
		t.Fatalf("read-back of a good write: %v", err)
	}
	onDisk, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk[:len(img)], img) {
		t.Fatal("backing file does not hold the image")
	}

	// Corrupt one byte behind the writer's back, below the block layer.
	// The loop device's own page cache still holds the good data, so this
	// only fails if VerifyReadBack really drops the cache.
	f, err := os.OpenFile(backing, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{^img[5<<20]}, 5<<20); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); !errors.Is(err, ErrReadBackMismatch) {
		t.Fatalf("corruption not caught: %v", err)
	}
}

func TestBlockResumeAtAlignment(t *testing.T) { bothModes(t, testBlockResumeAtAlignment) }

func testBlockResumeAtAlignment(t *testing.T, buffered bool) {
	dev, _ := loopDevice(t, 8<<20)
	ctx := context.Background()
	tg, err := OpenWith(Slot{Name: "B", Device: dev}, Slot{Name: "A", Device: "/nonexistent-active"},
		Options{ChunkSize: 256 << 10, Buffered: buffered})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	img := randomImage(2, 6<<20)
	// First attempt: stops after ~2.3 MiB without Close (power cut stand-in).
	w, _ := tg.OpenWriter(ctx, 0)
	writeIn(t, w, img[:2400<<10], 100<<10)
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := tg.OpenWriter(ctx, 1000); !errors.Is(err, ErrAlign) {
		t.Fatalf("unaligned resume: %v", err)
	}
	// The first writer is abandoned, not closed: the next one ends it.
	resume := int64(2400<<10) / tg.WriteAlign() * tg.WriteAlign()
	if dw, ok := w.(*directWriter); ok {
		defer func() {
			if !dw.closed {
				t.Error("abandoned direct writer still running")
			}
		}()
	}
	w2, err := tg.OpenWriter(ctx, resume)
	if err != nil {
		t.Fatal(err)
	}
	writeIn(t, w2, img[resume:], 64<<10)
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
		t.Fatal(err)
	}
}

func TestBlockImageTooLarge(t *testing.T) {
	dev, _ := loopDevice(t, 2<<20)
	ctx := context.Background()
	tg, err := Open(Slot{Name: "B", Device: dev}, Slot{Name: "A", Device: "/nonexistent-active"})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if _, err := OpenWriter(ctx, tg, 0, 2<<20+1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized image accepted up front: %v", err)
	}
	w, err := tg.OpenWriter(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 2<<20)); err != nil {
		t.Fatal(err)
	}
	if n, err := w.Write([]byte{1}); !errors.Is(err, ErrTooLarge) || n != 0 {
		t.Fatalf("write past the end: n=%d err=%v", n, err)
	}
	if err := VerifyReadBack(ctx, tg, 3<<20, sum(nil)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("read-back past the end: %v", err)
	}
}

func TestFileTargetSkipUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slotB.img")
	tg, err := NewFileTarget(path, 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	ctx := context.Background()
	img := randomImage(3, 2<<20+5)
	write := func(skip bool) {
		t.Helper()
		tg.(*fdTarget).o.SkipUnchanged = skip
		w, err := OpenWriter(ctx, tg, 0, int64(len(img)))
		if err != nil {
			t.Fatal(err)
		}
		writeIn(t, w, img, 1<<20)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	mtime := func() time.Time {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.ModTime()
	}
	write(false)
	os.Chtimes(path, old, old)
	write(true)
	if !mtime().Equal(old) {
		t.Fatal("skip-unchanged rewrote identical data")
	}
	img[len(img)-1] ^= 0xff
	write(true)
	if mtime().Equal(old) {
		t.Fatal("skip-unchanged skipped a changed chunk")
	}
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
		t.Fatal(err)
	}
	// Reopened through the config path, a file slot keeps its fixed size.
	tg2, err := Open(Slot{Name: "B", Device: path, Type: TypeFile}, Slot{Name: "A", Device: path + ".a"})
	if err != nil {
		t.Fatal(err)
	}
	defer tg2.Close()
	if tg2.Size() != 3<<20 {
		t.Fatalf("file slot size %d", tg2.Size())
	}
}

func TestWriterCancel(t *testing.T) {
	tg, err := NewFileTarget(filepath.Join(t.TempDir(), "s"), 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	ctx, cancel := context.WithCancel(context.Background())
	w, _ := tg.OpenWriter(ctx, 0)
	if _, err := w.Write(make([]byte, 100)); err != nil {
		t.Fatal(err) // buffered, no chunk due yet
	}
	cancel()
	if _, err := w.Write(make([]byte, 5<<20)); !errors.Is(err, context.Canceled) {
		t.Fatalf("write after cancel: %v", err)
	}
	if _, err := Hash(ctx, tg, 1<<20); !errors.Is(err, context.Canceled) {
		t.Fatalf("Hash with cancelled ctx: %v", err)
	}
}

// Syncs at odd offsets (mid-sector) and skip-unchanged on a block device:
// the direct writer rewrites unaligned remainders and must still end with
// exactly the image.
func TestBlockSyncAnywhereAndSkipUnchanged(t *testing.T) {
	bothModes(t, func(t *testing.T, buffered bool) {
		dev, backing := loopDevice(t, 8<<20)
		ctx := context.Background()
		img := randomImage(21, 5<<20+77)
		for _, skip := range []bool{false, true, true} {
			tg, err := OpenWith(Slot{Name: "B", Device: dev}, Slot{Name: "A", Device: "/nonexistent-active"},
				Options{ChunkSize: 512 << 10, Buffered: buffered, SkipUnchanged: skip})
			if err != nil {
				t.Fatal(err)
			}
			w, err := OpenVerifiedWriter(ctx, tg, 0, int64(len(img)), sum(img))
			if err != nil {
				t.Fatal(err)
			}
			for i, k := 0, 0; i < len(img); k++ {
				n := min(1000+k*4099, len(img)-i)
				if _, err := w.Write(img[i : i+n]); err != nil {
					t.Fatal(err)
				}
				i += n
				if k%3 == 0 {
					if err := w.Sync(); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			// The direct writer's comparison must cover the image exactly,
			// across the rewritten remainders and skipped chunks.
			if p := tg.(*fdTarget).proof; !buffered {
				if p == nil {
					t.Fatal("no per-chunk comparison")
				}
				<-p.done
				if !p.final || p.upto != int64(len(img)) || p.gap || p.bad != nil {
					t.Fatalf("skip=%v: compared [0,%d) gap=%v bad=%v final=%v", skip, p.upto, p.gap, p.bad, p.final)
				}
			} else if p != nil {
				t.Fatal("buffered writer claims a comparison")
			}
			if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
				t.Fatalf("skip=%v: %v", skip, err)
			}
			tg.Close()
			img[len(img)/2] ^= 1 // the next round has one changed chunk
		}
		raw, err := os.ReadFile(backing)
		if err != nil {
			t.Fatal(err)
		}
		img[len(img)/2] ^= 1 // undo the last flip: the image written last
		if !bytes.Equal(raw[:len(img)], img) {
			t.Fatal("device does not hold the last image")
		}
	})
}

func TestMountedDeviceIsRefused(t *testing.T) {
	dev, _ := loopDevice(t, 8<<20)
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "ro", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	// Even if the config got the active slot wrong, a mounted device is not
	// opened for writing (O_EXCL).
	if tg, err := Open(Slot{Name: "B", Device: dev}, Slot{Name: "A", Device: "/nonexistent-active"}); err == nil {
		tg.Close()
		t.Fatal("mounted block device opened for writing")
	}
	// Reading it (a delta source is the mounted active slot) is fine.
	tg, err := OpenReadOnly(Slot{Name: "A", Device: dev, Type: TypeBlock})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if _, err := tg.OpenWriter(context.Background(), 0); err == nil {
		t.Fatal("read-only target handed out a writer")
	}
	sb := make([]byte, 2)
	if _, err := tg.ReadAt(sb, 1024+0x38); err != nil || sb[0] != 0x53 || sb[1] != 0xef {
		t.Fatalf("ext4 magic not read through OpenReadOnly: %x %v", sb, err)
	}
}
