package update

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/crypt"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/journal"
)

// encrypted seals the plain bundle bytes for the device keys given, signed
// with the device's release key.
func encrypted(t *testing.T, d *device, plain []byte, to ...*crypt.PrivateKey) []byte {
	t.Helper()
	var pubs []*crypt.PublicKey
	for _, k := range to {
		pubs = append(pubs, &k.Public)
	}
	var out bytes.Buffer
	if _, err := bundle.Encrypt(context.Background(), &out, bytes.NewReader(plain), int64(len(plain)),
		[]bundle.Signer{d.key}, pubs, rand.Reader); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func plainBundle(t *testing.T, d *device, img []byte, enc string) []byte {
	return plainBundleSV(t, d, img, enc, 1)
}

func plainBundleSV(t *testing.T, d *device, img []byte, enc string, secver uint64) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := bundle.Create(context.Background(), &buf,
		bundle.CreateOptions{Compatible: testCompat, Version: "2.0", SecurityVersion: secver, ChunkSize: chunk,
			TempDir: t.TempDir(), Created: time.Now().Add(-time.Hour)},
		[]bundle.Source{{Class: "rootfs", Encoding: enc, Data: bytes.NewReader(img), Size: int64(len(img))}},
		[]*bundle.PrivateKey{d.key}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func deviceKey(t *testing.T, alg string) *crypt.PrivateKey {
	t.Helper()
	k, err := crypt.GenerateKey(rand.Reader, alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// noPlaintextOutsideSlots fails when any file under dir other than the
// slot images holds a sample of img.
func noPlaintextOutsideSlots(t *testing.T, dir string, img []byte) {
	t.Helper()
	samples := [][]byte{img[1000:1064], img[len(img)/2 : len(img)/2+64], img[len(img)-64:]}
	filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || strings.HasPrefix(de.Name(), "slot-") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, s := range samples {
			if bytes.Contains(b, s) {
				t.Errorf("plaintext of the image found in %s", p)
			}
		}
		return nil
	})
}

func TestEncryptedInstallFullZstdDelta(t *testing.T) {
	for _, enc := range []string{bundle.EncodingRaw, bundle.EncodingZstd, bundle.EncodingDelta} {
		t.Run(enc, func(t *testing.T) {
			d := newDevice(t)
			dev := deviceKey(t, "x25519")
			d.keyring.Decryption = dev
			old := image(1, 3<<20) // the factory image in A
			img := image(7, 3<<20+777)
			var plain []byte
			if enc == bundle.EncodingDelta {
				img = bytes.Clone(old)
				copy(img[100000:], image(9, 20000))
				copy(img[2<<20:], bytes.Repeat([]byte{7}, 5000))
				p := deltaBundle(t, d, old, img)
				plain = readFile(t, p)
				os.Remove(p)
			} else {
				plain = plainBundle(t, d, img, enc)
			}
			b := writeTemp(t, d.dir, encrypted(t, d, plain, deviceKey(t, "p256"), dev))
			e := d.engine()
			d.start(e)
			if _, err := e.installNow(b, nil); err != nil {
				t.Fatalf("encrypted %s install: %v", enc, err)
			}
			if !bytes.Equal(d.slotBytes("B", len(img)), img) || d.envVar("otad_slot") != "B" {
				t.Fatal("slot B does not hold the image, or it is not armed")
			}
			if enc == bundle.EncodingDelta {
				// The unchanged parts of the delta image are the factory
				// image; only the changed region is secret.
				noPlaintextOutsideSlots(t, d.dir, image(9, 20000))
			} else {
				noPlaintextOutsideSlots(t, d.dir, img)
			}
		})
	}
}

// A device that is not a recipient is refused before anything is written:
// slot B keeps its bytes and its record.
func TestEncryptedNotRecipientRefusedBeforeWrite(t *testing.T) {
	d := newDevice(t)
	marker := image(3, 1<<20)
	d.writeSlot("B", marker)
	img := image(7, 1<<20)
	b := writeTemp(t, d.dir, encrypted(t, d, plainBundle(t, d, img, bundle.EncodingZstd), deviceKey(t, "x25519")))
	for name, key := range map[string]*crypt.PrivateKey{"no key configured": nil, "other key": deviceKey(t, "x25519")} {
		d.keyring.Decryption = key
		e := d.engine()
		d.start(e)
		_, err := e.installNow(b, nil)
		if !errors.Is(err, bundle.ErrNotRecipient) || !strings.Contains(err.Error(), "not a recipient") {
			t.Fatalf("%s: %v, want ErrNotRecipient", name, err)
		}
		if r := d.slotRec("B"); r.State != journal.SlotUnknown || !bytes.Equal(d.slotBytes("B", len(marker)), marker) {
			t.Fatalf("%s: slot B touched: %+v", name, r)
		}
		if d.envVar("upgrade_available") != "0" || d.envVar("otad_slot") != "A" {
			t.Fatalf("%s: env changed", name)
		}
	}
}

// A daemon killed mid-download resumes an encrypted bundle at the recorded
// chunk like a plain one: it reads only the rest.
func TestEncryptedResumeAfterDaemonKill(t *testing.T) {
	d := newDevice(t)
	dev := deviceKey(t, "p256")
	d.keyring.Decryption = dev
	img := image(5, 3<<20)
	b := writeTemp(t, d.dir, encrypted(t, d, plainBundle(t, d, img, bundle.EncodingRaw), dev))
	var read atomic.Int64
	engineWithKill := func(killAt int64, cancel func()) *Engine {
		return d.engine(func(c *Config) {
			open := c.OpenSource
			c.OpenSource = func(ctx context.Context, src string) (Source, error) {
				s, err := open(ctx, src)
				if err != nil {
					return nil, err
				}
				return &killingSource{Source: s, n: killAt, kill: cancel, read: &read}, nil
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := engineWithKill(2<<20, cancel)
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Install(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	e.Wait()
	jr := d.journalRec()
	if jr.State != journal.StateWriting || jr.Resume.Chunks == 0 {
		t.Fatalf("journal after kill %+v", jr)
	}
	read.Store(0)
	e = engineWithKill(1<<40, nil)
	d.start(e)
	if jr2 := d.journalRec(); jr2.State != journal.StatePendingReboot || jr2.Resumes != 1 {
		t.Fatalf("journal after resume %+v", jr2)
	}
	whole := int64(len(readFile(t, b)))
	sealedDone := int64(jr.Resume.Chunks) * (chunk + crypt.TagSize)
	if got := read.Load(); got > whole-sealedDone+2*(chunk+crypt.TagSize) {
		t.Fatalf("resume read %d of %d bundle bytes; it restarted instead of seeking past %d", got, whole, sealedDone)
	}
	if !bytes.Equal(d.slotBytes("B", len(img)), img) {
		t.Fatal("resumed slot B differs from the image")
	}
}

// The power-cut sweep of restart_test.go, on an encrypted bundle: every
// state write of a good cycle cut once; the device always boots a complete
// image and ends committed.
func TestEncryptedPowerCutAtEveryStateWrite(t *testing.T) {
	dev := deviceKey(t, "x25519")
	fx := &fixture{img: image(2, 1<<20+4321)}
	d := newDevice(t)
	fx.key = d.key
	fx.keyring = d.keyring
	fx.keyring.Decryption = dev
	fx.bundle = encrypted(t, d, plainBundleSV(t, d, fx.img, bundle.EncodingZstd, 3), dev) // life expects security version 3
	n, _ := life(t, 0, true, fx)
	for cut := 1; cut <= n; cut++ {
		if _, fired := life(t, cut, true, fx); !fired {
			t.Fatalf("cut %d of %d never fired", cut, n)
		}
	}
	t.Logf("%d cut points on an encrypted bundle", n)
}

// Streaming over HTTP: an encrypted full bundle over a link cut many times
// and an encrypted delta whose second download is cut both resume with
// Range requests and install the right image.
func TestEncryptedHTTPRangeResume(t *testing.T) {
	d := newDevice(t)
	dev := deviceKey(t, "x25519")
	d.keyring.Decryption = dev
	img := image(11, 3<<20+777)
	full := encrypted(t, d, plainBundle(t, d, img, bundle.EncodingRaw), dev)
	rng := mrand.New(mrand.NewPCG(9, 9))
	s := &bundleServer{content: full, etag: `"enc"`, fault: func(n int) int64 {
		if n > 12 {
			return -1
		}
		return rng.Int64N(600 << 10)
	}}
	e := d.httpEngine(fetch.Options{})
	d.start(e)
	if err := installHTTP(t, e, serveBundle(t, s)); err != nil {
		t.Fatalf("encrypted install over a flaky link: %v", err)
	}
	d.assertArmedWith(img)
	reqs := s.log()
	if len(reqs) < 5 {
		t.Fatalf("only %d requests: the link was not cut", len(reqs))
	}
	for _, r := range reqs[1:] {
		if !strings.HasPrefix(r, "bytes=") {
			t.Fatalf("a reconnect did not resume with Range: %q", r)
		}
	}

	d2 := newDevice(t)
	d2.key, d2.keyring = d.key, d.keyring
	old := d2.slotBytes("A", 3<<20)
	nu := bytes.Clone(old)
	copy(nu[1<<20:], bytes.Repeat([]byte("release 1.1 "), 4000))
	p := deltaBundle(t, d2, old, nu)
	raw := encrypted(t, d2, readFile(t, p), dev)
	os.Remove(p)
	ds := &bundleServer{content: raw, etag: `"delta"`, fault: func(n int) int64 {
		if n == 2 {
			return int64(len(raw)) / 2
		}
		return -1
	}}
	e2 := d2.httpEngine(fetch.Options{})
	d2.start(e2)
	if err := installHTTP(t, e2, serveBundle(t, ds)); err != nil {
		t.Fatalf("encrypted delta over HTTP: %v", err)
	}
	d2.assertArmedWith(nu)
	if reqs := ds.log(); len(reqs) < 3 || !strings.HasPrefix(reqs[2], "bytes=") {
		t.Fatalf("requests %q: want the source check, a fresh download, then a Range resume", reqs)
	}
}
