// Command gengomod writes the Go module part of meta-otad's SRC_URI from
// go.sum, so that BitBake fetches every module before do_compile and the
// build needs no network.
//
// It writes two includes next to otad_git.bb:
//
//	otad-go-mods.inc        gomod:// entries for BitBake 2.12 and later
//	                        (walnascar, whinlatter, wrynose), which have
//	                        the gomod fetcher
//	otad-go-mods-proxy.inc  the same files as plain https:// downloads
//	                        from the module proxy for BitBake without it
//	                        (scarthgap), unpacked into the same module
//	                        cache layout (cache/download/<module>/@v/)
//
// Checksums are the sha256 of the .zip and .mod files in the local module
// cache (run `go mod download` first); the go command itself checks those
// files against go.sum, so a wrong file fails the build either way.
//
// Usage (from the repository root):
//
//	go mod download && go run ./yocto/gengomod
//	go run ./yocto/gengomod -check   # exit 1 if the includes are stale
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

const recipeDir = "yocto/meta-otad/recipes-otad/otad"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gengomod:", err)
		os.Exit(1)
	}
}

// ErrStale is returned by -check when a written include differs from what
// go.sum and the module cache produce now.
var ErrStale = errors.New("include is out of date with go.sum; run: go mod download && go run ./yocto/gengomod")

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gengomod", flag.ContinueOnError)
	fs.SetOutput(stderr)
	gosum := fs.String("gosum", "go.sum", "go.sum to read")
	dir := fs.String("dir", recipeDir, "directory of otad_git.bb")
	modcache := fs.String("modcache", "", "module cache (default: go env GOMODCACHE)")
	check := fs.Bool("check", false, "compare with the files in -dir instead of writing them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *modcache == "" {
		out, err := exec.Command("go", "env", "GOMODCACHE").Output()
		if err != nil {
			return fmt.Errorf("go env GOMODCACHE: %w", err)
		}
		*modcache = strings.TrimSpace(string(out))
	}
	f, err := os.Open(*gosum)
	if err != nil {
		return err
	}
	mods, err := ParseGoSum(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", *gosum, err)
	}
	for i := range mods {
		if err := mods[i].hash(*modcache); err != nil {
			return err
		}
	}
	files := map[string][]byte{
		"otad-go-mods.inc":       GoModInc(mods),
		"otad-go-mods-proxy.inc": ProxyInc(mods),
	}
	names := []string{"otad-go-mods.inc", "otad-go-mods-proxy.inc"}
	for _, name := range names {
		p := filepath.Join(*dir, name)
		if *check {
			old, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if !bytes.Equal(old, files[name]) {
				return fmt.Errorf("%s: %w", p, ErrStale)
			}
			continue
		}
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "wrote", p)
	}
	return nil
}

// Module is one module@version of go.sum. Zip is false when go.sum only
// holds its go.mod hash: the build needs the go.mod for the module graph,
// not the sources.
type Module struct {
	Path, Version string
	Zip           bool
	ZipSHA256     string
	ModSHA256     string
}

// ParseGoSum returns go.sum's modules sorted by path and version.
func ParseGoSum(r io.Reader) ([]Module, error) {
	byKey := map[string]*Module{}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 3 || !strings.HasPrefix(fields[2], "h1:") {
			return nil, fmt.Errorf("line %d: not a go.sum line: %q", n, line)
		}
		path, ver := fields[0], fields[1]
		zip := true
		if v, ok := strings.CutSuffix(ver, "/go.mod"); ok {
			ver, zip = v, false
		}
		key := path + "@" + ver
		m := byKey[key]
		if m == nil {
			m = &Module{Path: path, Version: ver}
			byKey[key] = m
		}
		m.Zip = m.Zip || zip
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	out := make([]Module, 0, len(byKey))
	for _, m := range byKey {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].Version < out[j].Version
	})
	return out, nil
}

var upper = regexp.MustCompile(`[A-Z]`)

// escape is the module cache's case encoding (golang.org/x/mod/module.EscapePath).
func escape(s string) string {
	return upper.ReplaceAllStringFunc(s, func(c string) string { return "!" + strings.ToLower(c) })
}

// cachePath is <module>/@v/<version> in the module cache and on the proxy.
func (m Module) cachePath() string {
	return escape(m.Path) + "/@v/" + escape(m.Version)
}

func (m *Module) hash(modcache string) error {
	base := filepath.Join(modcache, "cache", "download", filepath.FromSlash(m.cachePath()))
	sum := func(p string) (string, error) {
		data, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("%w (run go mod download)", err)
		}
		s := sha256.Sum256(data)
		return hex.EncodeToString(s[:]), nil
	}
	var err error
	if m.ModSHA256, err = sum(base + ".mod"); err != nil {
		return err
	}
	if m.Zip {
		if m.ZipSHA256, err = sum(base + ".zip"); err != nil {
			return err
		}
	}
	return nil
}

const header = "# Generated by `go run ./yocto/gengomod` from go.sum; do not edit.\n"

// GoModInc renders gomod:// entries (BitBake's gomod fetcher, 2.12+).
func GoModInc(mods []Module) []byte {
	var b strings.Builder
	b.WriteString(header)
	b.WriteString("# BitBake 2.12+ (walnascar and later): the gomod fetcher puts each file\n")
	b.WriteString("# into ${GO_MOD_CACHE_DIR}/cache/download, where GOPROXY=off finds it.\n")
	b.WriteString("SRC_URI += \"\\\n")
	for _, m := range mods {
		if m.Zip {
			fmt.Fprintf(&b, "    gomod://%s;version=%s;sha256sum=%s \\\n", m.Path, m.Version, m.ZipSHA256)
		} else {
			fmt.Fprintf(&b, "    gomod://%s;version=%s;mod=1;sha256sum=%s \\\n", m.Path, m.Version, m.ModSHA256)
		}
	}
	b.WriteString("\"\n")
	return []byte(b.String())
}

var nonName = regexp.MustCompile(`[^A-Za-z0-9]+`)

// ProxyInc renders the same downloads as plain https:// entries for
// BitBake without the gomod fetcher. DL_DIR names differ from the gomod
// fetcher's (which flattens them to <module with dots>@<version>.zip in
// BitBake 2.18), so a DL_DIR mirror needs both spellings to serve both.
func ProxyInc(mods []Module) []byte {
	var b, sums strings.Builder
	b.WriteString(header)
	b.WriteString("# BitBake without the gomod fetcher (scarthgap): the proxy's .zip and\n")
	b.WriteString("# .mod files as https:// downloads, copied unchanged into the module cache.\n")
	b.WriteString("export GOMODCACHE = \"${S}/pkg/mod\"\n")
	b.WriteString("OTAD_GO_MOD_CACHE_DIR = \"${@os.path.relpath(d.getVar('GOMODCACHE'), d.getVar('WORKDIR'))}\"\n")
	b.WriteString("OTAD_GO_PROXY ?= \"https://proxy.golang.org\"\n")
	b.WriteString("SRC_URI += \"\\\n")
	entry := func(m Module, ext, sum string) {
		name := "gomod-" + strings.Trim(nonName.ReplaceAllString(m.Path+"-"+m.Version+ext, "-"), "-")
		p := m.cachePath() + ext
		fmt.Fprintf(&b, "    ${OTAD_GO_PROXY}/%s;downloadfilename=%s;unpack=0;subdir=${OTAD_GO_MOD_CACHE_DIR}/cache/download/%s/@v;name=%s \\\n",
			p, p, escape(m.Path), name)
		fmt.Fprintf(&sums, "SRC_URI[%s.sha256sum] = \"%s\"\n", name, sum)
	}
	for _, m := range mods {
		entry(m, ".mod", m.ModSHA256)
		if m.Zip {
			entry(m, ".zip", m.ZipSHA256)
		}
	}
	b.WriteString("\"\n")
	b.WriteString(sums.String())
	return []byte(b.String())
}
