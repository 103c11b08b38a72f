//go:build !otad_device

package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/delta"
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
		var stdout, stderr bytes.Buffer
		f, _ := os.Open(out)
		err := Run(context.Background(), []string{"otad", "bundle", "verify", "--keyring", p("keys"), "-"}, f, &stdout, &stderr)
		f.Close()
		if err != nil || !strings.Contains(stdout.String(), "OK gw1") {
			t.Errorf("verify from stdin: %v\n%s%s", err, stdout.String(), stderr.String())
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

// TestBundleCreateDelta: --delta-from ships a patch that, read through the
// verifying reader and applied to the old image, rebuilds the new image;
// an unrelated old image falls back to the full image.
func TestBundleCreateDelta(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	old := make([]byte, 1<<20)
	rand.Read(old)
	nw := bytes.Clone(old)
	copy(nw[5000:], []byte("a security fix in the middle of the image"))
	nw = append(nw, []byte("and a new file at the end")...)
	os.WriteFile(p("old.img"), old, 0o644)
	os.WriteFile(p("new.img"), nw, 0o644)
	if out, err := runBundle(t, "keygen", "--id", "k", "-o", p("k")); err != nil {
		t.Fatal(err, out)
	}
	os.Mkdir(p("keys"), 0o755)
	pub, _ := os.ReadFile(p("k.pub"))
	os.WriteFile(filepath.Join(p("keys"), "k.pub"), pub, 0o644)
	out, err := runBundle(t, "create", "--compatible", "gw1", "--version", "2", "--image", "rootfs="+p("new.img"),
		"--delta-from", p("old.img"), "--key", p("k.key"), "-o", p("d.otab"))
	if err != nil {
		t.Fatal(err, out)
	}
	f, err := os.Open(p("d.otab"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kr, err := bundle.LoadKeyring(p("keys"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := bundle.NewReader(f, bundle.Options{Keyring: kr, Compatible: "gw1"})
	if err != nil {
		t.Fatal(err)
	}
	img, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if img.Encoding != bundle.EncodingDelta || img.Delta == nil || img.Delta.SourceSize != int64(len(old)) || img.Size != int64(len(nw)) {
		t.Fatalf("image %+v", img)
	}
	if img.PayloadSize > int64(len(nw))/10 {
		t.Errorf("patch is %d bytes for a %d-byte image", img.PayloadSize, len(nw))
	}
	var rebuilt bytes.Buffer
	if err := delta.Apply(context.Background(), r, bytes.NewReader(old), &rebuilt); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rebuilt.Bytes(), nw) {
		t.Fatal("applied delta differs from the new image")
	}

	unrelated := make([]byte, 1<<20)
	rand.Read(unrelated)
	os.WriteFile(p("unrelated.img"), unrelated, 0o644)
	out, err = runBundle(t, "create", "--compatible", "gw1", "--version", "2", "--image", "rootfs="+p("new.img"),
		"--delta-from", "rootfs="+p("unrelated.img"), "--key", p("k.key"), "-o", p("f.otab"))
	if err != nil || !strings.Contains(out, "shipping the full image") {
		t.Fatalf("fallback: %v\n%s", err, out)
	}
	if info, _ := runBundle(t, "info", p("f.otab")); !strings.Contains(info, "image rootfs: zstd") {
		t.Errorf("fallback bundle:\n%s", info)
	}
}
