package powercut

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/crypt"
	"github.com/otadev/otad/internal/update"
)

// buildEncrypted makes the "2.0-encrypted" fixture: a zstd bundle of a new
// image, sealed for a device key that the boards' keyring carries (the
// daemon puts [keyring] decryption-key there). The image is registered
// like every image so the kernel model knows its bytes.
func buildEncrypted(f *fixtures, k *bundle.PrivateKey) (*image, error) {
	dev, err := crypt.GenerateKey(rand.Reader, "x25519")
	if err != nil {
		return nil, err
	}
	f.keyring.Decryption = dev
	img := &image{name: "2.0-encrypted", data: pattern(201, 207<<10+11), kind: good, secver: 2}
	var plain bytes.Buffer
	if _, err := bundle.Create(context.Background(), &plain, bundle.CreateOptions{
		Compatible: compat, Version: img.name, SecurityVersion: img.secver, ChunkSize: chunkSize,
		Created: epoch.Add(-time.Hour)},
		[]bundle.Source{{Class: update.RootfsClass, Encoding: bundle.EncodingZstd, Data: bytes.NewReader(img.data), Size: int64(len(img.data))}},
		[]*bundle.PrivateKey{k}); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", img.name, err)
	}
	var enc bytes.Buffer
	if _, err := bundle.Encrypt(context.Background(), &enc, bytes.NewReader(plain.Bytes()), int64(plain.Len()),
		[]bundle.Signer{k}, []*crypt.PublicKey{&dev.Public}, rand.Reader); err != nil {
		return nil, fmt.Errorf("encrypt %s: %w", img.name, err)
	}
	img.bundle = enc.Bytes()
	if bytes.Contains(img.bundle, img.data[4096:4160]) {
		return nil, fmt.Errorf("bundle %s carries plaintext", img.name)
	}
	f.all = append(f.all, img)
	f.byName[img.name] = img
	return img, nil
}

// TestPowerCutEncryptedCycle runs the encrypted cycle on every medium with
// a cut at every write operation (power lost with unsynced data lost): the
// daemon stop mid-write resumes decrypting at a chunk boundary, and no cut
// leaves the device without a complete image or with the wrong one.
func TestPowerCutEncryptedCycle(t *testing.T) {
	f := loadFixtures(t)
	c := cycleNamed(t, "encrypted-interrupted")
	for _, m := range media {
		ref := newBoard(t, f, m, LoseUnsynced, 1)
		stops := 0
		ref.afterIRQ = func(goal) { stops++ }
		rr, err := ref.run(c)
		if err != nil {
			t.Fatalf("%s reference: %v", m.name, err)
		}
		if stops != 1 {
			t.Fatalf("%s: %d daemon stops in the reference run, want 1", m.name, stops)
		}
		viol := 0
		for k := 1; k <= rr.ops; k += 1 + rr.ops/40 { // ~40 cut points per medium
			b, err := makeBoard(f, m, LoseUnsynced, uint64(k))
			if err != nil {
				t.Fatal(err)
			}
			b.dom.CutAt(k)
			res, err := b.run(c)
			if err != nil {
				viol++
				t.Errorf("%s cut at op %d/%d: %v", m.name, k, rr.ops, err)
			}
			if !res.cut {
				t.Errorf("%s cut at op %d/%d never fired", m.name, k, rr.ops)
			}
		}
		t.Logf("%-7s encrypted-interrupted N=%d ops, %d violations", m.name, rr.ops, viol)
	}
}
