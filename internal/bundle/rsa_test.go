package bundle

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// RSA test keys are read from testdata (test-only keys, never shipped)
// instead of being generated per test binary (seconds on a busy machine);
// GenerateRSAKey itself is exercised by TestCoSigning and the CLI tests.
type rsaKeySet struct {
	oem     *PrivateKey // RSA-2048, PSS, id oem-2026
	oemV15  *PrivateKey // RSA-2048, PKCS#1 v1.5, id oem-legacy
	big     *PrivateKey // RSA-3072, PSS, id oem-3072
	other   *PrivateKey // RSA-2048, PSS, also id oem-2026, not in the keyring
	short   *rsa.PrivateKey
	initErr error
}

var (
	rsaOnce sync.Once
	rsaSet  rsaKeySet
)

func rsaKeys(t testing.TB) *rsaKeySet {
	t.Helper()
	rsaOnce.Do(func() {
		load := func(name string) *PrivateKey {
			k, err := LoadPrivateKey(filepath.Join("testdata", name))
			if err != nil && rsaSet.initErr == nil {
				rsaSet.initErr = err
			}
			return k
		}
		rsaSet.oem = load("rsa-oem.key")
		rsaSet.oemV15 = load("rsa-legacy.key")
		rsaSet.big = load("rsa-3072.key")
		rsaSet.other = load("rsa-other.key")
		b, err := os.ReadFile(filepath.Join("testdata", "rsa-1024.pem"))
		if err != nil {
			rsaSet.initErr = err
			return
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			rsaSet.initErr = errors.New("testdata/rsa-1024.pem: no PEM block")
			return
		}
		rsaSet.short, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
		if err != nil && rsaSet.initErr == nil {
			rsaSet.initErr = err
		}
	})
	if rsaSet.initErr != nil {
		t.Fatal(rsaSet.initErr)
	}
	return &rsaSet
}

func rsaKeyring(t testing.TB) *Keyring {
	k := rsaKeys(t)
	kr, err := NewKeyring(DefaultPolicy, k.oem.Public(), k.oemV15.Public(), k.big.Public())
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// rawRSA signs the bundle message of manifest with key's RSA material in
// the given padding, whatever the key file declares.
func rawRSA(t testing.TB, key *PrivateKey, pss bool, manifest []byte) []byte {
	t.Helper()
	h := sha256.Sum256(signedMessage(manifest))
	rk := key.key.(*rsa.PrivateKey)
	var sig []byte
	var err error
	if pss {
		sig, err = rsa.SignPSS(rand.Reader, rk, crypto.SHA256, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	} else {
		sig, err = rsa.SignPKCS1v15(nil, rk, crypto.SHA256, h[:])
	}
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// TestBadRSABundles extends the bad-bundle harness to RSA: short keys,
// wrong padding both ways, a signature over another bundle, e = 1, and a
// modulus that does not match the key id. Every case is refused before a
// single byte reaches the writer.
func TestBadRSABundles(t *testing.T) {
	k := rsaKeys(t)
	const size = 4*testChunk + 1000
	img := content(1, size, false)
	good := makeBundle(t, createOpts(), []Source{rawSource("rootfs", img, EncodingRaw)}, k.oem)
	mb, _, rest := parts(t, good)
	other := makeBundle(t, createOpts(), []Source{rawSource("rootfs", content(2, size, false), EncodingRaw)}, k.oem)
	otherMB, _, _ := parts(t, other)

	entry := func(code byte, id string, body ...[]byte) []byte {
		b := bytes.Join(body, nil)
		e := append([]byte{code, byte(len(id))}, id...)
		e = binary.BigEndian.AppendUint16(e, uint16(len(b)))
		return append(e, b...)
	}
	block := func(entries ...[]byte) []byte { return assemble(mb, bytes.Join(entries, nil), rest) }
	hash := func(k *PrivateKey) []byte { return k.Public().keyHash() }
	trustRSA := func(o *Options) { o.Keyring = rsaKeyring(t) }

	// The positive control: the same harness accepts the good bundle and
	// delivers the whole image.
	for _, signer := range []*PrivateKey{k.oem, k.oemV15, k.big} {
		b := makeBundle(t, createOpts(), []Source{rawSource("rootfs", img, EncodingRaw)}, signer)
		o := testOptions(t)
		trustRSA(&o)
		rec, err := drain(bytes.NewReader(b), o, true)
		if err != nil || !bytes.Equal(rec.Bytes(), img) {
			t.Fatalf("good bundle signed by %s (%s, %d bits): %v, %d bytes", signer.ID, signer.Alg, signer.Public().Bits(), err, rec.Len())
		}
	}

	// e = 1: the "signature" is the PKCS#1 v1.5 encoded message itself, so
	// anyone can forge it. A keyring loaded from files never holds such a
	// key (TestRSAKeyChecks); this keyring is built around the checks to
	// show Verify refuses it on its own.
	e1 := &PublicKey{ID: "oem-e1", Alg: AlgRSAPKCS1, Role: "release", key: &rsa.PublicKey{N: k.oemV15.key.(*rsa.PrivateKey).N, E: 1}}
	h := sha256.Sum256(signedMessage(mb))
	em := make([]byte, 256)
	em[1] = 1
	di := append([]byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, h[:]...)
	for i := 2; i < len(em)-len(di)-1; i++ {
		em[i] = 0xff
	}
	copy(em[len(em)-len(di):], di)
	e1Ring := &Keyring{Policy: DefaultPolicy, keys: map[string]*PublicKey{"oem-e1": e1}}
	shortPub := &PublicKey{ID: "oem-1024", Alg: AlgRSAPSS, Role: "release", key: &k.short.PublicKey}
	shortSig, err := rsa.SignPSS(rand.Reader, k.short, crypto.SHA256, h[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	if err != nil {
		t.Fatal(err)
	}
	shortRing := &Keyring{Policy: DefaultPolicy, keys: map[string]*PublicKey{"oem-1024": shortPub}}
	n := new(big.Int).Set(k.oem.key.(*rsa.PrivateKey).N).Bytes()

	cases := []badCase{
		{name: "RSA-1024 signature", bundle: block(entry(algCodeRSAPSS, "oem-1024", shortPub.keyHash(), shortSig)),
			opts: func(o *Options) { o.Keyring = shortRing }, want: ErrMalformed, msg: "RSA-1024"},
		{name: "RSA e = 1 forgery", bundle: block(entry(algCodeRSAPKCS1, "oem-e1", e1.keyHash(), em)),
			opts: func(o *Options) { o.Keyring = e1Ring }, want: ErrWeakKey, msg: "exponent 1"},
		{name: "RSA PSS key, entry claims PKCS#1 v1.5", bundle: block(entry(algCodeRSAPKCS1, "oem-2026", hash(k.oem), rawRSA(t, k.oem, false, mb))),
			opts: trustRSA, want: ErrBadSignature, msg: "signature claims rsa-pkcs1v15-sha256"},
		{name: "RSA PSS key, PKCS#1 v1.5 bytes in a PSS entry", bundle: block(entry(algCodeRSAPSS, "oem-2026", hash(k.oem), rawRSA(t, k.oem, false, mb))),
			opts: trustRSA, want: ErrBadSignature, msg: "does not verify"},
		{name: "RSA PKCS#1 v1.5 key, entry claims PSS", bundle: block(entry(algCodeRSAPSS, "oem-legacy", hash(k.oemV15), rawRSA(t, k.oemV15, true, mb))),
			opts: trustRSA, want: ErrBadSignature, msg: "signature claims rsa-pss-sha256"},
		{name: "RSA PKCS#1 v1.5 key, PSS bytes in a PKCS#1 v1.5 entry", bundle: block(entry(algCodeRSAPKCS1, "oem-legacy", hash(k.oemV15), rawRSA(t, k.oemV15, true, mb))),
			opts: trustRSA, want: ErrBadSignature, msg: "does not verify"},
		{name: "RSA signature over another bundle", bundle: block(entry(algCodeRSAPSS, "oem-2026", hash(k.oem), rawRSA(t, k.oem, true, otherMB))),
			opts: trustRSA, want: ErrBadSignature, msg: "does not verify"},
		{name: "RSA modulus not matching the key id", bundle: block(entry(algCodeRSAPSS, "oem-2026", hash(k.other), rawRSA(t, k.other, true, mb))),
			opts: trustRSA, want: ErrBadSignature, msg: "another modulus under the same id"},
		{name: "RSA key id's hash, signature by another modulus", bundle: block(entry(algCodeRSAPSS, "oem-2026", hash(k.oem), rawRSA(t, k.other, true, mb))),
			opts: trustRSA, want: ErrBadSignature, msg: "does not verify"},
		{name: "RSA flipped key hash", bundle: block(entry(algCodeRSAPSS, "oem-2026", flip(hash(k.oem), 31), rawRSA(t, k.oem, true, mb))),
			opts: trustRSA, want: ErrBadSignature, msg: "another modulus"},
		{name: "RSA-3072-sized signature for an RSA-2048 key", bundle: block(entry(algCodeRSAPSS, "oem-2026", hash(k.oem), rawRSA(t, k.big, true, mb))),
			opts: trustRSA, want: ErrBadSignature, msg: "RSA-2048 signatures are 256"},
		{name: "RSA entry without key hash", bundle: block(entry(algCodeRSAPSS, "oem-2026", rawRSA(t, k.oem, true, mb))),
			opts: trustRSA, want: ErrMalformed, msg: "key hash"},
		{name: "RSA all-zero signature", bundle: block(entry(algCodeRSAPSS, "oem-2026", hash(k.oem), make([]byte, 256))),
			opts: trustRSA, want: ErrBadSignature, msg: "does not verify"},
		{name: "RSA signature equal to the modulus", bundle: block(entry(algCodeRSAPSS, "oem-2026", hash(k.oem), n)),
			opts: trustRSA, want: ErrBadSignature, msg: "does not verify"},
		{name: "RSA flipped signature byte", bundle: flip(good, len(good)-len(rest)-1),
			opts: trustRSA, want: ErrBadSignature, msg: "oem-2026"},
		{name: "RSA good plus forged second RSA signature", bundle: block(entry(algCodeRSAPSS, "oem-2026", hash(k.oem), rawRSA(t, k.oem, true, mb)), entry(algCodeRSAPKCS1, "oem-legacy", hash(k.oemV15), rawRSA(t, k.oem, false, mb))),
			opts: trustRSA, want: ErrBadSignature, msg: "oem-legacy"},
	}
	if n := runBadCases(t, cases, img); n < 15 {
		t.Fatalf("only %d RSA cases", n)
	}
}

// TestRSAKeyChecks: short keys, odd sizes and weak exponents are refused
// wherever a key enters (key files, NewPublicKey, keyrings, keygen), with
// an error that says what is required.
func TestRSAKeyChecks(t *testing.T) {
	k := rsaKeys(t)
	n := k.oem.key.(*rsa.PrivateKey).N
	pubFile := func(pk *rsa.PublicKey) []byte {
		b, err := MarshalPublicKey(&PublicKey{ID: "x", Alg: AlgRSAPSS, Role: "release", key: pk})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name string
		key  *rsa.PublicKey
		msg  string
	}{
		{"1024 bits", &k.short.PublicKey, "1024 bits; otad requires at least 2048"},
		{"e = 1", &rsa.PublicKey{N: n, E: 1}, "exponent 1"},
		{"e = 3", &rsa.PublicKey{N: n, E: 3}, "exponent 3"},
		{"even e", &rsa.PublicKey{N: n, E: 65538}, "exponent 65538"},
		{"2056 bits", &rsa.PublicKey{N: new(big.Int).Lsh(n, 8), E: 65537}, "2056 bits"},
	} {
		_, err := ParsePublicKey(pubFile(tc.key))
		if !errors.Is(err, ErrWeakKey) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: ParsePublicKey: %v, want ErrWeakKey mentioning %q", tc.name, err, tc.msg)
		}
		if _, err := NewKeyring(DefaultPolicy, &PublicKey{ID: "x", Alg: AlgRSAPSS, Role: "release", key: tc.key}); !errors.Is(err, ErrWeakKey) {
			t.Errorf("%s: NewKeyring: %v", tc.name, err)
		}
	}
	short := &PrivateKey{ID: "short", Alg: AlgRSAPSS, Role: "release", key: k.short}
	priv, err := MarshalPrivateKey(short)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePrivateKey(priv); !errors.Is(err, ErrWeakKey) {
		t.Errorf("1024-bit private key file: %v", err)
	}
	if _, err := GenerateRSAKey(1024, AlgRSAPSS, "x", "release"); !errors.Is(err, ErrWeakKey) || !strings.Contains(err.Error(), "RSA-2048") {
		t.Errorf("GenerateRSAKey(1024): %v", err)
	}
	if _, err := GenerateKey(AlgRSAPSS, "x", "release", rand.Reader); err == nil {
		t.Error("GenerateKey made an RSA key without a size")
	}

	// Key files round-trip, and the algorithm (padding) must match the key.
	for _, pk := range []*PrivateKey{k.oem, k.oemV15, k.big} {
		pb, _ := MarshalPrivateKey(pk)
		back, err := ParsePrivateKey(pb)
		if err != nil || back.Alg != pk.Alg || back.Public().Fingerprint() != pk.Public().Fingerprint() {
			t.Fatalf("private key file of %s: %v", pk.ID, err)
		}
		ub, _ := MarshalPublicKey(pk.Public())
		pub, err := ParsePublicKey(ub)
		if err != nil || pub.Bits() != pk.Public().Bits() {
			t.Fatalf("public key file of %s: %v", pk.ID, err)
		}
		der, _ := pub.PKIX()
		if _, err := NewPublicKey(pk.ID, AlgP256, "release", der); !errors.Is(err, ErrMalformed) {
			t.Errorf("RSA key declared p256: %v", err)
		}
	}
	if !strings.HasPrefix(k.oem.Public().Fingerprint(), "SHA256:") || k.oem.Public().Fingerprint() == k.other.Public().Fingerprint() {
		t.Error("fingerprints do not tell the two oem-2026 keys apart")
	}

	// Envelopes without a key hash (KeyHash nil): the keyring key of the
	// id decides; another modulus's signature still fails.
	doc := []byte("a channel document")
	good, _ := k.oem.Sign(rand.Reader, doc)
	forged, _ := k.other.Sign(rand.Reader, doc)
	good.KeyHash, forged.KeyHash = nil, nil
	if err := k.oem.Public().Verify(doc, good); err != nil {
		t.Errorf("signature without key hash: %v", err)
	}
	if err := k.oem.Public().Verify(doc, forged); !errors.Is(err, ErrBadSignature) {
		t.Errorf("another modulus without key hash: %v", err)
	}
}
