package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestRoundTripEncodings(t *testing.T) {
	k := testKeys(t)
	rootfs := content(10, 7*testChunk+123, true)
	boot := content(11, 3*testChunk, false)
	patch := content(12, 2*testChunk+5, false)
	delta := Source{Class: "appfs", Encoding: EncodingDelta, Data: bytes.NewReader(patch), Size: int64(len(patch)),
		TargetSize: 1 << 20, TargetSHA256: hex.EncodeToString(make([]byte, 32)),
		Delta: &DeltaSource{SourceSHA256: hex.EncodeToString(bytes.Repeat([]byte{1}, 32)), SourceSize: 1 << 20}}
	b := makeBundle(t, createOpts(), []Source{rawSource("rootfs", rootfs, EncodingZstd), rawSource("boot", boot, EncodingRaw), delta}, k.ed, k.p256)
	if len(b) >= len(rootfs)+len(boot)+len(patch) {
		t.Errorf("zstd did not shrink the compressible image: bundle %d bytes", len(b))
	}
	r, err := NewReader(bytes.NewReader(b), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := r.Signers(); len(got) != 2 {
		t.Errorf("signers %v, want both keys", got)
	}
	want := map[string][]byte{"rootfs": rootfs, "boot": boot, "appfs": patch}
	for i := 0; ; i++ {
		img, err := r.Next()
		if err == io.EOF {
			if i != 3 {
				t.Fatalf("%d images, want 3", i)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("%s: %v", img.Class, err)
		}
		if !bytes.Equal(got, want[img.Class]) {
			t.Errorf("%s: content differs", img.Class)
		}
		if r.ChunksDone() != img.Chunks {
			t.Errorf("%s: ChunksDone %d, want %d", img.Class, r.ChunksDone(), img.Chunks)
		}
		if img.Encoding != EncodingDelta {
			if s := sha256.Sum256(got); hex.EncodeToString(s[:]) != img.SHA256 {
				t.Errorf("%s: manifest sha256 is not the image's", img.Class)
			}
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("Next after the end: %v, want io.EOF", err)
	}
}

func TestNextSkipsUnreadImageOnPipe(t *testing.T) {
	k := testKeys(t)
	a, b2 := content(20, 3*testChunk, false), content(21, 2*testChunk+1, true)
	b := makeBundle(t, createOpts(), []Source{rawSource("rootfs", a, EncodingRaw), rawSource("data", b2, EncodingZstd)}, k.ed)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeSlowly(pw, b)) }()
	r, err := NewReader(pr, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(r, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if err := r.SeekChunk(1); !errors.Is(err, ErrNotSeekable) {
		t.Errorf("SeekChunk on a pipe: %v, want ErrNotSeekable", err)
	}
	img, err := r.Next()
	if err != nil || img.Class != "data" {
		t.Fatalf("Next: %v %v", img, err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, b2) {
		t.Fatalf("second image after skip: %v", err)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
}

// writeSlowly feeds a pipe in odd-sized pieces, like a network stream.
func writeSlowly(w io.Writer, b []byte) error {
	for len(b) > 0 {
		n := min(len(b), 777)
		if _, err := w.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// TestSeekChunkResume is the power-cut path: a new Reader on the same file
// continues at the chunk the journal recorded.
func TestSeekChunkResume(t *testing.T) {
	k := testKeys(t)
	for _, enc := range []string{EncodingRaw, EncodingZstd} {
		t.Run(enc, func(t *testing.T) {
			img := content(30, 6*testChunk+17, enc == EncodingZstd)
			prefix := []byte("some container bytes before the bundle")
			b := append(bytes.Clone(prefix), makeBundle(t, createOpts(), []Source{rawSource("rootfs", img, enc)}, k.ed)...)
			src := bytes.NewReader(b)
			src.Seek(int64(len(prefix)), io.SeekStart)
			r, err := NewReader(src, testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Next(); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(r, make([]byte, 2*testChunk+10)); err != nil {
				t.Fatal(err)
			}
			if r.ChunksDone() != 2 {
				t.Fatalf("ChunksDone %d, want 2", r.ChunksDone())
			}
			for _, k := range []int{4, 1, 7} {
				if err := r.SeekChunk(k); err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(r)
				if err != nil {
					t.Fatalf("after SeekChunk(%d): %v", k, err)
				}
				if !bytes.Equal(got, img[min(k*testChunk, len(img)):]) {
					t.Fatalf("SeekChunk(%d): wrong bytes", k)
				}
			}
			if err := r.SeekChunk(8); err == nil {
				t.Error("SeekChunk past the end accepted")
			}
		})
	}
}

// TestFileChangedWhileReading rewrites chunk 3 of the bundle file on disk
// after two chunks went to the writer: the change is caught at chunk 3 and
// only chunks 0-2 were ever delivered.
func TestFileChangedWhileReading(t *testing.T) {
	k := testKeys(t)
	img := content(40, 6*testChunk, false)
	b := makeBundle(t, createOpts(), []Source{rawSource("rootfs", img, EncodingRaw)}, k.ed)
	path := filepath.Join(t.TempDir(), "u.otab")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := NewReader(f, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	if _, err := io.CopyN(rec, r, 2*testChunk+100); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	payloadStart := int64(len(b) - len(img))
	if _, err := w.WriteAt([]byte("evil"), payloadStart+3*testChunk+50); err != nil {
		t.Fatal(err)
	}
	w.Close()
	_, err = io.Copy(rec, r)
	if !errors.Is(err, ErrChunkHash) {
		t.Fatalf("error %v, want ErrChunkHash", err)
	}
	if !bytes.Equal(rec.Bytes(), img[:3*testChunk]) {
		t.Fatalf("writer got %d bytes, want exactly chunks 0-2 (%d)", rec.Len(), 3*testChunk)
	}
	if r.ChunksDone() != 3 {
		t.Errorf("ChunksDone %d, want 3", r.ChunksDone())
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, ErrChunkHash) {
		t.Errorf("error is not sticky: %v", err)
	}
}

// TestKeyRotation: a bundle signed by the old and the new key verifies on
// a device trusting only the old key and on one trusting only the new key.
func TestKeyRotation(t *testing.T) {
	k := testKeys(t)
	b := makeBundle(t, createOpts(), []Source{rawSource("rootfs", content(50, testChunk, false), EncodingRaw)}, k.ed, k.ed2)
	for _, trusted := range []*PrivateKey{k.ed, k.ed2} {
		kr, err := NewKeyring(DefaultPolicy, trusted.Public())
		if err != nil {
			t.Fatal(err)
		}
		o := testOptions(t)
		o.Keyring = kr
		r, err := NewReader(bytes.NewReader(b), o)
		if err != nil {
			t.Fatalf("device trusting only %s: %v", trusted.ID, err)
		}
		if s := r.Signers(); len(s) != 1 || s[0] != trusted.ID {
			t.Errorf("signers %v, want [%s]", s, trusted.ID)
		}
	}
}

// TestAddSignatureKeepsIdentity: re-signing and ECDSA malleation change
// signature bytes, never the bundle's identity; a second signature meets a
// 2-of-n policy.
func TestAddSignatureKeepsIdentity(t *testing.T) {
	k := testKeys(t)
	b := makeBundle(t, createOpts(), []Source{rawSource("rootfs", content(60, 2*testChunk, false), EncodingRaw)}, k.p256)
	r1, err := NewReader(bytes.NewReader(b), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	o2 := testOptions(t)
	o2.Keyring = testKeyring(t, 2)
	if _, err := NewReader(bytes.NewReader(b), o2); !errors.Is(err, ErrThreshold) {
		t.Fatalf("one signer vs 2-of-n: %v", err)
	}
	var signed bytes.Buffer
	if err := AddSignature(&signed, bytes.NewReader(b), k.ed2); err != nil {
		t.Fatal(err)
	}
	r2, err := NewReader(bytes.NewReader(signed.Bytes()), o2)
	if err != nil {
		t.Fatalf("two signers vs 2-of-n: %v", err)
	}
	if r1.Identity() != r2.Identity() {
		t.Error("adding a signature changed the identity")
	}
	if _, err := drain(bytes.NewReader(signed.Bytes()), o2, true); err != nil {
		t.Fatalf("payload after re-signing: %v", err)
	}

	mb, sb, rest := parts(t, b)
	sigs, err := parseSignatures(sb)
	if err != nil {
		t.Fatal(err)
	}
	sigs[0].Sig = malleate(sigs[0].Sig)
	msb, _ := marshalSignatures(sigs)
	r3, err := NewReader(bytes.NewReader(assemble(mb, msb, rest)), testOptions(t))
	if err != nil {
		t.Fatalf("malleated (r, n-s) is still a valid ECDSA signature: %v", err)
	}
	if r3.Identity() != r1.Identity() {
		t.Error("a malleated signature changed the identity")
	}
	sum := sha256.Sum256(mb)
	if r1.Identity() != hex.EncodeToString(sum[:]) {
		t.Error("identity is not the SHA-256 of the manifest bytes")
	}
}

func TestKeyringRejectsOneKeyUnderTwoIDs(t *testing.T) {
	k := testKeys(t)
	alias := *k.p256.Public()
	alias.ID = "release-hsm-alias"
	if _, err := NewKeyring(Policy{Threshold: 2, Roles: []string{"release"}}, k.p256.Public(), &alias); !errors.Is(err, ErrMalformed) {
		t.Fatalf("same key twice: %v", err)
	}
}

// TestKeyringWithoutThresholdFailsClosed: Policy is an exported field and
// Keyring's zero value is usable as a pointer; a threshold below 1 (zero
// value, or lowered after NewKeyring) must refuse every bundle, never
// accept one that no trusted key signed.
func TestKeyringWithoutThresholdFailsClosed(t *testing.T) {
	k := testKeys(t)
	forged := makeBundle(t, createOpts(), []Source{rawSource("rootfs", content(3, 100, false), EncodingRaw)}, k.stranger)
	signed := makeBundle(t, createOpts(), []Source{rawSource("rootfs", content(3, 100, false), EncodingRaw)}, k.ed)
	lowered := testKeyring(t, 1)
	lowered.Policy.Threshold = 0
	for name, kr := range map[string]*Keyring{"zero value": {}, "threshold lowered to 0": lowered} {
		for bname, b := range map[string][]byte{"signed by an untrusted key": forged, "signed by a trusted key": signed} {
			o := testOptions(t)
			o.Keyring = kr
			rec, err := drain(bytes.NewReader(b), o, false)
			if !errors.Is(err, ErrThreshold) || rec.Len() != 0 {
				t.Errorf("%s, %s: err = %v, %d bytes written; want ErrThreshold and none", name, bname, err, rec.Len())
			}
		}
	}
}

// stuckWriter breaks the io.Writer contract: it accepts nothing and
// reports no error.
type stuckWriter struct {
	t     *testing.T
	calls int
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	if w.calls++; w.calls > 100 {
		w.t.Fatal("WriteTo keeps calling a writer that makes no progress")
	}
	return 0, nil
}

// TestWriteToShortWrite: a writer that takes fewer bytes without an error
// ends WriteTo with io.ErrShortWrite (as io.Copy does), never a spin.
func TestWriteToShortWrite(t *testing.T) {
	b := makeBundle(t, createOpts(), []Source{rawSource("rootfs", content(4, 100, false), EncodingRaw)}, testKeys(t).ed)
	r, err := NewReader(bytes.NewReader(b), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if n, err := r.WriteTo(&stuckWriter{t: t}); !errors.Is(err, io.ErrShortWrite) || n != 0 {
		t.Fatalf("WriteTo = %d, %v; want 0, io.ErrShortWrite", n, err)
	}
	if r.ChunksDone() != 0 {
		t.Fatalf("ChunksDone = %d after nothing was written", r.ChunksDone())
	}
}

func TestKeyFilesAndKeyringDir(t *testing.T) {
	dir := t.TempDir()
	var priv []*PrivateKey
	for i, alg := range []string{AlgEd25519, AlgP256} {
		k, err := GenerateKey(alg, []string{"a", "b"}[i], "release", randReader{})
		if err != nil {
			t.Fatal(err)
		}
		pb, _ := MarshalPrivateKey(k)
		back, err := ParsePrivateKey(pb)
		if err != nil {
			t.Fatal(err)
		}
		priv = append(priv, back)
		pub, _ := MarshalPublicKey(k.Public())
		if err := os.WriteFile(filepath.Join(dir, k.ID+".pub"), pub, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, PolicyFile), []byte(`{"threshold":2,"roles":["release"]}`), 0o644)
	kr, err := LoadKeyring(dir)
	if err != nil {
		t.Fatal(err)
	}
	if kr.Policy.Threshold != 2 || len(kr.Keys()) != 2 {
		t.Fatalf("keyring %+v", kr)
	}
	b := makeBundle(t, createOpts(), []Source{rawSource("rootfs", content(70, 100, false), EncodingRaw)}, priv...)
	o := testOptions(t)
	o.Keyring = kr
	if _, err := drain(bytes.NewReader(b), o, false); err != nil {
		t.Fatal(err)
	}

	for name, text := range map[string]string{
		"dup key":       `{"threshold":1,"threshold":2,"roles":["release"]}`,
		"case variant":  `{"Threshold":1,"roles":["release"]}`,
		"unknown field": `{"threshold":1,"roles":["release"],"any":true}`,
		"zero":          `{"threshold":0,"roles":["release"]}`,
	} {
		os.WriteFile(filepath.Join(dir, PolicyFile), []byte(text), 0o644)
		if _, err := LoadKeyring(dir); !errors.Is(err, ErrMalformed) {
			t.Errorf("policy %s: %v, want ErrMalformed", name, err)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "a.pub"))
	os.WriteFile(filepath.Join(dir, "a.pub"), bytes.Replace(pub, []byte(`"alg": "ed25519"`), []byte(`"alg": "p256"`), 1), 0o644)
	if _, err := ParsePublicKey(bytes.Replace(pub, []byte(`"alg": "ed25519"`), []byte(`"alg": "p256"`), 1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("ed25519 key labelled p256: %v", err)
	}
}

func TestCreateRejectsBadInput(t *testing.T) {
	k := testKeys(t)
	src := []Source{rawSource("rootfs", content(80, 100, false), EncodingRaw)}
	for name, mod := range map[string]func(*CreateOptions){
		"no compatible":    func(o *CreateOptions) { o.Compatible = "" },
		"chunk size 9 MiB": func(o *CreateOptions) { o.ChunkSize = 9 << 20 },
		"chunk size odd":   func(o *CreateOptions) { o.ChunkSize = 5000 },
		"expires first":    func(o *CreateOptions) { o.Expires = o.Created.Add(-1) },
	} {
		o := createOpts()
		mod(&o)
		if _, err := Create(context.Background(), io.Discard, o, src, []*PrivateKey{k.ed}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Create(context.Background(), io.Discard, createOpts(), src, nil); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("no key: %v", err)
	}
}

// TestRawImageHashOption shows what the optional second pass buys: a raw
// image whose signed sha256 disagrees with its own (signed) chunks — a
// broken signer, not an attacker — passes chunk verification and is caught
// only with HashRawImages (on a device: by the slot read-back).
func TestRawImageHashOption(t *testing.T) {
	data := content(90, 2*testChunk+1, false)
	b := signedRaw(t, Image{Class: "rootfs", Size: int64(len(data)), SHA256: hex.EncodeToString(make([]byte, 32)), Encoding: EncodingRaw,
		ChunkSize: testChunk, Chunks: 3}, [][]byte{data[:testChunk], data[testChunk : 2*testChunk], data[2*testChunk:]})
	o := testOptions(t)
	o.HashRawImages = false
	if rec, err := drain(bytes.NewReader(b), o, true); err != nil || !bytes.Equal(rec.Bytes(), data) {
		t.Fatalf("chunk-verified raw image refused without the whole-image pass: %v", err)
	}
	o.HashRawImages = true
	rec, err := drain(bytes.NewReader(b), o, true)
	if !errors.Is(err, ErrChunkHash) || rec.Len() != 2*testChunk {
		t.Fatalf("whole-image pass: %v after %d bytes, want ErrChunkHash before the last chunk", err, rec.Len())
	}
}

func BenchmarkReader(b *testing.B) {
	k := testKeys(b)
	for _, enc := range []string{EncodingRaw, EncodingZstd} {
		img := content(95, 32<<20, enc == EncodingZstd)
		o := createOpts()
		o.ChunkSize = DefaultChunkSize
		bb := makeBundle(b, o, []Source{rawSource("rootfs", img, enc)}, k.ed)
		for _, full := range []bool{false, true} {
			b.Run(enc+map[bool]string{false: "", true: "+fullhash"}[full], func(b *testing.B) {
				opts := testOptions(b)
				opts.HashRawImages = full
				b.SetBytes(int64(len(img)))
				for b.Loop() {
					r, err := NewReader(bytes.NewReader(bb), opts)
					if err != nil {
						b.Fatal(err)
					}
					r.Next()
					if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(img)) {
						b.Fatal(n, err)
					}
					r.Close()
				}
			})
		}
	}
}

// changingReaderAt returns different bytes on its second pass over chunk 1,
// like an image file rewritten while `bundle create` runs.
type changingReaderAt struct {
	data  []byte
	reads map[int64]int
}

func (c *changingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.reads[off]++
	n := copy(p, c.data[off:])
	if off == testChunk && c.reads[off] > 1 {
		p[0] ^= 0xff
	}
	return n, nil
}

func TestCreateNoticesInputChange(t *testing.T) {
	data := content(97, 3*testChunk, false)
	src := Source{Class: "rootfs", Encoding: EncodingRaw, Data: &changingReaderAt{data: data, reads: map[int64]int{}}, Size: int64(len(data))}
	_, err := Create(context.Background(), io.Discard, createOpts(), []Source{src}, []*PrivateKey{testKeys(t).ed})
	if !errors.Is(err, ErrChunkHash) {
		t.Fatalf("input changed between passes: %v, want ErrChunkHash", err)
	}
}
