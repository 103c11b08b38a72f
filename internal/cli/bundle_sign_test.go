//go:build !otad_device

package cli

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/bundle/extsign/hsmtest"
)

// cliEnv is a temp dir with a random image and a keyring directory.
type cliEnv struct {
	t   *testing.T
	dir string
}

func newCLIEnv(t *testing.T) *cliEnv {
	c := &cliEnv{t: t, dir: t.TempDir()}
	img := make([]byte, 200000)
	rand.Read(img)
	os.WriteFile(c.p("root.img"), img, 0o644)
	os.Mkdir(c.p("keys"), 0o755)
	return c
}

func (c *cliEnv) p(n string) string { return filepath.Join(c.dir, n) }

func (c *cliEnv) must(args ...string) string {
	c.t.Helper()
	out, err := runBundle(c.t, args...)
	if err != nil {
		c.t.Fatalf("bundle %v: %v\n%s", args, err, out)
	}
	return out
}

func (c *cliEnv) trust(pub string) {
	b, err := os.ReadFile(c.p(pub))
	if err != nil {
		c.t.Fatal(err)
	}
	os.WriteFile(filepath.Join(c.p("keys"), filepath.Base(pub)), b, 0o644)
}

func (c *cliEnv) policy(js string) {
	os.WriteFile(filepath.Join(c.p("keys"), "policy.json"), []byte(js), 0o644)
}

func (c *cliEnv) create(out string, signer ...string) string {
	return c.must(append([]string{"create", "--compatible", "gw1", "--version", "4.0", "--security-version", "4",
		"--chunk-size", "64K", "--image", "rootfs=" + c.p("root.img"), "-o", c.p(out)}, signer...)...)
}

var identityRe = regexp.MustCompile(`identity:\s+([0-9a-f]{64})`)

func (c *cliEnv) identity(b string) string {
	m := identityRe.FindStringSubmatch(c.must("info", c.p(b)))
	if m == nil {
		c.t.Fatalf("no identity in bundle info of %s", b)
	}
	return m[1]
}

// TestBundleCoSigningCLI: engineering (P-256) creates and signs, the OEM
// (RSA-2048, PSS) adds its signature with `bundle sign`; a device keyring
// requiring one of each refuses the first and accepts the second, naming
// the missing role; the identity never changes. RSA keygen of every size
// and both paddings, and refusal of RSA-1024.
func TestBundleCoSigningCLI(t *testing.T) {
	c := newCLIEnv(t)
	out := c.must("keygen", "--alg", "p256", "--id", "eng-2026", "--role", "engineering", "-o", c.p("eng"))
	if !strings.Contains(out, "SHA256:") {
		t.Errorf("keygen does not print the fingerprint: %s", out)
	}
	out = c.must("keygen", "--alg", "rsa2048", "--id", "oem-2026", "--role", "oem", "-o", c.p("oem"))
	if !strings.Contains(out, "rsa-pss-sha256") || !strings.Contains(out, "2048 bits") {
		t.Errorf("keygen rsa2048: %s", out)
	}
	out = c.must("keygen", "--alg", "rsa3072", "--rsa-padding", "pkcs1v15", "--id", "oem-legacy", "--role", "oem", "-o", c.p("legacy"))
	if !strings.Contains(out, "rsa-pkcs1v15-sha256") || !strings.Contains(out, "3072 bits") {
		t.Errorf("keygen rsa3072 pkcs1v15: %s", out)
	}
	if o, err := runBundle(t, "keygen", "--alg", "rsa1024", "--id", "weak", "-o", c.p("weak")); err == nil || !strings.Contains(err.Error(), "RSA-2048") {
		t.Errorf("rsa1024: %v\n%s", err, o)
	}
	if _, err := os.Stat(c.p("weak.key")); err == nil {
		t.Error("a refused keygen wrote a key")
	}
	for _, pub := range []string{"eng.pub", "oem.pub", "legacy.pub"} {
		c.trust(pub)
	}
	c.policy(`{"require":{"engineering":1,"oem":1}}`)

	c.create("u.otab", "--key", c.p("eng.key"))
	id := c.identity("u.otab")
	o, err := runBundle(t, "verify", "--keyring", c.p("keys"), "--compatible", "gw1", c.p("u.otab"))
	if err == nil || !strings.Contains(err.Error(), "role oem has 0 of 1") {
		t.Fatalf("engineering alone: %v\n%s", err, o)
	}
	c.must("sign", "--key", c.p("oem.key"), c.p("u.otab"))
	v := c.must("verify", "--keyring", c.p("keys"), "--compatible", "gw1", c.p("u.otab"))
	if !strings.Contains(v, "signed by eng-2026,oem-2026") {
		t.Errorf("verify: %s", v)
	}
	if c.identity("u.otab") != id {
		t.Error("the OEM's signature changed the bundle identity")
	}
	info := c.must("info", c.p("u.otab"))
	if !strings.Contains(info, "oem-2026 (rsa-pss-sha256, RSA-2048, key SHA256:") {
		t.Errorf("info:\n%s", info)
	}
	js := c.must("info", "--json", c.p("u.otab"))
	if !strings.Contains(js, `"bits": 2048`) || !strings.Contains(js, `"key_hash": "SHA256:`) {
		t.Errorf("info --json:\n%s", js)
	}
	// The PKCS#1 v1.5 OEM key instead of the PSS one also satisfies oem.
	c.create("l.otab", "--key", c.p("eng.key"), "--key", c.p("legacy.key"))
	c.must("verify", "--keyring", c.p("keys"), "--compatible", "gw1", c.p("l.otab"))
}

// pemOf extracts the PKCS#8 key of a key file as PEM (the stand-in for a
// key held by a KMS or an offline signing machine).
func pemOf(t *testing.T, keyFile string) string {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Key []byte }
	json.Unmarshal(b, &f)
	p := keyFile + ".pem"
	os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: f.Key}), 0o600)
	return p
}

// TestBundleAirGappedAndSignerCmd: `bundle digest` → sign elsewhere
// (openssl) → `bundle attach-signature`, which refuses a signature that
// does not verify and leaves the file byte for byte as it was; and the
// same key through --signer-cmd.
func TestBundleAirGappedAndSignerCmd(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl (make deps): %v", err)
	}
	c := newCLIEnv(t)
	c.must("keygen", "--alg", "p256", "--id", "eng", "--role", "engineering", "-o", c.p("eng"))
	c.must("keygen", "--alg", "rsa4096", "--id", "oem", "--role", "oem", "-o", c.p("oem"))
	c.trust("eng.pub")
	c.trust("oem.pub")
	c.policy(`{"require":{"engineering":1,"oem":1}}`)
	oemPEM := pemOf(t, c.p("oem.key"))
	os.Remove(c.p("oem.key")) // from here on the OEM key exists only "elsewhere"
	c.create("a.otab", "--key", c.p("eng.key"))
	c.create("other.otab", "--key", c.p("eng.key"), "--version", "4.1")

	digest := strings.TrimSpace(c.must("digest", "--message", c.p("msg.bin"), c.p("a.otab")))
	if len(digest) != 64 {
		t.Fatalf("digest %q", digest)
	}
	sign := func(bundleName, sigName string) {
		d := strings.TrimSpace(c.must("digest", c.p(bundleName)))
		raw := make([]byte, 32)
		for i := range raw {
			var v byte
			for _, ch := range d[2*i : 2*i+2] {
				v = v<<4 | byte(strings.IndexRune("0123456789abcdef", ch))
			}
			raw[i] = v
		}
		os.WriteFile(c.p(sigName+".in"), raw, 0o600)
		cmd := exec.Command("openssl", "pkeyutl", "-sign", "-inkey", oemPEM, "-pkeyopt", "digest:sha256",
			"-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:32", "-in", c.p(sigName+".in"), "-out", c.p(sigName))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl: %v\n%s", err, out)
		}
	}
	sign("a.otab", "a.sig")
	sign("other.otab", "other.sig")
	before, _ := os.ReadFile(c.p("a.otab"))
	if o, err := runBundle(t, "attach-signature", "--pub", c.p("oem.pub"), "--signature", c.p("other.sig"), c.p("a.otab")); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("signature over another bundle: %v\n%s", err, o)
	}
	if after, _ := os.ReadFile(c.p("a.otab")); !bytes.Equal(before, after) {
		t.Fatal("a refused attach-signature changed the bundle")
	}
	if m, _ := filepath.Glob(c.p(".a.otab.tmp-*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
	id := c.identity("a.otab")
	c.must("attach-signature", "--pub", c.p("oem.pub"), "--signature", c.p("a.sig"), c.p("a.otab"))
	c.must("verify", "--keyring", c.p("keys"), "--compatible", "gw1", c.p("a.otab"))
	if c.identity("a.otab") != id {
		t.Error("attach-signature changed the identity")
	}

	// --signer-cmd: the digest on stdin, the signature base64 on stdout.
	line := "openssl pkeyutl -sign -inkey " + oemPEM + " -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32 | base64 -w0"
	c.must("sign", "--signer-cmd", line, "--signer-input", "digest", "--pub", c.p("oem.pub"), c.p("other.otab"))
	c.must("verify", "--keyring", c.p("keys"), "--compatible", "gw1", c.p("other.otab"))
	if o, err := runBundle(t, "sign", "--signer-cmd", line, c.p("other.otab")); err == nil {
		t.Errorf("--signer-cmd without --pub accepted:\n%s", o)
	}
}

// TestBundleHSMSigningCLI: keys generated inside a SoftHSM2 token; the
// keyring files come from the token (`bundle pubkey --signer`), the
// bundle is created by engineering's P-256 token key and co-signed by the
// OEM's RSA-2048 token key, and verifies on the device side. No private
// key file exists at any point.
func TestBundleHSMSigningCLI(t *testing.T) {
	tk := hsmtest.New(t, "otad-cli")
	tk.GenerateKeyPair(t, "EC:prime256v1", "eng", "11")
	tk.GenerateKeyPair(t, "rsa:2048", "oem", "22")
	c := newCLIEnv(t)
	c.must("pubkey", "--signer", tk.URI("eng"), "--id", "eng-hsm", "--role", "engineering", "-o", c.p("eng.pub"))
	out := c.must("pubkey", "--signer", tk.URI("oem"), "--id", "oem-hsm", "--role", "oem", "-o", c.p("oem.pub"))
	if !strings.Contains(out, "rsa-pss-sha256") || !strings.Contains(out, "2048 bits") {
		t.Errorf("pubkey: %s", out)
	}
	c.trust("eng.pub")
	c.trust("oem.pub")
	c.policy(`{"threshold":2,"roles":["engineering","oem"],"require":{"engineering":1,"oem":1}}`)
	c.create("h.otab", "--signer", tk.URI("eng"), "--pub", c.p("eng.pub"))
	if _, err := runBundle(t, "verify", "--keyring", c.p("keys"), "--compatible", "gw1", c.p("h.otab")); err == nil || !strings.Contains(err.Error(), "role oem") {
		t.Fatalf("engineering alone: %v", err)
	}
	c.must("sign", "--signer", tk.URI("oem"), "--pub", c.p("oem.pub"), c.p("h.otab"))
	v := c.must("verify", "--keyring", c.p("keys"), "--compatible", "gw1", c.p("h.otab"))
	if !strings.Contains(v, "signed by eng-hsm,oem-hsm") {
		t.Errorf("verify: %s", v)
	}
	keys, _ := filepath.Glob(c.p("*.key"))
	if len(keys) != 0 {
		t.Errorf("private key files: %v", keys)
	}
	// A URI without a PIN is refused before pkcs11-tool runs, naming how
	// to give one; the error never repeats the query part.
	noPIN := "pkcs11:token=otad-cli;object=oem?module-path=" + hsmtest.Module
	t.Setenv("OTAD_PKCS11_PIN", "")
	if o, err := runBundle(t, "sign", "--signer", noPIN, "--pub", c.p("oem.pub"), c.p("h.otab")); err == nil || !strings.Contains(err.Error(), "no PIN") || strings.Contains(err.Error(), "module-path") {
		t.Errorf("no PIN: %v\n%s", err, o)
	}
}
