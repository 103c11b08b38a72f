package powercut

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/delta"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/slot"
	"github.com/otadev/otad/internal/update"
)

// Delta fixture geometry. Small windows and chunks make the patch arrive,
// and the new image leave, in many pieces, so a cut or a daemon stop can
// land between two windows the way it would between two 1 MiB windows of
// a real rootfs.
const (
	deltaWindow = 16 << 10
	deltaChunk  = bundle.MinChunkSize
)

// deltaTarget derives the delta fixture's image from the factory image the
// way one release differs from the one before: bytes edited in place, bytes
// changed throughout a region (diff bytes, not literals), new data inserted
// at an unaligned offset (everything after it shifts), a region dropped,
// a region moved, new data at the end, and a different length.
func deltaTarget(old []byte) []byte {
	var nu []byte
	nu = append(nu, old[:30<<10]...)
	mid := bytes.Clone(old[30<<10 : 90<<10])
	copy(mid[1000:], "otad 2.0-delta build 4711")
	for i := 20 << 10; i < 24<<10; i++ {
		mid[i] ^= byte(i>>4) | 1
	}
	nu = append(nu, mid...)
	nu = append(nu, pattern(101, 24<<10+77)...)
	nu = append(nu, old[90<<10:150<<10]...)
	nu = append(nu, old[158<<10:]...) // 8 KiB dropped
	nu = append(nu, old[10<<10:14<<10]...)
	return append(nu, pattern(102, 5<<10)...)
}

// buildDelta makes the "2.0-delta" fixture: a signed delta bundle from the
// factory image to deltaTarget(factory), registered like every image so
// the kernel model knows the bytes it produces.
func buildDelta(f *fixtures, k *bundle.PrivateKey) (*image, error) {
	old := f.factory.data
	nu := deltaTarget(old)
	var patch bytes.Buffer
	st, err := delta.Generate(context.Background(), bytes.NewReader(old), int64(len(old)),
		bytes.NewReader(nu), int64(len(nu)), &patch, delta.GenOptions{FullSize: -1, WindowSize: deltaWindow})
	if err != nil {
		return nil, fmt.Errorf("delta patch: %w", err)
	}
	if st.CopyBytes == 0 || st.AddBytes == 0 || st.LitBytes == 0 || st.Windows < 8 {
		// The fixture must exercise every kind of operation Apply does.
		return nil, fmt.Errorf("delta patch does not exercise copy, add and literal windows: %+v", st)
	}
	hexSum := func(p []byte) string { return hex.EncodeToString(sumPtr(p)) }
	img := &image{name: "2.0-delta", data: nu, kind: good, secver: 2, base: f.factory, patchLen: int64(patch.Len())}
	var buf bytes.Buffer
	if _, err := bundle.Create(context.Background(), &buf, bundle.CreateOptions{
		Compatible: compat, Version: img.name, SecurityVersion: img.secver, ChunkSize: deltaChunk,
		Created: epoch.Add(-time.Hour)},
		[]bundle.Source{{Class: update.RootfsClass, Encoding: bundle.EncodingDelta,
			Data: bytes.NewReader(patch.Bytes()), Size: int64(patch.Len()),
			TargetSize: int64(len(nu)), TargetSHA256: hexSum(nu),
			Delta: &bundle.DeltaSource{SourceSHA256: hexSum(old), SourceSize: int64(len(old))}}},
		[]*bundle.PrivateKey{k}); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", img.name, err)
	}
	img.bundle = buf.Bytes()
	// The payload is the bundle's tail (docs/bundle-format.md).
	img.patchAt = int64(len(img.bundle)) - img.patchLen
	if !bytes.Equal(img.bundle[img.patchAt:], patch.Bytes()) {
		return nil, fmt.Errorf("bundle %s: the patch is not the bundle's tail", img.name)
	}
	f.all = append(f.all, img)
	f.byName[img.name] = img

	// The same image as a full bundle, the delta's fallback. Only a source
	// name: the kernel model knows the image as the delta's.
	var full bytes.Buffer
	if _, err := bundle.Create(context.Background(), &full, bundle.CreateOptions{
		Compatible: compat, Version: "2.0", SecurityVersion: img.secver, ChunkSize: chunkSize,
		Created: epoch.Add(-time.Hour)},
		[]bundle.Source{{Class: update.RootfsClass, Encoding: bundle.EncodingZstd, Data: bytes.NewReader(nu), Size: int64(len(nu))}},
		[]*bundle.PrivateKey{k}); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", deltaFull, err)
	}
	f.byName[deltaFull] = &image{name: deltaFull, data: nu, kind: good, secver: img.secver, bundle: full.Bytes()}
	return img, nil
}

// deltaFull names the full bundle of the delta fixture's image.
const deltaFull = "2.0-delta-full"

// TestPowerCutInterruptsLandMidWrite checks the interrupted cycles
// themselves: the daemon stop lands while the image is being written (the
// journal says writing, the target slot holds more of the new image than
// it held before, not all of it), and the cycle then commits the image.
// Without this a stop that landed before the write or after it would
// still pass the cycle, testing nothing about the restart.
func TestPowerCutInterruptsLandMidWrite(t *testing.T) {
	f := loadFixtures(t)
	for _, m := range media {
		for _, name := range []string{"interrupted-resumed", "delta-interrupted"} {
			c := cycleNamed(t, name)
			b := newBoard(t, f, m, LoseUnsynced, 1)
			stops := 0
			b.afterIRQ = func(g goal) {
				stops++
				rec, err := (&journal.Journal{FS: b.fs, Dir: dataDir}).Load()
				if err != nil || rec.State != journal.StateWriting || rec.Target == b.booted ||
					rec.Bundle.ImageSHA256 != hex.EncodeToString(sumPtr(g.img.data)) {
					t.Errorf("%s/%s: after the stop the journal holds %+v (%v), want the write of %s into the other slot",
						m.name, name, rec, err, g.img.name)
					return
				}
				got := make([]byte, len(g.img.data))
				n, _ := b.slots[rec.Target].target().ReadAt(got, 0)
				before := commonPrefix(f.factory.data, g.img.data) // both slots start with the factory image
				if p := commonPrefix(got[:n], g.img.data); p <= before || p >= len(g.img.data) {
					t.Errorf("%s/%s: slot %s holds %d leading bytes of %s (%d before the install, %d in all): the stop did not land mid-write",
						m.name, name, rec.Target, p, g.img.name, before, len(g.img.data))
				}
			}
			if _, err := b.run(c); err != nil {
				t.Errorf("%s/%s: %v", m.name, name, err)
			}
			if stops != 1 {
				t.Errorf("%s/%s: %d interrupted attempts, want 1", m.name, name, stops)
			}
		}
	}
}

// TestPowerCutReadOnlySourceGuard: the board's read-only opening of a
// slot (the delta source) reports an engine that writes through it.
func TestPowerCutReadOnlySourceGuard(t *testing.T) {
	f := loadFixtures(t)
	b := newBoard(t, f, mediumNamed(t, "file"), LoseUnsynced, 1)
	b.mods = append(b.mods, func(c *update.Config) {
		ro := c.OpenReadOnly
		c.OpenSlot = func(target, _ slot.Slot) (slot.Target, error) { return ro(target) }
	})
	_, err := b.run(cycleNamed(t, "delta-commit"))
	if err == nil || !strings.Contains(err.Error(), "through a read-only open") {
		t.Fatalf("run error %v, want a write through a read-only open", err)
	}
}

func cycleNamed(t *testing.T, name string) cycle {
	t.Helper()
	for _, c := range cycles {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no cycle %q", name)
	return cycle{}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func sumPtr(p []byte) []byte { s := sum(p); return s[:] }

// TestPowerCutDeltaFallbackOpensFullBundle: in the delta-fallback cycle
// the delta is refused (the device runs 2.0, not the delta's source) and
// the image comes from the full bundle; without this the cycle would also
// pass if the engine applied the delta to the wrong source.
func TestPowerCutDeltaFallbackOpensFullBundle(t *testing.T) {
	f := loadFixtures(t)
	for _, m := range media {
		b := newBoard(t, f, m, LoseUnsynced, 1)
		opened := map[string]int{}
		b.mods = append(b.mods, func(c *update.Config) {
			open := c.OpenSource
			c.OpenSource = func(ctx context.Context, src string) (update.Source, error) {
				opened[src]++ // the engine opens sources one at a time
				return open(ctx, src)
			}
		})
		if _, err := b.run(cycleNamed(t, "delta-fallback")); err != nil {
			t.Errorf("%s: %v", m.name, err)
		}
		if opened[f.delta.name] == 0 || opened[deltaFull] == 0 {
			t.Errorf("%s: sources opened %v, want the delta and then its full bundle", m.name, opened)
		}
	}
}
