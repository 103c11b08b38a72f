package slot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// ubiOnNull opens /dev/null (char 1:3) as a UBI volume described by a fake
// sysfs: the sysfs handling and the update bookkeeping are tested here; the
// UBI_IOCVOLUP path itself needs a kernel with UBI (VM tests).
func ubiOnNull(t *testing.T, corrupted string) (*ubiTarget, string) {
	return ubiOnNullMarker(t, corrupted, "0\n")
}

func ubiOnNullMarker(t *testing.T, corrupted, updMarker string) (*ubiTarget, string) {
	t.Helper()
	sys := t.TempDir()
	vol := filepath.Join(sys, "devices/virtual/ubi/ubi0/ubi0_1")
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{"corrupted": corrupted, "upd_marker": updMarker, "reserved_ebs": "10\n", "usable_eb_size": "126976\n"} {
		if err := os.WriteFile(filepath.Join(vol, name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(sys, "dev/char"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(vol, filepath.Join(sys, "dev/char/1:3")); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	tg, err := newUBITarget(f, Options{Sysfs: sys}.withDefaults(), true)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg, vol
}

func TestUBIVolumeModel(t *testing.T) {
	tg, vol := ubiOnNull(t, "0\n")
	ctx := context.Background()
	if tg.Size() != 10*126976 || tg.WriteAlign() != tg.Size() {
		t.Fatalf("Size %d WriteAlign %d", tg.Size(), tg.WriteAlign())
	}
	if _, err := tg.OpenWriter(ctx, 0); !errors.Is(err, ErrNeedSize) {
		t.Fatalf("OpenWriter without size: %v", err)
	}
	if _, err := OpenWriter(ctx, tg, 126976, 1000); !errors.Is(err, ErrAlign) {
		t.Fatalf("resume inside a UBI update: %v", err)
	}
	if _, err := OpenWriter(ctx, tg, 0, tg.Size()+1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := OpenWriter(ctx, tg, 0, 1000); err == nil {
		t.Fatal("UBI_IOCVOLUP on /dev/null succeeded")
	}
	if bad, err := VolumeCorrupted(tg); err != nil || bad {
		t.Fatalf("VolumeCorrupted = %v, %v", bad, err)
	}
	// The kernel flags an interrupted update; read-back reports it first.
	if err := os.WriteFile(filepath.Join(vol, "corrupted"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if bad, err := VolumeCorrupted(tg); err != nil || !bad {
		t.Fatalf("VolumeCorrupted = %v, %v after the kernel flagged it", bad, err)
	}
	if err := VerifyReadBack(ctx, tg, 0, sum(nil)); !errors.Is(err, ErrVolumeCorrupted) {
		t.Fatalf("corrupted volume passed read-back: %v", err)
	}
}

// A real kernel leaves an interrupted update with the update marker set and
// "corrupted" at 0 (seen in the VM on nandsim): that is interrupted too.
func TestUBIUpdateMarkerMeansInterrupted(t *testing.T) {
	tg, _ := ubiOnNullMarker(t, "0\n", "1\n")
	if bad, err := VolumeCorrupted(tg); err != nil || !bad {
		t.Fatalf("VolumeCorrupted = %v, %v with upd_marker set", bad, err)
	}
	if err := VerifyReadBack(context.Background(), tg, 0, sum(nil)); !errors.Is(err, ErrVolumeCorrupted) {
		t.Fatalf("volume with its update marker set passed read-back: %v", err)
	}
}

func TestUBIWriterCountsBytes(t *testing.T) {
	tg, _ := ubiOnNull(t, "0\n")
	w := &ubiWriter{ctx: context.Background(), t: tg, size: 100}
	if _, err := w.Write(make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 41)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("more than announced: %v", err)
	}
	if err := w.Close(); !errors.Is(err, ErrVolumeCorrupted) {
		t.Fatalf("short update closed cleanly: %v", err)
	}
	w = &ubiWriter{ctx: context.Background(), t: tg, size: 100}
	if _, err := w.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("complete update: %v", err)
	}
}

// TestRealUBIVolume updates a kernel UBI volume (nandsim + ubiattach in the
// VM): OTAD_TEST_UBIVOL=/dev/ubiX_Y names a scratch volume this test may
// destroy.
func TestRealUBIVolume(t *testing.T) {
	dev := os.Getenv("OTAD_TEST_UBIVOL")
	if dev == "" {
		t.Skip("set OTAD_TEST_UBIVOL=/dev/ubiX_Y (a scratch volume) to run")
	}
	ctx := context.Background()
	tg, err := Open(Slot{Name: "B", Device: dev, Type: TypeUBIVol}, Slot{Name: "A", Device: "/nonexistent-active"})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	img := randomImage(13, int(tg.Size()/2)+999)
	update := func(n int) error {
		w, err := OpenWriter(ctx, tg, 0, int64(len(img)))
		if err != nil {
			t.Fatal(err)
		}
		writeIn(t, w, img[:n], 10000)
		return w.Close()
	}
	// Interrupted: the kernel flags the volume and read-back refuses it.
	if err := update(len(img) / 3); !errors.Is(err, ErrVolumeCorrupted) {
		t.Fatalf("short update: %v", err)
	}
	if bad, err := tg.(*ubiTarget).Corrupted(); err != nil || !bad {
		t.Fatalf("kernel did not flag the interrupted update: %v %v", bad, err)
	}
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); !errors.Is(err, ErrVolumeCorrupted) {
		t.Fatalf("read-back of an interrupted update: %v", err)
	}
	// Complete: clean flag, image reads back.
	if err := update(len(img)); err != nil {
		t.Fatal(err)
	}
	if err := VerifyReadBack(ctx, tg, int64(len(img)), sum(img)); err != nil {
		t.Fatal(err)
	}
}
