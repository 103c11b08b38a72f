package update

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/delta"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/slot"
	"github.com/otadev/otad/internal/testutil/loopdev"
)

func deltaBundle(t *testing.T, d *device, oldImg, newImg []byte) string {
	t.Helper()
	return deltaBundleNamed(t, d, "delta.otab", oldImg, newImg, hexSum(newImg))
}

// deltaBundleNamed writes a delta bundle whose manifest names targetSHA256
// as the image the patch makes.
func deltaBundleNamed(t *testing.T, d *device, name string, oldImg, newImg []byte, targetSHA256 string) string {
	t.Helper()
	var patch bytes.Buffer
	if _, err := delta.Generate(context.Background(), bytes.NewReader(oldImg), int64(len(oldImg)),
		bytes.NewReader(newImg), int64(len(newImg)), &patch, delta.GenOptions{FullSize: -1}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := bundle.Create(context.Background(), &buf,
		bundle.CreateOptions{Compatible: testCompat, Version: "1.1", ChunkSize: chunk, TempDir: d.dir},
		[]bundle.Source{{Class: "rootfs", Encoding: bundle.EncodingDelta, Data: bytes.NewReader(patch.Bytes()),
			Size: int64(patch.Len()), TargetSize: int64(len(newImg)), TargetSHA256: targetSHA256,
			Delta: &bundle.DeltaSource{SourceSHA256: hexSum(oldImg), SourceSize: int64(len(oldImg))}}},
		[]*bundle.PrivateKey{d.key}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(d.dir, name)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDeltaInstallFromActiveSlot(t *testing.T) {
	d := newDevice(t)
	old := image(1, 3<<20) // the factory image in A
	nu := bytes.Clone(old)
	copy(nu[100000:], "patched region one")
	copy(nu[2<<20:], bytes.Repeat([]byte{7}, 5000))
	b := deltaBundle(t, d, old, nu)
	e := d.engine()
	d.start(e)
	if _, err := e.installNow(b, nil); err != nil {
		t.Fatalf("delta install: %v", err)
	}
	if !bytes.Equal(d.slotBytes("B", len(nu)), nu) || d.envVar("otad_slot") != "B" {
		t.Fatal("delta result wrong or not armed")
	}

	// The same delta against a device whose active slot holds something
	// else is refused before anything is written.
	d2 := newDevice(t)
	d2.key, d2.keyring = d.key, d.keyring
	e2 := d2.engine()
	d2.start(e2)
	e2.cfg.Journal.SaveSlot(&journal.SlotRecord{Name: "A", State: journal.SlotGood, SHA256: strings.Repeat("ab", 32)})
	if _, err := e2.installNow(b, nil); !errors.Is(err, delta.ErrSourceMismatch) || !strings.Contains(err.Error(), "delta bundle applies to image") {
		t.Fatalf("mismatched delta: %v", err)
	}
	if r := d2.slotRec("B"); r.State != journal.SlotUnknown {
		t.Fatalf("slot B touched: %+v", r)
	}
	// Without a slot record the bytes decide, still before anything is
	// touched.
	d2.writeSlot("A", image(8, 3<<20))
	e2.cfg.Journal.SaveSlot(&journal.SlotRecord{Name: "A", State: journal.SlotGood})
	if _, err := e2.installNow(b, nil); !errors.Is(err, delta.ErrSourceMismatch) || !strings.Contains(err.Error(), "delta source mismatch") {
		t.Fatalf("delta applied to the wrong source bytes: %v", err)
	}
	if r := d2.slotRec("B"); r.State != journal.SlotUnknown || d2.envVar("upgrade_available") != "0" {
		t.Fatalf("slot B touched or armed after a refused delta: %+v", r)
	}
}

// With a fallback bundle named, a delta whose source is not in the active
// slot installs the full bundle instead; a fallback that is itself refused
// reports its own error, and nothing is armed.
func TestDeltaFallbackToFullBundle(t *testing.T) {
	d := newDevice(t)
	old := image(5, 3<<20) // what the delta was made from; A holds image(1, …)
	nu := bytes.Clone(old)
	copy(nu[4096:], "new release")
	b := deltaBundle(t, d, old, nu)
	full := d.bundleFile("full.otab", "1.1", 0, nu, bundle.EncodingZstd)
	e := d.engine()
	d.start(e)
	if _, err := e.installNow(b, nil); !errors.Is(err, delta.ErrSourceMismatch) {
		t.Fatalf("no fallback named: %v", err)
	}
	if r := d.slotRec("B"); r.State != journal.SlotUnknown {
		t.Fatalf("slot B touched by a refused delta: %+v", r)
	}
	// A fallback that is not a valid bundle: its error, B still not armed.
	junk := filepath.Join(d.dir, "junk.otab")
	if err := os.WriteFile(junk, []byte("not a bundle"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.installNow(b, map[string]any{"fallback": junk}); err == nil || !strings.Contains(err.Error(), "delta source mismatch") ||
		!strings.Contains(err.Error(), "fallback "+junk) {
		t.Fatalf("junk fallback: %v", err)
	}
	// A fallback of another image (another release, a wrong URL) is refused
	// before anything is touched too.
	other := d.bundleFile("other.otab", "1.2", 0, image(6, 3<<20), bundle.EncodingZstd)
	if _, err := e.installNow(b, map[string]any{"fallback": other}); err == nil || !strings.Contains(err.Error(), "the fallback bundle holds image") {
		t.Fatalf("fallback of another image: %v", err)
	}
	if r := d.slotRec("B"); r.State != journal.SlotUnknown || d.envVar("upgrade_available") != "0" {
		t.Fatalf("slot B touched or armed after refused fallbacks: %+v", r)
	}
	if _, err := e.installNow(b, map[string]any{"fallback": full}); err != nil {
		t.Fatalf("fallback to the full bundle: %v", err)
	}
	if rec := d.journalRec(); rec.Bundle.Source != full {
		t.Fatalf("journal names %q as the source; a resume must reopen the full bundle", rec.Bundle.Source)
	}
	if !bytes.Equal(d.slotBytes("B", len(nu)), nu) || d.envVar("otad_slot") != "B" {
		t.Fatal("fallback did not install the full image")
	}
	if r := d.slotRec("B"); r.SHA256 != hexSum(nu) || r.State != journal.SlotPending {
		t.Fatalf("slot B record after the fallback: %+v", r)
	}
	// A matching delta never uses its fallback.
	d2 := newDevice(t)
	d2.key, d2.keyring = d.key, d.keyring
	d2.writeSlot("A", old)
	e2 := d2.engine()
	d2.start(e2)
	if _, err := e2.installNow(b, map[string]any{"fallback": junk}); err != nil {
		t.Fatalf("matching delta with a fallback named: %v", err)
	}
	if !bytes.Equal(d2.slotBytes("B", len(nu)), nu) {
		t.Fatal("delta result wrong")
	}
	if _, err := e2.installNow(b, map[string]any{"fallback": true}); err == nil {
		t.Fatal("a non-string fallback option was accepted")
	}
}

func TestMarkOperations(t *testing.T) {
	d := newDevice(t)
	b := d.bundleFile("v2.otab", "2.0", 4, image(2, 1<<20), bundle.EncodingRaw)
	e := d.engine()
	d.start(e)
	if err := e.MarkGood("C"); err == nil {
		t.Fatal("slot C accepted")
	}
	if err := e.MarkActive("B"); err == nil {
		t.Fatal("MarkActive of an empty slot accepted")
	}
	if err := e.MarkBad("A"); err == nil {
		t.Fatal("marking the running committed slot bad accepted")
	}
	if _, err := e.installNow(b, nil); err != nil {
		t.Fatal(err)
	}
	// MarkBad of the armed target disarms it.
	if err := e.MarkBad("B"); err != nil {
		t.Fatal(err)
	}
	if d.envVar("otad_slot") != "A" || d.envVar("upgrade_available") != "0" || d.slotRec("B").State != journal.SlotBad {
		t.Fatal("MarkBad did not disarm")
	}
	// Reinstall, boot it, and commit by hand with MarkGood (no health checks).
	if _, err := e.installNow(b, nil); err != nil {
		t.Fatal(err)
	}
	d.powerOn()
	e = d.engine(func(c *Config) { c.Confirmer = blockingConfirmer{} })
	if err := e.recoverOnly(); err != nil {
		t.Fatal(err)
	}
	if !e.Status().TrialBoot {
		t.Fatal("not a trial boot")
	}
	if err := e.MarkGood("B"); err != nil {
		t.Fatal(err)
	}
	if d.envVar("upgrade_available") != "0" || d.slotRec("B").State != journal.SlotGood {
		t.Fatal("MarkGood did not commit")
	}
	if fl, _ := e.cfg.Floor.Get(); fl != 4 {
		t.Fatalf("floor %d after MarkGood commit", fl)
	}
	// MarkActive A (good, holds the factory image): armed trial of A from B.
	d.slotRec("A")
	e.cfg.Journal.SaveSlot(&journal.SlotRecord{Name: "A", State: journal.SlotGood, SHA256: hexSum(image(1, 3<<20)), Version: "1.0"})
	if err := e.MarkActive("A"); err != nil {
		t.Fatal(err)
	}
	if d.envVar("otad_slot") != "A" || d.envVar("otad_prev") != "B" || d.envVar("upgrade_available") != "1" {
		t.Fatal("MarkActive did not arm A")
	}
	// MarkActive of the booted slot undoes it.
	if err := e.MarkActive("B"); err != nil {
		t.Fatal(err)
	}
	if d.envVar("otad_slot") != "B" || d.envVar("upgrade_available") != "0" {
		t.Fatal("MarkActive(booted) did not disarm")
	}
}

// blockingConfirmer never answers; MarkGood must not need it.
type blockingConfirmer struct{}

func (blockingConfirmer) Confirm(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

// recoverOnly runs Start's synchronous part without starting the job it
// returns (the test plays the operator during a trial boot).
func (e *Engine) recoverOnly() error {
	_, _, err := e.recoverState(context.Background())
	return err
}

// On block devices a delta install settles its read-back from the O_DIRECT
// compare on write, not from a second hash of the slot: delta.Apply checked
// the image SHA-256 on the way in, as the bundle reader does for full
// images. Seen from outside: a byte changed on the medium after its chunk
// was compared is not noticed (the documented limit of that proof, which a
// re-hash would catch), while the same change made with FullReadBack on
// fails the install.
func TestDeltaReadBackByCompareOnBlockDevices(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	for _, full := range []bool{false, true} {
		d := newDevice(t)
		backing := map[string]string{}
		for _, n := range []string{"A", "B"} {
			s := d.slots[n]
			backing[n] = s.Device
			s.Device, s.Type = loopdev.Attach(t, s.Device, false), slot.TypeBlock
			d.slots[n] = s
		}
		old := d.slotBytes("A", 3<<20)
		nu := bytes.Clone(old)
		copy(nu[100000:], "patched region one")
		b := deltaBundle(t, d, old, nu)
		e := d.engine(func(c *Config) {
			c.OpenSlot = func(target, active slot.Slot) (slot.Target, error) {
				return slot.OpenWith(target, active, slot.Options{FullReadBack: full})
			}
			c.VerifyReadBack = func(ctx context.Context, tg slot.Target, size int64, sum []byte) error {
				// After the write and its compare, before the read-back.
				f, err := os.OpenFile(backing["B"], os.O_WRONLY, 0)
				if err != nil {
					return err
				}
				defer f.Close()
				if _, err := f.WriteAt([]byte{^nu[5]}, 5); err != nil {
					return err
				}
				return slot.VerifyReadBack(ctx, tg, size, sum)
			}
		})
		d.start(e)
		_, err := e.installNow(b, nil)
		switch {
		case !full && err != nil:
			t.Fatalf("delta install on loop devices: %v", err)
		case full && !errors.Is(err, slot.ErrReadBackMismatch):
			t.Fatalf("FullReadBack: change after the write not caught: %v", err)
		}
	}
}

// An all-zero image hash would switch off Apply's image check: a delta
// bundle naming one is refused before the target slot is touched.
func TestDeltaZeroImageHashRefused(t *testing.T) {
	d := newDevice(t)
	old := d.slotBytes("A", 3<<20)
	nu := bytes.Clone(old)
	nu[7] ^= 1
	p := deltaBundleNamed(t, d, "zero.otab", old, nu, strings.Repeat("0", 64))
	e := d.engine()
	d.start(e)
	if _, err := e.installNow(p, nil); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("zero image hash: %v", err)
	}
	if r := d.slotRec("B"); r.State != journal.SlotUnknown {
		t.Fatalf("slot B touched: %+v", r)
	}
}

// A patch made from a larger source than the active slot holds is refused
// by the header check before anything is touched, and falls back.
func TestDeltaLargerSourceRefusedBeforeTouching(t *testing.T) {
	d := newDevice(t)
	old := append(d.slotBytes("A", slotSize), image(7, 1<<20)...) // a source beyond the slot's end
	nu := bytes.Clone(old[:3<<20])
	copy(nu[8192:], "changed")
	b := deltaBundle(t, d, old, nu)
	full := d.bundleFile("full.otab", "1.1", 0, nu, bundle.EncodingZstd)
	e := d.engine()
	d.start(e)
	if _, err := e.installNow(b, nil); !errors.Is(err, delta.ErrSourceMismatch) || !strings.Contains(err.Error(), "slot holds") {
		t.Fatalf("larger source: %v", err)
	}
	if r := d.slotRec("B"); r.State != journal.SlotUnknown || d.envVar("upgrade_available") != "0" {
		t.Fatalf("slot B touched or armed: %+v", r)
	}
	if _, err := e.installNow(b, map[string]any{"fallback": full}); err != nil {
		t.Fatalf("fallback: %v", err)
	}
	d.assertArmedWith(nu)
}

// skip-unchanged is decided before the delta's source check: a device that
// already runs the delta's image has nothing to do, whatever its source.
func TestDeltaSkipUnchangedBeforeSourceCheck(t *testing.T) {
	d := newDevice(t)
	old := d.slotBytes("A", 3<<20)
	nu := bytes.Clone(old)
	nu[100] ^= 1
	b := deltaBundle(t, d, old, nu)
	d.writeSlot("A", nu)
	e := d.engine()
	d.start(e)
	e.cfg.Journal.SaveSlot(&journal.SlotRecord{Name: "A", State: journal.SlotGood, SHA256: hexSum(nu)})
	if _, err := e.installNow(b, map[string]any{"skip-unchanged": true}); err != nil {
		t.Fatalf("skip-unchanged delta onto its own image: %v", err)
	}
	if r := d.slotRec("B"); r.State != journal.SlotUnknown {
		t.Fatalf("slot B touched: %+v", r)
	}
}

// The bundle is opened a second time after the source check; when that
// fails (network, cancel, file gone) the install fails cleanly, nothing
// touched, and the engine survives.
func TestDeltaReopenFailure(t *testing.T) {
	d := newDevice(t)
	old := d.slotBytes("A", 3<<20)
	nu := bytes.Clone(old)
	nu[100] ^= 1
	b := deltaBundle(t, d, old, nu)
	opens := 0
	e := d.engine(func(c *Config) {
		c.OpenSource = func(ctx context.Context, src string) (Source, error) {
			if opens++; opens == 2 {
				return nil, errors.New("connection refused")
			}
			return fetch.Open(ctx, src, fetch.Options{})
		}
	})
	d.start(e)
	if _, err := e.installNow(b, nil); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("reopen failure: %v", err)
	}
	if r := d.slotRec("B"); r.State != journal.SlotUnknown || d.envVar("upgrade_available") != "0" {
		t.Fatalf("slot B touched or armed: %+v", r)
	}
	if _, err := e.installNow(b, nil); err != nil { // the engine is still usable
		t.Fatalf("install after a failed reopen: %v", err)
	}
	d.assertArmedWith(nu)
}
