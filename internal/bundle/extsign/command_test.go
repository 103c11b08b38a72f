package extsign

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/bundle"
)

// pemKey writes k's PKCS#8 private key as PEM for openssl (the stand-in
// for a KMS command line) and returns the path.
func pemKey(t *testing.T, k *bundle.PrivateKey) string {
	t.Helper()
	kf, err := bundle.MarshalPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Key []byte }
	if err := json.Unmarshal(kf, &f); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), k.ID+".pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: f.Key}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCommandSigner: openssl as the signing command, fed the digest (RSA
// PSS, P-256 with DER output) or the message (Ed25519), and its output
// in the forms tools print (raw, base64, DER).
func TestCommandSigner(t *testing.T) {
	if _, err := os.Stat("/usr/bin/openssl"); err != nil {
		t.Fatalf("openssl not installed (make deps): %v", err)
	}
	rsaKey, err := bundle.GenerateRSAKey(2048, bundle.AlgRSAPSS, "kms-rsa", "oem")
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := bundle.GenerateKey(bundle.AlgP256, "kms-p256", "engineering", rand.Reader)
	edKey, _ := bundle.GenerateKey(bundle.AlgEd25519, "kms-ed", "release", rand.Reader)
	msg := bundle.SignedMessage([]byte(`{"type":"otad-bundle-v1"}`))
	ctx := context.Background()
	for _, tc := range []struct {
		key   *bundle.PrivateKey
		input string
		line  string
	}{
		{rsaKey, InputDigest, "openssl pkeyutl -sign -inkey %s -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32"},
		{rsaKey, InputDigest, "openssl pkeyutl -sign -inkey %s -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32 | base64"},
		{rsaKey, InputMessage, "openssl dgst -sha256 -sign %s -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32"},
		{ecKey, InputDigest, "openssl pkeyutl -sign -inkey %s"},
		{edKey, InputMessage, `f=$(mktemp) && cat >"$f" && openssl pkeyutl -sign -rawin -inkey %s -in "$f"; rc=$?; rm -f "$f"; exit $rc`},
		{ecKey, InputMessage, `test "$OTAD_SIGN_KEY_ID" = kms-p256 && test "$OTAD_SIGN_INPUT" = message && openssl dgst -sha256 -sign %s`},
	} {
		c := &Command{Line: strings.ReplaceAll(tc.line, "%s", pemKey(t, tc.key)), Input: tc.input, Pub: tc.key.Public()}
		sig, err := c.SignMessage(ctx, msg)
		if err != nil {
			t.Fatalf("%s (%s): %v", tc.line, tc.input, err)
		}
		if err := tc.key.Public().VerifyMessage(msg, sig); err != nil {
			t.Fatalf("%s: %v", tc.line, err)
		}
	}
	// Failures: exit status, wrong key, digest for Ed25519, too much output.
	other, _ := bundle.GenerateKey(bundle.AlgP256, "kms-p256", "engineering", rand.Reader)
	for name, c := range map[string]*Command{
		"exit 3":              {Line: "exit 3", Pub: ecKey.Public()},
		"another key":         {Line: "openssl pkeyutl -sign -inkey " + pemKey(t, other), Input: InputDigest, Pub: ecKey.Public()},
		"ed25519 digest":      {Line: "cat", Input: InputDigest, Pub: edKey.Public()},
		"endless output":      {Line: "head -c 100000 /dev/zero", Pub: ecKey.Public()},
		"unknown input":       {Line: "cat", Input: "hash", Pub: ecKey.Public()},
		"prints the message":  {Line: "cat", Pub: ecKey.Public()},
		"prints a hex digest": {Line: "sha256sum | cut -d' ' -f1", Pub: ecKey.Public()},
	} {
		var stderr bytes.Buffer
		c.Stderr = &stderr
		if _, err := c.SignMessage(ctx, msg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// Cancellation kills the whole pipeline.
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	c := &Command{Line: "sleep 30 | cat", Pub: ecKey.Public()}
	if _, err := c.SignMessage(cctx, msg); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("canceled command: %v", err)
	}
}
