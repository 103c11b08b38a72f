package crypt

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

func newKey(t testing.TB) *ContentKey {
	t.Helper()
	k, err := NewContentKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &k
}

func newSealer(t testing.TB, k *ContentKey) *Sealer {
	t.Helper()
	s, err := NewSealer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestChunkRoundTripAndPosition(t *testing.T) {
	k := newKey(t)
	s := newSealer(t, k)
	plain := []byte("chunk two of image one")
	sealed := s.Seal(nil, plain, 1, 2, 5)
	if len(sealed) != len(plain)+TagSize {
		t.Fatalf("sealed %d bytes, want %d", len(sealed), len(plain)+TagSize)
	}
	if bytes.Contains(sealed, plain[:8]) {
		t.Fatal("ciphertext carries plaintext")
	}
	got, err := s.Open(bytes.Clone(sealed), 1, 2, 5)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %q, %v", got, err)
	}
	other := newSealer(t, newKey(t))
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	for name, tc := range map[string]struct {
		s                    *Sealer
		b                    []byte
		image, chunk, chunks int
	}{
		"chunk moved":             {s, sealed, 1, 3, 5},
		"other image":             {s, sealed, 0, 2, 5},
		"image shortened":         {s, sealed, 1, 2, 3},
		"replayed into other key": {other, sealed, 1, 2, 5},
		"flipped tag byte":        {s, flipped, 1, 2, 5},
		"truncated":               {s, sealed[:len(sealed)-1], 1, 2, 5},
		"shorter than tag":        {s, sealed[:TagSize-1], 1, 2, 5},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := tc.s.Open(bytes.Clone(tc.b), tc.image, tc.chunk, tc.chunks)
			if !errors.Is(err, ErrAuth) || out != nil {
				t.Fatalf("got %q, %v; want nil, ErrAuth", out, err)
			}
		})
	}
}

func TestCommitment(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	c1 := Commitment(k1)
	if err := CheckCommitment(k1, c1[:]); err != nil {
		t.Fatal(err)
	}
	if err := CheckCommitment(k2, c1[:]); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("other key: %v, want ErrWrongKey", err)
	}
	if bytes.Equal(c1[:], k1[:]) {
		t.Fatal("commitment equals the key")
	}
}

func genKey(t testing.TB, alg string) *PrivateKey {
	t.Helper()
	k, err := GenerateKey(rand.Reader, alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestWrapUnwrap(t *testing.T) {
	for _, alg := range []string{"x25519", "p256"} {
		t.Run(alg, func(t *testing.T) {
			dev, other := genKey(t, alg), genKey(t, alg)
			ck := newKey(t)
			c := Commitment(ck)
			e, err := Wrap(rand.Reader, &dev.Public, ck, c[:])
			if err != nil {
				t.Fatal(err)
			}
			got, err := dev.Unwrap(&e, c[:])
			if err != nil || *got != *ck {
				t.Fatalf("unwrap: %v", err)
			}
			// Another device with the same entry relabelled as its own.
			e2 := e
			e2.ID, e2.KEM = other.Public.ID, other.Public.KEM
			if _, err := other.Unwrap(&e2, c[:]); !errors.Is(err, ErrAuth) {
				t.Fatalf("other key: %v, want ErrAuth", err)
			}
			// The entry moved into a bundle with another commitment.
			c2 := Commitment(newKey(t))
			if _, err := dev.Unwrap(&e, c2[:]); !errors.Is(err, ErrAuth) {
				t.Fatalf("other commitment: %v, want ErrAuth", err)
			}
			// Anyone can wrap a key for a public key: a substituted key
			// bound to the real commitment opens, and the commitment refuses it.
			evil := newKey(t)
			e3, err := Wrap(rand.Reader, &dev.Public, evil, c[:])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dev.Unwrap(&e3, c[:]); !errors.Is(err, ErrWrongKey) {
				t.Fatalf("substituted key: %v, want ErrWrongKey", err)
			}
			e4 := e
			e4.Wrapped[0] ^= 1
			if _, err := dev.Unwrap(&e4, c[:]); !errors.Is(err, ErrAuth) {
				t.Fatalf("flipped wrapped key: %v, want ErrAuth", err)
			}
		})
	}
}

func TestPEMRoundTrip(t *testing.T) {
	for _, alg := range []string{"x25519", "p256"} {
		k := genKey(t, alg)
		pb, err := k.MarshalPrivatePEM()
		if err != nil {
			t.Fatal(err)
		}
		k2, err := ParsePrivatePEM(pb)
		if err != nil || k2.Public.ID != k.Public.ID {
			t.Fatalf("%s private: %v", alg, err)
		}
		ub, err := k.Public.MarshalPublicPEM()
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParsePublicPEM(ub)
		if err != nil || p.ID != k.Public.ID || p.KEM != k.Public.KEM {
			t.Fatalf("%s public: %v", alg, err)
		}
		if _, err := ParsePrivatePEM(ub); !errors.Is(err, ErrMalformed) {
			t.Fatalf("public PEM as private: %v", err)
		}
		if _, err := ParsePublicPEM(append(ub, ub...)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("two PEM blocks: %v", err)
		}
	}
}

// block builds a block for n fresh recipients, alternating KEMs, and
// returns the keys too.
func block(t testing.TB, n int, ck *ContentKey) ([]byte, []*PrivateKey) {
	t.Helper()
	c := Commitment(ck)
	var es []Entry
	var keys []*PrivateKey
	for i := 0; i < n; i++ {
		alg := "x25519"
		if i%2 == 1 {
			alg = "p256"
		}
		k := genKey(t, alg)
		e, err := Wrap(rand.Reader, &k.Public, ck, c[:])
		if err != nil {
			t.Fatal(err)
		}
		es, keys = append(es, e), append(keys, k)
	}
	b, err := MarshalBlock(es)
	if err != nil {
		t.Fatal(err)
	}
	return b, keys
}

func TestBlockLookup(t *testing.T) {
	ck := newKey(t)
	c := Commitment(ck)
	b, keys := block(t, 9, ck)
	if int64(len(b)) != BlockSize(9) {
		t.Fatalf("block %d bytes, want %d", len(b), BlockSize(9))
	}
	es, err := ParseBlock(b)
	if err != nil || len(es) != 9 {
		t.Fatalf("parse: %d entries, %v", len(es), err)
	}
	for _, k := range keys {
		got, err := k.Open(b, c[:])
		if err != nil || *got != *ck {
			t.Fatalf("key %s: %v", k.Public.ID, err)
		}
	}
	stranger := genKey(t, "x25519")
	if _, err := stranger.Open(b, c[:]); !errors.Is(err, ErrNotRecipient) {
		t.Fatalf("not a recipient: %v", err)
	}
	// Two entries swapped in place: order broken, parse refuses, and the
	// device either misses its entry or sees the broken order.
	sw := bytes.Clone(b)
	e0 := bytes.Clone(sw[BlockHeaderSize : BlockHeaderSize+EntrySize])
	copy(sw[BlockHeaderSize:], sw[BlockHeaderSize+EntrySize:BlockHeaderSize+2*EntrySize])
	copy(sw[BlockHeaderSize+EntrySize:], e0)
	if _, err := ParseBlock(sw); !errors.Is(err, ErrMalformed) {
		t.Fatalf("swapped parse: %v", err)
	}
	for _, k := range keys {
		if got, err := k.Open(sw, c[:]); err == nil && *got != *ck {
			t.Fatal("swapped block yielded another key")
		}
	}
	// Wrapped keys swapped between two entries that keep their ids.
	sw2 := bytes.Clone(b)
	w := KeyIDSize + 1 + encSize
	a, bb := sw2[BlockHeaderSize+w:BlockHeaderSize+EntrySize], sw2[BlockHeaderSize+EntrySize+w:BlockHeaderSize+2*EntrySize]
	ta := bytes.Clone(a)
	copy(a, bb)
	copy(bb, ta)
	es2, _ := ParseBlock(sw2)
	for _, k := range keys {
		if k.Public.ID == es2[0].ID || k.Public.ID == es2[1].ID {
			if _, err := k.Open(sw2, c[:]); !errors.Is(err, ErrAuth) {
				t.Fatalf("swapped wrapped keys: %v, want ErrAuth", err)
			}
		}
	}
	for name, bad := range map[string][]byte{
		"truncated":    b[:len(b)-1],
		"extra byte":   append(bytes.Clone(b), 0),
		"header only":  b[:BlockHeaderSize],
		"short header": b[:5],
		"magic":        append([]byte("OTAX"), b[4:]...),
	} {
		if _, err := ParseBlock(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
		if _, err := Lookup(bad, keys[0].Public.ID); !errors.Is(err, ErrMalformed) {
			t.Errorf("lookup %s: %v, want ErrMalformed", name, err)
		}
	}
	huge := bytes.Clone(b[:BlockHeaderSize])
	huge[8], huge[9], huge[10], huge[11] = 0xff, 0xff, 0xff, 0xff
	if _, err := BlockHeader(huge); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("huge count: %v", err)
	}
	dup, _ := ParseBlock(b)
	if _, err := MarshalBlock(append(dup, dup[0])); !errors.Is(err, ErrMalformed) {
		t.Fatalf("duplicate id: %v", err)
	}
}

func FuzzRecipientBlock(f *testing.F) {
	ck, _ := NewContentKey(rand.Reader)
	c := Commitment(&ck)
	b, keys := block(f, 3, &ck)
	f.Add(b)
	f.Add(b[:BlockHeaderSize])
	f.Add([]byte("OTAR\x01\x00\x00\x00\x00\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, perr := ParseBlock(b)
		if perr == nil {
			again, err := MarshalBlock(es)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("parsed block does not re-encode to itself: %v", err)
			}
			for _, e := range es {
				got, err := Lookup(b, e.ID)
				if err != nil || got.ID != e.ID || !bytes.Equal(got.Enc, e.Enc) || got.Wrapped != e.Wrapped {
					t.Fatalf("lookup %s disagrees with parse: %v", e.ID, err)
				}
			}
		}
		for _, k := range keys {
			got, err := k.Open(b, c[:])
			if err == nil && *got != ck {
				t.Fatal("opened to a key that is not the committed one")
			}
			if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotRecipient) &&
				!errors.Is(err, ErrAuth) && !errors.Is(err, ErrWrongKey) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("unexpected error class: %v", err)
			}
		}
	})
}

// BenchmarkLookup10k measures the device's lookup among 10,000 recipients
// (binary search plus one unwrap).
func BenchmarkLookup10k(b *testing.B) {
	ck := newKey(b)
	blk, keys := block(b, 10000, ck)
	k := keys[len(keys)/3]
	b.ResetTimer()
	for b.Loop() {
		if _, err := Lookup(blk, k.Public.ID); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(blk)), "block-bytes")
}

func BenchmarkOpen10k(b *testing.B) {
	ck := newKey(b)
	c := Commitment(ck)
	blk, keys := block(b, 10000, ck)
	k := keys[len(keys)/3]
	b.ResetTimer()
	for b.Loop() {
		if _, err := k.Open(blk, c[:]); err != nil {
			b.Fatal(err)
		}
	}
}
