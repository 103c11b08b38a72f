//go:build !otad_device

package cli

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/bundle"
)

// TestBundleEncryptCommands walks the encrypted flow on the build host:
// recipient keys, encrypt a signed bundle, verify as a recipient and as a
// stranger, add a device without re-signing, list.
func TestBundleEncryptCommands(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	img := make([]byte, 200000)
	rand.Read(img)
	os.WriteFile(p("root.img"), img, 0o644)
	must := func(args ...string) string {
		t.Helper()
		out, err := runBundle(t, args...)
		if err != nil {
			t.Fatalf("bundle %v: %v\n%s", args, err, out)
		}
		return out
	}
	must("keygen", "--id", "rel", "-o", p("rel"))
	os.Mkdir(p("keys"), 0o755)
	b, _ := os.ReadFile(p("rel.pub"))
	os.WriteFile(filepath.Join(p("keys"), "rel.pub"), b, 0o644)
	must("recipients", "keygen", "-o", p("publisher"))
	must("recipients", "keygen", "--alg", "p256", "-o", p("batch7"))
	must("recipients", "keygen", "-o", p("late"))
	if st, err := os.Stat(p("batch7.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("recipient key mode: %v %v", st.Mode(), err)
	}
	if _, err := runBundle(t, "recipients", "keygen", "-o", p("late")); err == nil {
		t.Fatal("recipients keygen overwrote a key")
	}
	must("create", "--compatible", "gw1", "--version", "2.0", "--security-version", "7", "--compress", "zstd",
		"--chunk-size", "64K", "--image", "rootfs="+p("root.img"), "--key", p("rel.key"), "-o", p("u.otab"))
	if _, err := runBundle(t, "encrypt", "--to", p("batch7.pub"), p("u.otab")); err == nil {
		t.Fatal("encrypt of a plain bundle without a signing key")
	}
	must("encrypt", "--key", p("rel.key"), "--to", p("publisher.pub"), "--to", p("batch7.pub"), "-o", p("enc.otab"), p("u.otab"))
	v := must("verify", "--keyring", p("keys"), "--decryption-key", p("batch7.key"), p("enc.otab"))
	if !strings.Contains(v, "OK gw1 2.0") {
		t.Fatalf("verify:\n%s", v)
	}
	if _, err := runBundle(t, "verify", "--keyring", p("keys"), p("enc.otab")); !errors.Is(err, bundle.ErrNotRecipient) {
		t.Fatalf("verify without a key: %v", err)
	}
	if _, err := runBundle(t, "verify", "--keyring", p("keys"), "--decryption-key", p("late.key"), p("enc.otab")); !errors.Is(err, bundle.ErrNotRecipient) {
		t.Fatalf("verify by a non-recipient: %v", err)
	}
	info1 := must("info", p("enc.otab"))
	if !strings.Contains(info1, "encryption:       aes-256-gcm") {
		t.Fatalf("info does not say encrypted:\n%s", info1)
	}
	must("recipients", "add", "--identity", p("publisher.key"), "--to", p("late.pub"), p("enc.otab"))
	if info2 := must("info", p("enc.otab")); info1 != info2 {
		t.Fatalf("recipients add changed the manifest or signatures:\n%s\n%s", info1, info2)
	}
	must("verify", "--keyring", p("keys"), "--decryption-key", p("late.key"), p("enc.otab"))
	l := must("recipients", "list", p("enc.otab"))
	if !strings.Contains(l, "3 recipients") || !strings.Contains(l, "p256") {
		t.Fatalf("list:\n%s", l)
	}
	// Re-wrap for exactly one group: the others are out.
	must("encrypt", "--identity", p("publisher.key"), "--to", p("publisher.pub"), "--to", p("late.pub"), p("enc.otab"))
	if _, err := runBundle(t, "verify", "--keyring", p("keys"), "--decryption-key", p("batch7.key"), p("enc.otab")); !errors.Is(err, bundle.ErrNotRecipient) {
		t.Fatalf("removed recipient: %v", err)
	}
}
