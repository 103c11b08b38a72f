// Package hsmtest gives tests a real PKCS#11 token: SoftHSM2 initialised in
// a t.TempDir() (SOFTHSM2_CONF points at a config there, so no system token
// is touched), with key pairs generated inside the token by OpenSC's
// pkcs11-tool. The token's objects are removed with the directory.
package hsmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Module is Debian's SoftHSM2 PKCS#11 module.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// Token is an initialised SoftHSM2 token.
type Token struct {
	Label   string
	PIN     string
	PINFile string // holds PIN, for pin-source=file:
	Dir     string // test directory holding the config and the token store
}

// New initialises a token labelled label. It sets SOFTHSM2_CONF for the
// test (so the test may not run in parallel).
func New(t *testing.T, label string) *Token {
	t.Helper()
	for _, c := range []string{"softhsm2-util", "pkcs11-tool"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s not installed (make deps installs softhsm2 and opensc): %v", c, err)
		}
	}
	if _, err := os.Stat(Module); err != nil {
		t.Fatalf("SoftHSM2 module: %v", err)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	tk := &Token{Label: label, PIN: "246810", Dir: dir, PINFile: filepath.Join(dir, "pin")}
	if err := os.WriteFile(tk.PINFile, []byte(tk.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "13579135", "--pin", tk.PIN).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return tk
}

// Tool runs pkcs11-tool on this token, logged in (PIN via the environment).
func (tk *Token) Tool(args ...string) (string, error) {
	a := append([]string{"--module", Module, "--token-label", tk.Label, "--login", "--pin", "env:HSMTEST_PIN"}, args...)
	cmd := exec.Command("pkcs11-tool", a...)
	cmd.Env = append(os.Environ(), "HSMTEST_PIN="+tk.PIN)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// GenerateKeyPair makes a key pair inside the token: keyType as
// pkcs11-tool takes it ("rsa:2048", "EC:prime256v1"), private key
// sensitive and not extractable (pkcs11-tool's and SoftHSM's default).
func (tk *Token) GenerateKeyPair(t *testing.T, keyType, label, id string) {
	t.Helper()
	out, err := tk.Tool("--keypairgen", "--key-type", keyType, "--label", label, "--id", id, "--usage-sign")
	if err != nil {
		t.Fatalf("pkcs11-tool --keypairgen %s: %v\n%s", keyType, err, out)
	}
}

// URI is the PKCS#11 URI of object label, with the module and the PIN file.
func (tk *Token) URI(label string) string {
	return "pkcs11:token=" + tk.Label + ";object=" + label + "?module-path=" + Module + "&pin-source=file:" + tk.PINFile
}

// PrivateKeyAttributes returns pkcs11-tool's "Access:" line of the private
// key object label (e.g. "sensitive, always sensitive, never extractable,
// local"). pkcs11-tool lists every private key (it does not filter by
// label), so the object's block is picked out here.
func (tk *Token) PrivateKeyAttributes(t *testing.T, label string) string {
	t.Helper()
	out, err := tk.Tool("--list-objects", "--type", "privkey")
	if err != nil {
		t.Fatalf("pkcs11-tool --list-objects: %v\n%s", err, out)
	}
	for _, block := range strings.Split(out, "Private Key Object;")[1:] {
		var l, access string
		for _, line := range strings.Split(block, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
			switch k {
			case "label":
				l = strings.TrimSpace(v)
			case "Access":
				access = strings.TrimSpace(v)
			}
		}
		if l == label {
			return access
		}
	}
	t.Fatalf("no private key %q in the token:\n%s", label, out)
	return ""
}
