package bundle

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"testing"
)

// TestCoSigning: policy {"require":{"engineering":1,"oem":1}} with an
// engineering P-256 key and an OEM RSA-2048 key. Each alone is refused,
// two engineering signatures are refused, both roles together are
// accepted; every refusal names the missing role and lets no byte through.
// The OEM signs second, with AddSignatures, and the identity is unchanged.
func TestCoSigning(t *testing.T) {
	mk := func(alg, id, role string) *PrivateKey {
		k, err := GenerateKey(alg, id, role, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	eng := mk(AlgP256, "eng-2026", "engineering")
	eng2 := mk(AlgP256, "eng-backup", "engineering")
	oem, err := GenerateRSAKey(2048, AlgRSAPSS, "oem-2026", "oem")
	if err != nil {
		t.Fatal(err)
	}
	for _, pj := range []string{
		`{"require":{"engineering":1,"oem":1}}`,
		`{"threshold":2,"roles":["engineering","oem"],"require":{"engineering":1,"oem":1}}`,
	} {
		p, err := ParsePolicy([]byte(pj))
		if err != nil {
			t.Fatal(err)
		}
		if p.Threshold != 2 || len(p.Roles) != 2 {
			t.Fatalf("%s parsed as %+v", pj, p)
		}
		kr, err := NewKeyring(p, eng.Public(), eng2.Public(), oem.Public())
		if err != nil {
			t.Fatal(err)
		}
		img := content(7, 3*testChunk, false)
		byEng := makeBundle(t, createOpts(), []Source{rawSource("rootfs", img, EncodingRaw)}, eng)
		sign := func(b []byte, s ...Signer) []byte {
			var out bytes.Buffer
			if err := AddSignatures(context.Background(), &out, bytes.NewReader(b), s...); err != nil {
				t.Fatal(err)
			}
			return out.Bytes()
		}
		byBoth := sign(byEng, oem)
		byOEM := makeBundle(t, createOpts(), []Source{rawSource("rootfs", img, EncodingRaw)}, oem)
		byTwoEng := sign(byEng, eng2)
		o := testOptions(t)
		o.Keyring = kr
		for _, tc := range []struct {
			name, missing string
			b             []byte
		}{
			{"engineering alone", "role oem has 0 of 1", byEng},
			{"oem alone", "role engineering has 0 of 1", byOEM},
			{"two engineering keys", "role oem has 0 of 1", byTwoEng},
		} {
			rec, err := drain(bytes.NewReader(tc.b), o, true)
			if !errors.Is(err, ErrThreshold) || !strings.Contains(err.Error(), tc.missing) || rec.Len() != 0 {
				t.Errorf("%s: %v (%d bytes written); want ErrThreshold naming %q and nothing written", tc.name, err, rec.Len(), tc.missing)
				continue
			}
			t.Logf("%s refused: %v", tc.name, err)
		}
		rec, err := drain(bytes.NewReader(byBoth), o, true)
		if err != nil || !bytes.Equal(rec.Bytes(), img) {
			t.Fatalf("engineering + oem: %v", err)
		}
		a, _ := Inspect(bytes.NewReader(byEng))
		b, _ := Inspect(bytes.NewReader(byBoth))
		if a.Identity != b.Identity {
			t.Error("the OEM's signature changed the bundle identity")
		}
	}
}

func TestPolicyRules(t *testing.T) {
	for _, tc := range []struct{ json, msg string }{
		{`{"threshold":1,"roles":["engineering","oem"],"require":{"engineering":1,"oem":1}}`, "threshold 1 is below the 2"},
		{`{"threshold":2,"roles":["engineering"],"require":{"oem":1}}`, "not in roles"},
		{`{"require":{"oem":0}}`, "want >= 1"},
		{`{"require":{"oem":1,"oem":2}}`, "duplicate key"},
		{`{"require":{"oem":1,"OEM":1}}`, "differ only in case"},
		{`{"require":{"oem":{"n":1}}}`, "want a string or number"},
		{`{"require":["oem"]}`, "want an object"},
		{`{"threshold":1,"roles":["release"],"requires":{"oem":1}}`, "unknown field"},
	} {
		if _, err := ParsePolicy([]byte(tc.json)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want ErrMalformed mentioning %q", tc.json, err, tc.msg)
		}
	}
	p, err := ParsePolicy([]byte(`{"threshold":1,"roles":["release"]}`))
	if err != nil || p.Require != nil {
		t.Fatalf("policy without require: %+v, %v", p, err)
	}
}

// TestExternalSignatureForms: signatures as tools print them (hex,
// base64, DER for ECDSA) are accepted; AttachSignature checks before it
// writes and keeps the identity.
func TestExternalSignatureForms(t *testing.T) {
	k := testKeys(t)
	r := rsaKeys(t)
	b := makeBundle(t, createOpts(), []Source{rawSource("rootfs", content(8, testChunk, false), EncodingRaw)}, k.ed)
	d, err := DigestOf(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if d.SHA256 != sha256.Sum256(d.Message) || !bytes.HasPrefix(d.Message, []byte(SignaturePrefix)) {
		t.Fatal("digest does not describe the signed message")
	}
	// P-256 as DER, the way OpenSSL and KMS print it.
	pk := k.p256.key.(*ecdsa.PrivateKey)
	der, err := ecdsa.SignASN1(rand.Reader, pk, d.SHA256[:])
	if err != nil {
		t.Fatal(err)
	}
	rsaSig, err := r.oem.SignMessage(context.Background(), d.Message)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pub  *PublicKey
		sig  []byte
	}{
		{"p256 DER", k.p256.Public(), der},
		{"p256 DER base64", k.p256.Public(), []byte(base64.StdEncoding.EncodeToString(der) + "\n")},
		{"rsa raw", r.oem.Public(), rsaSig},
		{"rsa hex", r.oem.Public(), []byte(hex.EncodeToString(rsaSig))},
		{"rsa base64", r.oem.Public(), []byte(base64.StdEncoding.EncodeToString(rsaSig))},
	} {
		var out bytes.Buffer
		if err := AttachSignature(&out, bytes.NewReader(b), tc.pub, tc.sig); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		f, err := Inspect(bytes.NewReader(out.Bytes()))
		if err != nil || f.Identity != d.Identity || len(f.Signatures) != 2 {
			t.Fatalf("%s: attached bundle: %v", tc.name, err)
		}
		kr, _ := NewKeyring(Policy{Threshold: 2, Roles: []string{"release"}}, k.ed.Public(), tc.pub)
		o := testOptions(t)
		o.Keyring = kr
		if _, err := drain(bytes.NewReader(out.Bytes()), o, true); err != nil {
			t.Fatalf("%s: 2-of-2 after attaching: %v", tc.name, err)
		}
	}
	// A signature over another bundle, or by another key, writes nothing.
	other := makeBundle(t, createOpts(), []Source{rawSource("rootfs", content(9, testChunk, false), EncodingRaw)}, k.ed)
	od, _ := DigestOf(bytes.NewReader(other))
	wrong, _ := r.oem.SignMessage(context.Background(), od.Message)
	for name, tc := range map[string]struct {
		pub *PublicKey
		sig []byte
	}{
		"signature over another bundle": {r.oem.Public(), wrong},
		"signature by another key":      {r.other.Public(), rsaSig},
		"garbage":                       {r.oem.Public(), []byte("not a signature")},
		"DER with trailing bytes":       {k.p256.Public(), append(bytes.Clone(der), 0)},
	} {
		var out bytes.Buffer
		err := AttachSignature(&out, bytes.NewReader(b), tc.pub, tc.sig)
		if err == nil || out.Len() != 0 {
			t.Errorf("%s: err %v, %d bytes written", name, err, out.Len())
		}
	}
	// Out-of-range DER integers are not silently truncated.
	big257 := new(big.Int).Lsh(big.NewInt(1), 256)
	bad, _ := asn1.Marshal(struct{ R, S *big.Int }{big257, big.NewInt(1)})
	if _, err := ParseSignatureBytes(k.p256.Public(), bad); err == nil {
		t.Error("DER with a 257-bit r accepted")
	}
}
