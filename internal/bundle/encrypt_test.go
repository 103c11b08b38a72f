package bundle

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/otadev/otad/internal/crypt"
)

func recipientKey(t testing.TB, alg string) *crypt.PrivateKey {
	t.Helper()
	k, err := crypt.GenerateKey(rand.Reader, alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// encrypt seals a plain bundle for the given device keys, signed by ed.
func encrypt(t testing.TB, plain []byte, to ...*crypt.PrivateKey) []byte {
	t.Helper()
	var pubs []*crypt.PublicKey
	for _, k := range to {
		pubs = append(pubs, &k.Public)
	}
	var out bytes.Buffer
	if _, err := Encrypt(context.Background(), &out, bytes.NewReader(plain), int64(len(plain)), []Signer{testKeys(t).ed}, pubs, rand.Reader); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func withDecryption(t testing.TB, k *crypt.PrivateKey) Options {
	o := testOptions(t)
	o.Keyring.Decryption = k
	return o
}

func TestEncryptedRoundTripFullZstdDelta(t *testing.T) {
	k := testKeys(t)
	dev, dev2 := recipientKey(t, "x25519"), recipientKey(t, "p256")
	rootfs := content(10, 7*testChunk+123, true)
	boot := content(11, 3*testChunk, false)
	patch := content(12, 2*testChunk+5, false)
	delta := Source{Class: "appfs", Encoding: EncodingDelta, Data: bytes.NewReader(patch), Size: int64(len(patch)),
		TargetSize: 1 << 20, TargetSHA256: hex.EncodeToString(make([]byte, 32)),
		Delta: &DeltaSource{SourceSHA256: hex.EncodeToString(bytes.Repeat([]byte{1}, 32)), SourceSize: 1 << 20}}
	plain := makeBundle(t, createOpts(), []Source{rawSource("rootfs", rootfs, EncodingZstd), rawSource("boot", boot, EncodingRaw), delta}, k.ed)
	enc := encrypt(t, plain, dev, dev2)
	for _, secret := range [][]byte{boot[:64], boot[len(boot)-64:], patch[:64]} {
		if bytes.Contains(enc, secret) {
			t.Fatal("encrypted bundle carries plaintext")
		}
	}
	want := map[string][]byte{"rootfs": rootfs, "boot": boot, "appfs": patch}
	for _, d := range []*crypt.PrivateKey{dev, dev2} {
		for _, writeTo := range []bool{false, true} {
			r, err := NewReader(bytes.NewReader(enc), withDecryption(t, d))
			if err != nil {
				t.Fatal(err)
			}
			if r.Manifest().Encryption == nil {
				t.Fatal("manifest does not say encrypted")
			}
			n := 0
			for {
				img, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				var got bytes.Buffer
				if writeTo {
					_, err = io.Copy(&got, r)
				} else {
					_, err = io.CopyBuffer(&got, onlyReader{r}, make([]byte, 1000))
				}
				if err != nil {
					t.Fatalf("%s (%s): %v", img.Class, crypt.KEMName(d.Public.KEM), err)
				}
				if !bytes.Equal(got.Bytes(), want[img.Class]) {
					t.Fatalf("%s: decrypted content differs", img.Class)
				}
				n++
			}
			if n != 3 {
				t.Fatalf("%d images, want 3", n)
			}
			r.Close()
		}
	}
	// The plain bundle's images are described the same way.
	pr, err := NewReader(bytes.NewReader(plain), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	er, _ := NewReader(bytes.NewReader(enc), withDecryption(t, dev))
	for i := range pr.Manifest().Images {
		p, e := pr.Manifest().Images[i], er.Manifest().Images[i]
		if p.SHA256 != e.SHA256 || p.PayloadSize != e.PayloadSize || p.Chunks != e.Chunks || p.ChunkTableSHA256 == e.ChunkTableSHA256 {
			t.Errorf("image %s: plain %+v, encrypted %+v", p.Class, p, e)
		}
	}
	if er.Size() != int64(len(enc)) {
		t.Errorf("Size %d, bundle is %d bytes", er.Size(), len(enc))
	}
}

func TestEncryptedSeekChunkResume(t *testing.T) {
	dev := recipientKey(t, "x25519")
	img := content(30, 9*testChunk+77, true)
	enc := encrypt(t, makeBundle(t, createOpts(), []Source{rawSource("rootfs", img, EncodingZstd)}, testKeys(t).ed), dev)
	for _, k := range []int{0, 1, 5, 9} {
		r, err := NewReader(bytes.NewReader(enc), withDecryption(t, dev))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		if err := r.SeekChunk(k); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("resume at %d: %v", k, err)
		}
		if !bytes.Equal(got, img[k*testChunk:]) {
			t.Fatalf("resume at chunk %d: wrong bytes", k)
		}
		if _, err := r.Next(); err != io.EOF {
			t.Fatalf("after resume: %v", err)
		}
	}
}

func TestRewrapWithoutResigning(t *testing.T) {
	publisher, dev, newDev := recipientKey(t, "x25519"), recipientKey(t, "p256"), recipientKey(t, "x25519")
	img := content(40, 3*testChunk, false)
	enc := encrypt(t, makeBundle(t, createOpts(), []Source{rawSource("rootfs", img, EncodingRaw)}, testKeys(t).ed), publisher, dev)
	if _, err := drain(bytes.NewReader(enc), withDecryption(t, newDev), false); !errors.Is(err, ErrNotRecipient) {
		t.Fatalf("new device before rewrap: %v, want ErrNotRecipient", err)
	}
	var added bytes.Buffer
	if err := Rewrap(&added, bytes.NewReader(enc), publisher, []*crypt.PublicKey{&newDev.Public}, false, rand.Reader); err != nil {
		t.Fatal(err)
	}
	mb, _, _ := parts(t, enc)
	mb2, _, _ := parts(t, added.Bytes())
	if !bytes.Equal(mb, mb2) {
		t.Fatal("rewrap changed the signed manifest")
	}
	for _, d := range []*crypt.PrivateKey{publisher, dev, newDev} {
		rec, err := drain(bytes.NewReader(added.Bytes()), withDecryption(t, d), false)
		if err != nil || !bytes.Equal(rec.Bytes(), img) {
			t.Fatalf("after add, key %s: %v", d.Public.ID, err)
		}
	}
	_, es, err := RecipientsOf(bytes.NewReader(added.Bytes()))
	if err != nil || len(es) != 3 {
		t.Fatalf("list: %d entries, %v", len(es), err)
	}
	var replaced bytes.Buffer
	if err := Rewrap(&replaced, bytes.NewReader(added.Bytes()), publisher, []*crypt.PublicKey{&publisher.Public, &newDev.Public}, true, rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, err := drain(bytes.NewReader(replaced.Bytes()), withDecryption(t, dev), false); !errors.Is(err, ErrNotRecipient) {
		t.Fatalf("removed device: %v, want ErrNotRecipient", err)
	}
	// Adding a signature keeps the recipient block.
	var signed bytes.Buffer
	if err := AddSignatures(context.Background(), &signed, bytes.NewReader(replaced.Bytes()), testKeys(t).p256); err != nil {
		t.Fatal(err)
	}
	if rec, err := drain(bytes.NewReader(signed.Bytes()), withDecryption(t, newDev), true); err != nil || !bytes.Equal(rec.Bytes(), img) {
		t.Fatalf("after adding a signature: %v", err)
	}
	// Only a recipient can rewrap.
	if err := Rewrap(io.Discard, bytes.NewReader(enc), newDev, []*crypt.PublicKey{&newDev.Public}, false, rand.Reader); !errors.Is(err, ErrNotRecipient) {
		t.Fatalf("rewrap by a non-recipient: %v", err)
	}
}

// sealedParts splits an encrypted bundle into manifest, signatures,
// recipient block, tables and payload.
func sealedParts(t testing.TB, b []byte) (mb, sb, block, tables, payload []byte, f *Front) {
	t.Helper()
	f, err := Inspect(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	mb, sb, rest := parts(t, b)
	block = rest[:len(f.Recipients)]
	n := 0
	for _, img := range f.Manifest.Images {
		n += img.Chunks * tableEntrySize
	}
	return mb, sb, block, rest[len(block) : len(block)+n], rest[len(block)+n:], f
}

func assembleSealed(mb, sb, block, rest []byte) []byte {
	out := header{ManifestLen: uint32(len(mb)), SignatureLen: uint32(len(sb)), Flags: flagRecipients}.marshal()
	return append(append(append(append(out, mb...), sb...), block...), rest...)
}

// resealed is what a signer fooled into signing a tampered payload would
// produce: the sealed chunks given, a table that matches them, a manifest
// over that table, a valid signature. Only the GCM layer can refuse it.
func resealed(t testing.TB, enc []byte, chunks [][]byte) []byte {
	mb, _, block, _, _, f := sealedParts(t, enc)
	m := *f.Manifest
	m.Images = append([]Image(nil), m.Images...)
	var table []chunkEntry
	var payload []byte
	for _, c := range chunks {
		table = append(table, chunkEntry{Len: int64(len(c)) - crypt.TagSize, Hash: sha256.Sum256(c)})
		payload = append(payload, c...)
	}
	tb := marshalTable(table)
	ts := sha256.Sum256(tb)
	m.Images[0].ChunkTableSHA256 = hex.EncodeToString(ts[:])
	mb2, err := MarshalManifest(&m)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(mb, mb2) {
		t.Fatal("resealed manifest unchanged")
	}
	s, err := testKeys(t).ed.Sign(rand.Reader, mb2)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := marshalSignatures([]Signature{s})
	if err != nil {
		t.Fatal(err)
	}
	return assembleSealed(mb2, sb, block, append(tb, payload...))
}

// TestBadEncryptedBundles runs the encrypted refusals through the
// bad-bundle harness: each is refused before the bytes it protects reach
// the writer (allowed = the chunks before the bad one).
func TestBadEncryptedBundles(t *testing.T) {
	k := testKeys(t)
	const size = 4*testChunk + 1000 // 5 chunks, short last one
	img := content(1, size, false)
	plain := makeBundle(t, createOpts(), []Source{rawSource("rootfs", img, EncodingRaw)}, k.ed)
	dev, other, stranger := recipientKey(t, "x25519"), recipientKey(t, "p256"), recipientKey(t, "x25519")
	good := encrypt(t, plain, dev, other)
	mb, sb, block, tables, payload, f := sealedParts(t, good)
	sealedLen := func(c int) int { return testChunk + crypt.TagSize }
	chunkOff := func(c int) int { return len(good) - len(payload) + c*sealedLen(0) }
	chunks := func(b []byte) [][]byte {
		_, _, _, _, p, _ := sealedParts(t, b)
		var out [][]byte
		for len(p) > 0 {
			n := min(len(p), sealedLen(0))
			out = append(out, bytes.Clone(p[:n]))
			p = p[n:]
		}
		return out
	}
	goodChunks := chunks(good)
	// Another bundle, same image, other content key.
	otherChunks := chunks(encrypt(t, plain, dev, other))
	commit, _ := hex.DecodeString(f.Manifest.Encryption.KeyCommitment)

	// Entry edits in the recipient block.
	es, err := crypt.ParseBlock(block)
	if err != nil {
		t.Fatal(err)
	}
	blockWith := func(es []crypt.Entry) []byte {
		b, err := crypt.MarshalBlock(es)
		if err != nil {
			t.Fatal(err)
		}
		return assembleSealed(mb, sb, b, append(bytes.Clone(tables), payload...))
	}
	mine := 0
	if es[1].ID == dev.Public.ID {
		mine = 1
	}
	// Substituted key: anyone can wrap a key for the device's public key,
	// bound to the real commitment; the commitment refuses it.
	evil, _ := crypt.NewContentKey(rand.Reader)
	evilEntry, err := crypt.Wrap(rand.Reader, &dev.Public, &evil, commit)
	if err != nil {
		t.Fatal(err)
	}
	substituted := append([]crypt.Entry(nil), es...)
	substituted[mine] = evilEntry
	// The other recipient's wrapped key under the device's id.
	swappedKeys := append([]crypt.Entry(nil), es...)
	swappedKeys[mine].Wrapped, swappedKeys[1-mine].Wrapped = es[1-mine].Wrapped, es[mine].Wrapped
	// Whole entries swapped in place: the binary search misses the entry
	// (ParseBlock, for tooling, names the broken order).
	swappedOrder := bytes.Clone(block)
	copy(swappedOrder[crypt.BlockHeaderSize:], block[crypt.BlockHeaderSize+crypt.EntrySize:])
	copy(swappedOrder[crypt.BlockHeaderSize+crypt.EntrySize:], block[crypt.BlockHeaderSize:crypt.BlockHeaderSize+crypt.EntrySize])
	larger := dev
	if mine == 0 {
		larger = other
	}
	hugeCount := bytes.Clone(block)
	binary.BigEndian.PutUint32(hugeCount[8:], 1<<30)

	moved := append([][]byte(nil), goodChunks...)
	moved[1], moved[2] = goodChunks[2], goodChunks[1]
	replayed := append([][]byte(nil), goodChunks...)
	replayed[2] = otherChunks[2]
	tagFlipped := append([][]byte(nil), goodChunks...)
	tagFlipped[3] = bytes.Clone(goodChunks[3])
	tagFlipped[3][len(tagFlipped[3])-1] ^= 1
	onWire := func(cs [][]byte) []byte {
		return assembleSealed(mb, sb, block, append(bytes.Clone(tables), bytes.Join(cs, nil)...))
	}
	key := func(k *crypt.PrivateKey) func(*Options) { return func(o *Options) { o.Keyring.Decryption = k } }

	cases := []badCase{
		{name: "no decryption key configured", bundle: good, want: ErrNotRecipient, msg: "decryption-key"},
		{name: "wrong device key (not a recipient)", bundle: good, opts: key(stranger), want: ErrNotRecipient, msg: stranger.Public.ID.String()},
		{name: "no recipient entry for the device", bundle: blockWith(es[1-mine : 2-mine]), opts: key(dev), want: ErrNotRecipient, msg: "no entry"},
		{name: "substituted content key", bundle: blockWith(substituted), opts: key(dev), want: ErrDecrypt, msg: "commitment"},
		{name: "swapped wrapped keys", bundle: blockWith(swappedKeys), opts: key(dev), want: ErrDecrypt, msg: "does not open"},
		{name: "swapped recipient entries", bundle: assembleSealed(mb, sb, swappedOrder, append(bytes.Clone(tables), payload...)), opts: key(larger), want: ErrNotRecipient, msg: "no entry"},
		{name: "recipient count 2^30", bundle: assembleSealed(mb, sb, hugeCount, nil), opts: key(dev), want: ErrTooLarge, msg: "recipients"},
		{name: "recipient block dropped", bundle: assemble(mb, sb, append(bytes.Clone(tables), payload...)), opts: key(dev), want: ErrMalformed, msg: "without a recipient block"},
		{name: "recipient block on a plain bundle", bundle: func() []byte {
			pm, ps, prest := parts(t, plain)
			return assembleSealed(pm, ps, block, prest)
		}(), opts: key(dev), want: ErrMalformed, msg: "not encrypted"},
		{name: "chunk moved on the wire", bundle: onWire(moved), opts: key(dev), want: ErrChunkHash, msg: "chunk 1 of 5", allowed: testChunk},
		{name: "chunk moved, table re-signed", bundle: resealed(t, good, moved), opts: key(dev), want: ErrDecrypt, msg: "chunk 1 of 5", allowed: testChunk},
		{name: "chunk replayed from another bundle", bundle: onWire(replayed), opts: key(dev), want: ErrChunkHash, msg: "chunk 2 of 5", allowed: 2 * testChunk},
		{name: "chunk replayed from another bundle, table re-signed", bundle: resealed(t, good, replayed), opts: key(dev), want: ErrDecrypt, msg: "chunk 2 of 5", allowed: 2 * testChunk},
		{name: "flipped tag byte", bundle: onWire(tagFlipped), opts: key(dev), want: ErrChunkHash, msg: "chunk 3 of 5", allowed: 3 * testChunk},
		{name: "flipped tag byte, table re-signed", bundle: resealed(t, good, tagFlipped), opts: key(dev), want: ErrDecrypt, msg: "chunk 3 of 5", allowed: 3 * testChunk},
		{name: "last chunk dropped, table re-signed", bundle: resealed(t, good, goodChunks[:4]), opts: key(dev), want: ErrChunkHash, msg: "chunk table"},
		{name: "truncated payload mid chunk 2", bundle: good[:chunkOff(2)+100], opts: key(dev), want: ErrTruncated, msg: "chunk 2", allowed: 2 * testChunk},
		{name: "truncated payload by the last tag", bundle: good[:len(good)-crypt.TagSize], opts: key(dev), want: ErrTruncated, msg: "chunk 4", allowed: 4 * testChunk},
		{name: "sealed byte appended", bundle: append(bytes.Clone(good), 0), opts: key(dev), want: ErrMalformed, msg: "after the last declared", allowed: 4 * testChunk},
	}
	for c := 0; c < 5; c++ {
		cases = append(cases, badCase{name: fmt.Sprintf("flipped ciphertext byte of chunk %d", c), bundle: flip(good, chunkOff(c)+7), opts: key(dev),
			want: ErrChunkHash, msg: fmt.Sprintf("chunk %d of 5", c), allowed: c * testChunk})
	}
	if n := runBadCases(t, cases, img); n < 20 {
		t.Fatalf("only %d cases", n)
	}
}

// BenchmarkReaderEncrypted is BenchmarkReader's raw+fullhash case (what the
// installer runs) on the same image plain and encrypted.
func BenchmarkReaderEncrypted(b *testing.B) {
	k := testKeys(b)
	dev := recipientKey(b, "x25519")
	img := content(95, 32<<20, false)
	o := createOpts()
	o.ChunkSize = DefaultChunkSize
	plain := makeBundle(b, o, []Source{rawSource("rootfs", img, EncodingRaw)}, k.ed)
	for name, bb := range map[string][]byte{"plain": plain, "encrypted": encrypt(b, plain, dev)} {
		b.Run(name, func(b *testing.B) {
			opts := withDecryption(b, dev)
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

// FuzzEncryptedReader is FuzzReader for encrypted bundles: mutations land
// in the recipient block, the sealed tables and chunks as well. Nothing may
// panic, every error wraps a sentinel, and what reaches the writer is a
// prefix of the signed images.
func FuzzEncryptedReader(f *testing.F) {
	k := testKeys(f)
	dev, other := recipientKey(f, "x25519"), recipientKey(f, "p256")
	seeds := [][]byte{
		encrypt(f, makeBundle(f, createOpts(), []Source{rawSource("rootfs", content(1, 2*testChunk+9, false), EncodingRaw)}, k.ed), dev, other),
		encrypt(f, makeBundle(f, createOpts(), []Source{rawSource("rootfs", content(2, 3*testChunk, true), EncodingZstd)}, k.ed), other, dev),
	}
	o := withDecryption(f, dev)
	want := map[string][]byte{}
	for _, b := range seeds {
		f.Add(b)
		rec, err := drain(bytes.NewReader(b), o, false)
		if err != nil {
			f.Fatal(err)
		}
		fr, err := Inspect(bytes.NewReader(b))
		if err != nil {
			f.Fatal(err)
		}
		want[fr.Identity] = rec.Bytes()
	}
	sentinels := []error{ErrBadSignature, ErrUnknownKey, ErrThreshold, ErrIncompatible, ErrDowngrade, ErrExpired,
		ErrMalformed, ErrTruncated, ErrChunkHash, ErrTooLarge, ErrWeakKey, ErrNotRecipient, ErrDecrypt}
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := drain(bytes.NewReader(b), o, len(b)%2 == 0)
		if rec.Len() > 0 || err == nil {
			fr, ferr := Inspect(bytes.NewReader(b))
			if ferr != nil {
				t.Fatalf("reader yielded %d bytes (err %v) but the front does not parse: %v", rec.Len(), err, ferr)
			}
			full, ok := want[fr.Identity]
			switch {
			case !ok:
				t.Fatalf("a manifest no seed signed was accepted (identity %s)", fr.Identity)
			case err == nil && !bytes.Equal(rec.Bytes(), full):
				t.Fatalf("clean read yielded %d bytes that differ from the signed images", rec.Len())
			case !bytes.HasPrefix(full, rec.Bytes()):
				t.Fatalf("%d bytes reached the writer that are not a prefix of the signed images", rec.Len())
			}
		}
		if err == nil {
			return
		}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				return
			}
		}
		t.Fatalf("error wraps no sentinel: %v", err)
	})
}
