package bundle

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	mrand "math/rand/v2"
	"testing"
	"time"
)

const (
	testCompat = "acme-gw1"
	testChunk  = 4096
)

var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// testKeys are generated once per test binary: P-256 key generation is fast
// but there is no reason to repeat it per case.
type keySet struct {
	ed, p256, ed2, dev, stranger *PrivateKey
}

var keysOnce *keySet

func testKeys(t testing.TB) *keySet {
	t.Helper()
	if keysOnce != nil {
		return keysOnce
	}
	mk := func(alg, id, role string) *PrivateKey {
		k, err := GenerateKey(alg, id, role, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	keysOnce = &keySet{
		ed:       mk(AlgEd25519, "release-2026", "release"),
		p256:     mk(AlgP256, "release-hsm", "release"),
		ed2:      mk(AlgEd25519, "release-2027", "release"),
		dev:      mk(AlgEd25519, "dev-laptop", "dev"),
		stranger: mk(AlgEd25519, "someone-else", "release"),
	}
	return keysOnce
}

// keyring trusts ed, p256, ed2 (role release) and dev (role dev).
func testKeyring(t testing.TB, threshold int) *Keyring {
	k := testKeys(t)
	kr, err := NewKeyring(Policy{Threshold: threshold, Roles: []string{"release"}},
		k.ed.Public(), k.p256.Public(), k.ed2.Public(), k.dev.Public())
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func testOptions(t testing.TB) Options {
	return Options{Keyring: testKeyring(t, 1), Compatible: testCompat, Now: testNow, HashRawImages: true}
}

// content returns n bytes: random when !compressible, else a repetitive
// pattern zstd shrinks.
func content(seed uint64, n int, compressible bool) []byte {
	b := make([]byte, n)
	r := mrand.New(mrand.NewPCG(seed, 7))
	for i := range b {
		if compressible {
			b[i] = byte(i/64) ^ byte(seed)
		} else {
			b[i] = byte(r.Uint32())
		}
	}
	return b
}

func createOpts() CreateOptions {
	return CreateOptions{Compatible: testCompat, Version: "1.2.3", SecurityVersion: 5,
		Created: testNow.Add(-time.Hour), ChunkSize: testChunk}
}

func makeBundle(t testing.TB, o CreateOptions, srcs []Source, keys ...*PrivateKey) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := Create(context.Background(), &buf, o, srcs, keys); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func rawSource(class string, data []byte, enc string) Source {
	return Source{Class: class, Encoding: enc, Data: bytes.NewReader(data), Size: int64(len(data))}
}

// parts splits a bundle into manifest bytes, signature block bytes and the
// rest (tables + payloads).
func parts(t testing.TB, b []byte) (mb, sb, rest []byte) {
	t.Helper()
	ml := binary.BigEndian.Uint32(b[8:])
	sl := binary.BigEndian.Uint32(b[12:])
	mb = b[HeaderSize : HeaderSize+ml]
	sb = b[HeaderSize+ml : HeaderSize+ml+sl]
	return mb, sb, b[HeaderSize+ml+sl:]
}

// assemble builds a bundle from manifest bytes, a signature block and rest.
func assemble(mb, sb, rest []byte) []byte {
	out := header{ManifestLen: uint32(len(mb)), SignatureLen: uint32(len(sb))}.marshal()
	out = append(out, mb...)
	out = append(out, sb...)
	return append(out, rest...)
}

// resign signs mb with keys and assembles it with rest.
func resign(t testing.TB, mb, rest []byte, keys ...*PrivateKey) []byte {
	t.Helper()
	var sigs []Signature
	for _, k := range keys {
		s, err := k.Sign(rand.Reader, mb)
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, s)
	}
	sb, err := marshalSignatures(sigs)
	if err != nil {
		t.Fatal(err)
	}
	return assemble(mb, sb, rest)
}

// recorder is the stand-in for a slot writer: it keeps every byte it got.
type recorder struct{ bytes.Buffer }

// onlyReader hides Reader.WriteTo so io.Copy exercises Read.
type onlyReader struct{ io.Reader }

// drain reads every image of a bundle through Read into a recorder, as an
// installer would, and returns what reached the recorder and the first
// error (nil at a clean end).
func drain(src io.Reader, o Options, useWriteTo bool) (*recorder, error) {
	rec := &recorder{}
	r, err := NewReader(src, o)
	if err != nil {
		return rec, err
	}
	defer r.Close()
	for {
		_, err := r.Next()
		if errors.Is(err, io.EOF) {
			return rec, nil
		}
		if err != nil {
			return rec, err
		}
		if useWriteTo {
			_, err = io.Copy(rec, r)
		} else {
			_, err = io.CopyBuffer(rec, onlyReader{r}, make([]byte, 1000))
		}
		if err != nil {
			return rec, err
		}
	}
}

func flip(b []byte, off int) []byte {
	c := bytes.Clone(b)
	c[off] ^= 0x01
	return c
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// randReader is crypto/rand for ECDSA signing in tests.
type randReader struct{}

func (randReader) Read(p []byte) (int, error) { return rand.Read(p) }
