package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runBundle(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := Run(context.Background(), append([]string{"otad", "bundle"}, args...), strings.NewReader(""), &out, &errb)
	return out.String() + errb.String(), err
}

// TestBundleCommands walks the build-host flow: two keys, create with one,
// add the second with sign, verify against a 2-of-n keyring, and refuse a
// tampered copy and a too-high floor.
func TestBundleCommands(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	img := make([]byte, 300000)
	rand.Read(img)
	os.WriteFile(p("root.img"), img, 0o644)
	must := func(args ...string) string {
		out, err := runBundle(t, args...)
		if err != nil {
			t.Fatalf("bundle %v: %v\n%s", args, err, out)
		}
		return out
	}
	must("keygen", "--id", "old", "-o", p("old"))
	must("keygen", "--alg", "p256", "--id", "new", "-o", p("new"))
	if _, err := runBundle(t, "keygen", "--id", "old", "-o", p("old")); err == nil {
		t.Error("keygen overwrote an existing key")
	}
	os.Mkdir(p("keys"), 0o755)
	for _, n := range []string{"old.pub", "new.pub"} {
		b, _ := os.ReadFile(p(n))
		os.WriteFile(filepath.Join(p("keys"), n), b, 0o644)
	}
	os.WriteFile(filepath.Join(p("keys"), "policy.json"), []byte(`{"threshold":2,"roles":["release"]}`), 0o644)

	for _, comp := range []string{"none", "zstd"} {
		out := p("u-" + comp + ".otab")
		must("create", "--compatible", "gw1", "--version", "2.0", "--security-version", "7", "--compress", comp,
			"--chunk-size", "64K", "--image", "rootfs="+p("root.img"), "--key", p("old.key"), "-o", out)
		if o, err := runBundle(t, "verify", "--keyring", p("keys"), out); err == nil {
			t.Fatalf("one signature met a 2-of-n policy:\n%s", o)
		}
		must("sign", "--key", p("new.key"), out)
		v := must("verify", "--keyring", p("keys"), "--compatible", "gw1", "--floor", "7", "--slot-size", "rootfs=1M", "--full-hash", out)
		if !strings.Contains(v, "OK gw1 2.0") || !strings.Contains(v, "new,old") {
			t.Errorf("verify output:\n%s", v)
		}
		if _, err := runBundle(t, "verify", "--keyring", p("keys"), "--floor", "8", out); err == nil {
			t.Error("floor 8 accepted security_version 7")
		}
		if _, err := runBundle(t, "verify", "--keyring", p("keys"), "--compatible", "gw2", out); err == nil {
			t.Error("wrong compatible accepted")
		}
		b, _ := os.ReadFile(out)
		b[len(b)-10] ^= 1
		os.WriteFile(p("bad.otab"), b, 0o644)
		if o, err := runBundle(t, "verify", "--keyring", p("keys"), p("bad.otab")); err == nil || !strings.Contains(err.Error(), "hash mismatch") {
			t.Errorf("tampered payload: %v\n%s", err, o)
		}
		info := must("info", "--json", out)
		if !strings.Contains(info, `"verified": false`) || !strings.Contains(info, `"security_version": 7`) {
			t.Errorf("info --json:\n%s", info)
		}
	}
	if _, err := runBundle(t, "frobnicate"); err == nil {
		t.Error("unknown subcommand accepted")
	}
}
