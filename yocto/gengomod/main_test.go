package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseGoSumMarksModOnlyModules(t *testing.T) {
	mods, err := ParseGoSum(strings.NewReader(`github.com/A/b v1.0.0 h1:x=
github.com/A/b v1.0.0/go.mod h1:y=
example.com/modonly v0.1.0/go.mod h1:z=
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) != 2 || mods[0].Path != "example.com/modonly" || mods[0].Zip || !mods[1].Zip {
		t.Fatalf("got %+v", mods)
	}
	if got := mods[1].cachePath(); got != "github.com/!a/b/@v/v1.0.0" {
		t.Errorf("cachePath = %q: capitals must be escaped as the module cache does", got)
	}
	if _, err := ParseGoSum(strings.NewReader("garbage\n")); err == nil {
		t.Error("a malformed go.sum line was accepted")
	}
}

// A module cache with one module and one go.mod-only module, as
// `go mod download` leaves it.
func fakeCache(t *testing.T) (gosum, modcache string) {
	t.Helper()
	dir := t.TempDir()
	modcache = filepath.Join(dir, "mod")
	write := func(p, s string) {
		p = filepath.Join(modcache, "cache", "download", filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("github.com/!a/b/@v/v1.0.0.zip", "zip")
	write("github.com/!a/b/@v/v1.0.0.mod", "module github.com/A/b\n")
	write("example.com/m/@v/v0.1.0.mod", "module example.com/m\n")
	gosum = filepath.Join(dir, "go.sum")
	if err := os.WriteFile(gosum, []byte("github.com/A/b v1.0.0 h1:x=\ngithub.com/A/b v1.0.0/go.mod h1:y=\nexample.com/m v0.1.0/go.mod h1:z=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return gosum, modcache
}

func TestWriteThenCheckThenStale(t *testing.T) {
	gosum, modcache := fakeCache(t)
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	if err := run([]string{"-gosum", gosum, "-modcache", modcache, "-dir", out}, &stdout, &stderr); err != nil {
		t.Fatalf("write: %v\n%s", err, stderr.String())
	}
	inc, _ := os.ReadFile(filepath.Join(out, "otad-go-mods.inc"))
	for _, want := range []string{
		"gomod://github.com/A/b;version=v1.0.0;sha256sum=" + sha256Hex("zip"),
		"gomod://example.com/m;version=v0.1.0;mod=1;sha256sum=" + sha256Hex("module example.com/m\n"),
	} {
		if !strings.Contains(string(inc), want) {
			t.Errorf("otad-go-mods.inc lacks %q:\n%s", want, inc)
		}
	}
	proxy, _ := os.ReadFile(filepath.Join(out, "otad-go-mods-proxy.inc"))
	if !strings.Contains(string(proxy), "${OTAD_GO_PROXY}/github.com/!a/b/@v/v1.0.0.zip;downloadfilename=github.com/!a/b/@v/v1.0.0.zip;unpack=0;subdir=${OTAD_GO_MOD_CACHE_DIR}/cache/download/github.com/!a/b/@v") {
		t.Errorf("proxy include does not unpack into the module cache layout:\n%s", proxy)
	}
	if !strings.Contains(string(proxy), `.sha256sum] = "`+sha256Hex("zip")+`"`) {
		t.Errorf("proxy include lacks the zip checksum:\n%s", proxy)
	}
	if strings.Contains(string(proxy), "example.com/m/@v/v0.1.0.zip") {
		t.Error("a go.mod-only module's zip is downloaded")
	}

	if err := run([]string{"-check", "-gosum", gosum, "-modcache", modcache, "-dir", out}, &stdout, &stderr); err != nil {
		t.Fatalf("check right after writing: %v", err)
	}
	// go.sum moves on, the includes do not.
	if err := os.WriteFile(gosum, []byte("github.com/A/b v1.0.0 h1:x=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"-check", "-gosum", gosum, "-modcache", modcache, "-dir", out}, &stdout, &stderr)
	if !errors.Is(err, ErrStale) {
		t.Fatalf("check after go.sum changed: %v, want ErrStale", err)
	}
}

func TestMissingCacheFileSaysWhatToRun(t *testing.T) {
	gosum, modcache := fakeCache(t)
	if err := os.Remove(filepath.Join(modcache, "cache", "download", "github.com", "!a", "b", "@v", "v1.0.0.zip")); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run([]string{"-gosum", gosum, "-modcache", modcache, "-dir", t.TempDir()}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "go mod download") {
		t.Fatalf("err = %v, want a hint to run go mod download", err)
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
