// Package yocto_test checks meta-otad without bitbake: every recipe, class
// and conf has the fields bitbake needs, every file a recipe names exists,
// and the layer agrees with the rest of the repository (license checksum,
// units, boot script, the bundle CLI's flags).
package yocto_test

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const layer = "meta-otad"

// bbVars parses the simple assignments of a bitbake file (NAME = "v",
// ?=, ??=, +=, :append, line continuations). Enough to check fields.
func bbVars(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	vars := map[string]string{}
	re := regexp.MustCompile(`^([A-Za-z0-9_:\-${}\[\]]+)\s*(\?\?=|\?=|\+=|\.=|=\+|=)\s*"(.*)$`)
	sc := bufio.NewScanner(f)
	var name, val string
	inCont := false
	for sc.Scan() {
		line := sc.Text()
		if inCont {
			val += " " + strings.TrimSpace(line)
			if !strings.HasSuffix(strings.TrimSpace(line), "\\") {
				inCont = false
				vars[name] += " " + strings.Trim(strings.ReplaceAll(val, "\\", ""), `" `)
			}
			continue
		}
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name, val = m[1], m[3]
		if strings.HasSuffix(strings.TrimSpace(val), "\\") {
			inCont = true
			continue
		}
		vars[name] += " " + strings.Trim(val, `" `)
	}
	for k, v := range vars {
		vars[k] = strings.TrimSpace(v)
	}
	return vars
}

func layerFiles(t *testing.T, exts ...string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(layer, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, e := range exts {
			if strings.HasSuffix(p, e) {
				out = append(out, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLayerConf(t *testing.T) {
	v := bbVars(t, filepath.Join(layer, "conf/layer.conf"))
	for _, k := range []string{"BBFILE_COLLECTIONS", "BBFILE_PATTERN_otad", "BBFILE_PRIORITY_otad", "LAYERDEPENDS_otad", "LAYERSERIES_COMPAT_otad", "LAYERVERSION_otad"} {
		if v[k] == "" {
			t.Errorf("layer.conf lacks %s", k)
		}
	}
	if v["BBFILE_COLLECTIONS"] != "otad" {
		t.Errorf("BBFILE_COLLECTIONS = %q, want otad", v["BBFILE_COLLECTIONS"])
	}
	// Current releases: scarthgap (LTS) and later.
	if !strings.Contains(v["LAYERSERIES_COMPAT_otad"], "scarthgap") || !strings.Contains(v["LAYERSERIES_COMPAT_otad"], "walnascar") {
		t.Errorf("LAYERSERIES_COMPAT_otad %q lacks current releases", v["LAYERSERIES_COMPAT_otad"])
	}
	// The BBFILES globs must match the recipes we ship.
	recipes := layerFiles(t, ".bb", ".bbappend")
	for _, r := range recipes {
		rel := strings.TrimPrefix(r, layer+"/")
		if ok, _ := filepath.Match("recipes-*/*/*.bb", rel); ok {
			continue
		}
		if ok, _ := filepath.Match("recipes-*/*/*.bbappend", rel); ok {
			continue
		}
		t.Errorf("%s is not matched by BBFILES in layer.conf", r)
	}
}

func TestRecipesHaveRequiredFields(t *testing.T) {
	recipes := layerFiles(t, ".bb")
	if len(recipes) < 4 {
		t.Fatalf("found only %d recipes: %v", len(recipes), recipes)
	}
	for _, r := range recipes {
		v := bbVars(t, r)
		for _, k := range []string{"SUMMARY", "LICENSE"} {
			if v[k] == "" {
				t.Errorf("%s: missing %s", r, k)
			}
		}
		if v["SRC_URI"] != "" && v["LIC_FILES_CHKSUM"] == "" {
			t.Errorf("%s: has SRC_URI but no LIC_FILES_CHKSUM", r)
		}
	}
}

// Every file:// a recipe or bbappend names must be in one of the places
// bitbake's FILESPATH looks: files/, <BPN>/, or a machine subdirectory.
func TestSrcURIFilesExist(t *testing.T) {
	for _, r := range layerFiles(t, ".bb", ".bbappend") {
		data, err := os.ReadFile(r)
		if err != nil {
			t.Fatal(err)
		}
		// LIC_FILES_CHKSUM's file:// are paths in the unpacked source, not
		// files of the layer.
		src := regexp.MustCompile(`(?s)LIC_FILES_CHKSUM\s*[?+.:]*=\s*"[^"]*"`).ReplaceAllString(string(data), "")
		for _, m := range regexp.MustCompile(`file://([^\s;"']+)`).FindAllStringSubmatch(src, -1) {
			name := m[1]
			if strings.Contains(name, "${") {
				continue // e.g. ${COMMON_LICENSE_DIR}
			}
			dir := filepath.Dir(r)
			found := false
			for _, cand := range []string{filepath.Join(dir, "files", name), filepath.Join(dir, strings.SplitN(filepath.Base(r), "_", 2)[0], name)} {
				if _, err := os.Stat(cand); err == nil {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: SRC_URI file://%s not found next to the recipe", r, name)
			}
		}
	}
}

func TestOtadRecipeMatchesRepository(t *testing.T) {
	r := filepath.Join(layer, "recipes-otad/otad/otad_git.bb")
	v := bbVars(t, r)
	if v["GO_IMPORT"] != "github.com/otadev/otad" {
		t.Errorf("GO_IMPORT = %q", v["GO_IMPORT"])
	}
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(gomod), "module "+v["GO_IMPORT"]+"\n") {
		t.Errorf("go.mod module path differs from GO_IMPORT %q", v["GO_IMPORT"])
	}
	// LIC_FILES_CHKSUM must be the md5 of the repository's LICENSE.
	lic, err := os.ReadFile("../LICENSE")
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(lic)
	if want := "md5=" + hex.EncodeToString(sum[:]); !strings.Contains(v["LIC_FILES_CHKSUM"], want) {
		t.Errorf("LIC_FILES_CHKSUM %q, LICENSE has %s", v["LIC_FILES_CHKSUM"], want)
	}
	if !strings.Contains(v["BBCLASSEXTEND"], "native") {
		t.Error("otad recipe must extend to native: the bundle class needs otad-native")
	}
	// Files the recipe installs from the source tree must exist in the repo.
	data, _ := os.ReadFile(r)
	refs := regexp.MustCompile(`\$\{S\}/src/\$\{GO_IMPORT\}/([^\s]+)`).FindAllStringSubmatch(string(data), -1)
	if len(refs) < 2 {
		t.Fatalf("recipe installs %d repository files; expected the unit and the D-Bus policy", len(refs))
	}
	for _, m := range refs {
		if _, err := os.Stat(filepath.Join("..", m[1])); err != nil {
			t.Errorf("recipe installs %s, missing in repository: %v", m[1], err)
		}
	}
	for _, unit := range strings.Fields(v["SYSTEMD_SERVICE:${PN}"]) {
		if _, err := os.Stat(filepath.Join("../systemd", unit)); err != nil {
			t.Errorf("SYSTEMD_SERVICE %s not in systemd/: %v", unit, err)
		}
	}
}

func TestInheritedClassesExist(t *testing.T) {
	core := map[string]bool{"go-mod": true, "systemd": true, "deploy": true, "nopackages": true, "packagegroup": true}
	for _, r := range layerFiles(t, ".bb", ".bbappend", ".bbclass") {
		data, _ := os.ReadFile(r)
		for _, m := range regexp.MustCompile(`(?m)^inherit\s+(.+)$`).FindAllStringSubmatch(string(data), -1) {
			for _, c := range strings.Fields(m[1]) {
				if core[c] {
					continue
				}
				if _, err := os.Stat(filepath.Join(layer, "classes", c+".bbclass")); err != nil {
					t.Errorf("%s inherits %s, which is neither in openembedded-core's list here nor in classes/", r, c)
				}
			}
		}
	}
}

// The class drives the real CLI: every flag it passes must exist.
func TestBundleClassUsesRealFlags(t *testing.T) {
	class, err := os.ReadFile(filepath.Join(layer, "classes/otad-bundle.bbclass"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "otad")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/otad").CombinedOutput(); err != nil {
		t.Fatalf("build otad: %v\n%s", err, out)
	}
	help, _ := exec.Command(bin, "bundle", "create", "-h").CombinedOutput()
	i := strings.Index(string(class), "otad bundle create")
	if i < 0 {
		t.Fatal("class does not call otad bundle create")
	}
	call := string(class[i:])
	call = call[:strings.Index(call, "-o ")]
	flags := regexp.MustCompile(`--([a-z][a-z-]+)`).FindAllStringSubmatch(call+" "+string(class), -1)
	seen := map[string]bool{}
	for _, f := range flags {
		name := f[1]
		if seen[name] || !strings.Contains(string(class), "--"+name+" ") && !strings.Contains(string(class), "--"+name+"=") {
			continue
		}
		seen[name] = true
		if !regexp.MustCompile(`(?m)^\s*-{1,2}` + regexp.QuoteMeta(name) + `\b`).Match(help) {
			t.Errorf("class passes --%s, which `otad bundle create -h` does not list:\n%s", name, help)
		}
	}
	if len(seen) < 5 {
		t.Errorf("found only %d flags in the class call: %v", len(seen), seen)
	}
}

// The boot script the layer compiles is THE boot script: the VM tests boot
// this file, and no second copy exists in the repository.
func TestBootScriptIsTheOnlyOne(t *testing.T) {
	script := filepath.Join(layer, "recipes-bsp/otad-boot-script/files/boot.cmd")
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("boot script missing: %v", err)
	}
	out, err := exec.Command("git", "-C", "..", "ls-files").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	for _, f := range strings.Fields(string(out)) {
		base := filepath.Base(f)
		if (base == "boot.cmd" || strings.HasSuffix(base, ".scr")) && f != "yocto/"+script {
			t.Errorf("second boot script in the repository: %s", f)
		}
	}
	if _, err := exec.LookPath("mkimage"); err != nil {
		t.Skip("mkimage (u-boot-tools) not installed; run make deps")
	}
	scr := filepath.Join(t.TempDir(), "boot.scr")
	if out, err := exec.Command("mkimage", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-d", script, scr).CombinedOutput(); err != nil {
		t.Fatalf("mkimage cannot compile the boot script: %v\n%s", err, out)
	}
}

func TestKickstartLayouts(t *testing.T) {
	wks := layerFiles(t, ".wks")
	if len(wks) < 2 {
		t.Fatalf("want kickstarts for raspberrypi and beaglebone, found %v", wks)
	}
	for _, w := range wks {
		data, _ := os.ReadFile(w)
		for _, label := range []string{"--label boot", "--label rootfsA", "--label rootfsB", "--label data"} {
			if !strings.Contains(string(data), label) {
				t.Errorf("%s lacks partition %s", w, label)
			}
		}
		// Equal slots: an image that fits A must fit B.
		sizes := regexp.MustCompile(`--label rootfs[AB][^\n]*--fixed-size (\d+)`).FindAllStringSubmatch(string(data), -1)
		if len(sizes) != 2 || sizes[0][1] != sizes[1][1] {
			t.Errorf("%s: slots A and B need equal --fixed-size, got %v", w, sizes)
		}
	}
}
