package extsign

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/bundle/extsign/hsmtest"
)

// TestPKCS11SoftHSM: RSA-2048 and P-256 key pairs generated inside a
// SoftHSM2 token sign a bundle through pkcs11-tool; the device code
// (bundle.NewReader with a co-signing policy) verifies it and delivers the
// image. The private keys are sensitive and never extractable, reading
// them fails, and no file anywhere in the test holds private key material.
func TestPKCS11SoftHSM(t *testing.T) {
	tk := hsmtest.New(t, "otad-release")
	tk.GenerateKeyPair(t, "rsa:2048", "oem-rsa", "01")
	tk.GenerateKeyPair(t, "EC:prime256v1", "eng-p256", "02")
	ctx := context.Background()
	work := t.TempDir()
	getenv := func(string) string { return "" }

	signer := func(label, id, alg, role string) *PKCS11 {
		p, err := NewPKCS11(tk.URI(label), nil, getenv)
		if err != nil {
			t.Fatal(err)
		}
		p.TmpDir = work
		der, err := p.ReadPublicKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p.Pub, err = bundle.NewPublicKey(id, alg, role, der); err != nil {
			t.Fatal(err)
		}
		return p
	}
	oem := signer("oem-rsa", "oem-2026", bundle.AlgRSAPSS, "oem")
	eng := signer("eng-p256", "eng-2026", bundle.AlgP256, "engineering")
	if oem.Pub.Bits() != 2048 {
		t.Fatalf("token RSA key is %d bits", oem.Pub.Bits())
	}

	img := bytes.Repeat([]byte("otad rootfs image from the release pipeline "), 5000)
	var b bytes.Buffer
	o := bundle.CreateOptions{Compatible: "acme-gw1", Version: "3.0", SecurityVersion: 3, ChunkSize: 64 << 10}
	src := bundle.Source{Class: "rootfs", Encoding: bundle.EncodingZstd, Data: bytes.NewReader(img), Size: int64(len(img))}
	if _, err := bundle.CreateSigned(ctx, &b, o, []bundle.Source{src}, []bundle.Signer{eng}); err != nil {
		t.Fatal(err)
	}
	var cosigned bytes.Buffer
	if err := bundle.AddSignatures(ctx, &cosigned, bytes.NewReader(b.Bytes()), oem); err != nil {
		t.Fatal(err)
	}
	p, err := bundle.ParsePolicy([]byte(`{"require":{"engineering":1,"oem":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	kr, err := bundle.NewKeyring(p, oem.Pub, eng.Pub)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(bb []byte) ([]byte, error) {
		r, err := bundle.NewReader(bytes.NewReader(bb), bundle.Options{Keyring: kr, Compatible: "acme-gw1"})
		if err != nil {
			return nil, err
		}
		defer r.Close()
		if _, err := r.Next(); err != nil {
			return nil, err
		}
		return io.ReadAll(r)
	}
	if _, err := verify(b.Bytes()); !errors.Is(err, bundle.ErrThreshold) || !strings.Contains(err.Error(), "role oem") {
		t.Fatalf("engineering signature alone: %v", err)
	}
	got, err := verify(cosigned.Bytes())
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("bundle signed inside the token: %v", err)
	}

	// The same RSA key through CKM_RSA_PKCS (PKCS#1 v1.5 on DigestInfo).
	v15 := *oem
	if v15.Pub, err = bundle.NewPublicKey("oem-legacy", bundle.AlgRSAPKCS1, "oem", mustPKIX(t, oem.Pub)); err != nil {
		t.Fatal(err)
	}
	var legacy bytes.Buffer
	if err := bundle.AddSignatures(ctx, &legacy, bytes.NewReader(b.Bytes()), &v15); err != nil {
		t.Fatalf("PKCS#1 v1.5 through the token: %v", err)
	}

	// Never a private key outside the token.
	for _, label := range []string{"oem-rsa", "eng-p256"} {
		a := tk.PrivateKeyAttributes(t, label)
		if !strings.Contains(a, "never extractable") || !strings.Contains(a, "sensitive") {
			t.Errorf("private key %s: %s; want sensitive and never extractable", label, a)
		}
		// pkcs11-tool refuses (CKA_SENSITIVE): no file appears.
		stolen := filepath.Join(work, "stolen.der")
		out, _ := tk.Tool("--read-object", "--type", "privkey", "--label", label, "--output-file", stolen)
		if _, err := os.Stat(stolen); err == nil {
			t.Errorf("read the private key %s out of the token:\n%s", label, out)
		}
	}
	entries, _ := os.ReadDir(work)
	for _, e := range entries {
		t.Errorf("signing left %s behind", e.Name())
	}
	// Every file under the test directories except SoftHSM's own
	// (encrypted) object store: none parses as a private key.
	for _, root := range []string{work, tk.Dir} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				if d != nil && d.Name() == "tokens" {
					return filepath.SkipDir
				}
				return err
			}
			raw, _ := os.ReadFile(p)
			if _, err := x509.ParsePKCS8PrivateKey(raw); err == nil {
				t.Errorf("%s holds a private key", p)
			}
			if _, err := x509.ParsePKCS1PrivateKey(raw); err == nil {
				t.Errorf("%s holds a private key", p)
			}
			if _, err := x509.ParseECPrivateKey(raw); err == nil {
				t.Errorf("%s holds a private key", p)
			}
			return nil
		})
	}

	// A public key that is not the token object's: every attempt is
	// refused by the check, nothing is returned.
	wrong := *oem
	impostor, err := bundle.GenerateRSAKey(2048, bundle.AlgRSAPSS, "oem-2026", "oem")
	if err != nil {
		t.Fatal(err)
	}
	wrong.Pub = impostor.Public()
	if err := bundle.AddSignatures(ctx, io.Discard, bytes.NewReader(b.Bytes()), &wrong); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("a signature checked against the wrong public key: %v", err)
	}
	// A wrong PIN fails and the error does not carry it.
	bad, err := NewPKCS11("pkcs11:token=otad-release;object=oem-rsa?module-path="+hsmtest.Module+"&pin-value=999999", oem.Pub, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.AddSignatures(ctx, io.Discard, bytes.NewReader(b.Bytes()), bad); err == nil || strings.Contains(err.Error(), "999999") {
		t.Errorf("wrong PIN: %v", err)
	}
	// Cancellation stops a signer.
	cctx, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-cctx.Done()
	if _, err := oem.SignMessage(cctx, []byte("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("canceled signing: %v", err)
	}
}

func mustPKIX(t *testing.T, k *bundle.PublicKey) []byte {
	der, err := k.PKIX()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseURI(t *testing.T) {
	u, err := ParseURI("pkcs11:token=My%20Token;object=oem;id=%01%02;type=private?module-path=/lib/x.so&pin-value=1234")
	if err != nil {
		t.Fatal(err)
	}
	if u.Token != "My Token" || u.Object != "oem" || !bytes.Equal(u.ID, []byte{1, 2}) || u.ModulePath != "/lib/x.so" || u.PINValue != "1234" {
		t.Fatalf("%+v", u)
	}
	if got := u.String(); got != "pkcs11:id=%01%02;object=oem;token=My%20Token" {
		t.Errorf("printed as %q", got)
	}
	for _, bad := range []string{
		"file:///x", "pkcs11:token=t", "pkcs11:token=t;object=a;object=b", "pkcs11:serial=1;object=a",
		"pkcs11:object=a;type=public", "pkcs11:object=a?module-name=softhsm2", "pkcs11:object=%zz",
		"pkcs11:object=a?pin-value=1234&pin-value=1234",
	} {
		_, err := ParseURI(bad)
		if err == nil {
			t.Errorf("%s accepted", bad)
			continue
		}
		if strings.Contains(err.Error(), "1234") {
			t.Errorf("%s: error carries the PIN: %v", bad, err)
		}
	}
}
