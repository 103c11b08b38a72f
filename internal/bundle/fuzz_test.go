package bundle

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReader feeds arbitrary bytes to the full read path. It must never
// panic, every error must wrap a package sentinel, and whatever reaches the
// writer must come from a verified chunk (the seeds are valid bundles, so
// mutations mostly land in front matter, tables and chunks).
func FuzzReader(f *testing.F) {
	k := testKeys(f)
	seeds := [][]byte{
		makeBundle(f, createOpts(), []Source{rawSource("rootfs", content(1, 2*testChunk+9, false), EncodingRaw)}, k.ed),
		makeBundle(f, createOpts(), []Source{rawSource("rootfs", content(2, 3*testChunk, true), EncodingZstd)}, k.p256, k.ed2),
		readTestdata(f, "rsa-signed.bundle"),
		[]byte(Magic),
	}
	files, _ := filepath.Glob("testdata/*.otab")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	// Trust the test keys and the golden key so seeds reach the payload.
	o := testOptions(f)
	kr, err := NewKeyring(DefaultPolicy, append(append(o.Keyring.Keys(), goldenKeyring(f).Keys()...), rsaPublicKeys(f)...)...)
	if err != nil {
		f.Fatal(err)
	}
	o.Keyring = kr
	// The true output of every signed manifest among the seeds: no input
	// can make a verified Reader yield anything else.
	want := map[string][]byte{}
	for _, b := range seeds {
		f.Add(b)
		if rec, err := drain(bytes.NewReader(b), o, false); err == nil {
			fr, err := Inspect(bytes.NewReader(b))
			if err != nil {
				f.Fatal(err)
			}
			want[fr.Identity] = rec.Bytes()
		}
	}
	if len(want) < 2 {
		f.Fatalf("only %d seeds drain cleanly: the output check is blind", len(want))
	}
	sentinels := []error{ErrBadSignature, ErrUnknownKey, ErrThreshold, ErrIncompatible, ErrDowngrade, ErrExpired,
		ErrMalformed, ErrTruncated, ErrChunkHash, ErrTooLarge, ErrWeakKey}
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
				t.Fatalf("clean read yielded %d bytes that differ from the signed images (%d bytes)", rec.Len(), len(full))
			case !bytes.HasPrefix(full, rec.Bytes()):
				t.Fatalf("%d bytes reached the writer that are not a prefix of the signed images", rec.Len())
			}
		}
		if err == nil || errors.Is(err, io.EOF) {
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

// FuzzParseManifest checks the strict parser: anything it accepts
// re-encodes to exactly the same bytes.
func FuzzParseManifest(f *testing.F) {
	b := makeBundle(f, createOpts(), []Source{rawSource("rootfs", content(1, 100, false), EncodingRaw)}, testKeys(f).ed)
	mb, _, _ := parts(f, b)
	f.Add(mb)
	f.Add([]byte(`{"type":"otad-bundle-v1","type":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		again, err := MarshalManifest(m)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted non-canonical manifest %q (re-encodes to %q, %v)", b, again, err)
		}
	})
}

// FuzzParseSignatures: an accepted block re-encodes to the same bytes (one
// encoding per signature set) and never holds one key id twice.
func FuzzParseSignatures(f *testing.F) {
	b := makeBundle(f, createOpts(), []Source{rawSource("rootfs", content(1, 100, false), EncodingRaw)}, testKeys(f).ed, testKeys(f).p256)
	_, sb, _ := parts(f, b)
	f.Add(sb)
	_, sb, _ = parts(f, readTestdata(f, "rsa-signed.bundle"))
	f.Add(sb)
	f.Fuzz(func(t *testing.T, b []byte) {
		sigs, err := parseSignatures(b)
		if err != nil {
			return
		}
		again, err := marshalSignatures(sigs)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted block does not round-trip: %v", err)
		}
		seen := map[string]bool{}
		for _, s := range sigs {
			if seen[s.KeyID] {
				t.Fatalf("key id %s accepted twice", s.KeyID)
			}
			seen[s.KeyID] = true
		}
	})
}

// FuzzParseKeyFiles: key and policy files never panic the parsers, and an
// accepted public key file re-encodes to an equivalent key.
func FuzzParseKeyFiles(f *testing.F) {
	k := testKeys(f)
	for _, name := range []string{"rsa-oem.key", "rsa-oem.pub", "rsa-legacy.pub", "rsa-3072.pub"} {
		f.Add(readTestdata(f, name))
	}
	for _, pk := range []*PrivateKey{k.ed, k.p256} {
		pub, _ := MarshalPublicKey(pk.Public())
		priv, _ := MarshalPrivateKey(pk)
		f.Add(pub)
		f.Add(priv)
	}
	f.Add([]byte(`{"threshold":2,"roles":["release"]}`))
	f.Add([]byte(`{"require":{"engineering":1,"oem":1}}`))
	f.Add([]byte(`{"threshold":3,"roles":["engineering","oem","qa"],"require":{"oem":2}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := ParsePolicy(b); err == nil {
			// An accepted policy is one a keyring takes, and it never
			// means fewer than one signature or fewer than require demands.
			if _, err := NewKeyring(p); err != nil || p.Threshold < 1 {
				t.Fatalf("policy %s accepted as %+v, keyring refuses it: %v", b, p, err)
			}
			sum := 0
			for _, n := range p.Require {
				sum += n
			}
			if sum > p.Threshold {
				t.Fatalf("policy %+v: require needs %d > threshold", p, sum)
			}
		}
		ParsePrivateKey(b)
		pub, err := ParsePublicKey(b)
		if err != nil {
			return
		}
		again, err := MarshalPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParsePublicKey(again)
		if err != nil || back.ID != pub.ID || back.Alg != pub.Alg || back.Role != pub.Role {
			t.Fatalf("public key does not round-trip: %v", err)
		}
	})
}

// FuzzParseSignatureBytes: external signature text never panics the
// parser, and what it accepts has exactly the key's signature size.
func FuzzParseSignatureBytes(f *testing.F) {
	k := testKeys(f)
	pubs := append([]*PublicKey{k.ed.Public(), k.p256.Public()}, rsaPublicKeys(f)...)
	f.Add([]byte("MEUCIQD"), uint8(1))
	f.Add(bytes.Repeat([]byte("ab"), 64), uint8(0))
	f.Add([]byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}, uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		pub := pubs[int(which)%len(pubs)]
		sig, err := ParseSignatureBytes(pub, b)
		if err != nil {
			return
		}
		want := sigSize
		if isRSA(pub.Alg) {
			want = pub.Bits() / 8
		}
		if len(sig) != want {
			t.Fatalf("accepted a %d-byte signature for %s", len(sig), pub.Alg)
		}
	})
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rsaPublicKeys are the public halves of the testdata RSA keys, read from
// their .pub files: every fuzz worker runs the target's setup, and this
// keeps RSA key generation and private-key checks out of it.
func rsaPublicKeys(t testing.TB) []*PublicKey {
	var out []*PublicKey
	for _, name := range []string{"rsa-oem.pub", "rsa-legacy.pub", "rsa-3072.pub"} {
		k, err := ParsePublicKey(readTestdata(t, name))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}
