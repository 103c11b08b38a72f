package yocto_test

// The checks below catch, without BitBake, the mistakes that broke the layer
// under real BitBake (issue 27): each one is a function of a layer
// directory, so TestChecksCatchMistakes can prove it fails on a mutated
// copy of the layer while TestLayerPassesChecks shows the real one is clean.

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// A check returns one line per problem found in the layer at dir.
type check struct {
	name string
	run  func(t *testing.T, dir string) []string
}

var checks = []check{
	{"pinned-srcrev", checkPinnedSrcrev},
	{"no-network", checkNoNetwork},
	{"unpackdir", checkUnpackdir},
	{"wic-location", checkWicLocation},
	{"single-deploy", checkSingleDeploy},
	{"boot-defaults", checkBootDefaults},
	{"licenses", checkLicenses},
	{"gomod-list", checkGoModList},
	{"recipe-hygiene", checkRecipeHygiene},
	{"check-layer-static", checkLayerStatic},
	{"world-skip", checkWorldSkip},
}

func TestLayerPassesChecks(t *testing.T) {
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			for _, p := range c.run(t, layer) {
				t.Error(p)
			}
		})
	}
}

// Each mutation reintroduces one of the mistakes; the named check must
// report it (and the test would be worthless if it did not).
func TestChecksCatchMistakes(t *testing.T) {
	const (
		otad   = "recipes-otad/otad/otad_git.bb"
		script = "recipes-bsp/otad-boot-script/otad-boot-script.bb"
		board  = "classes/otad-board.bbclass"
		conf   = "recipes-otad/otad-conf/otad-conf.bb"
		class  = "classes/otad-bundle.bbclass"
		readme = "README.md"
		gomods = "recipes-otad/otad/otad-go-mods.inc"
	)
	mutations := []struct {
		check, file, old, new string
		want                  string // substring of the expected problem
	}{
		{"pinned-srcrev", otad, `SRCREV = "`, `SRCREV = "${AUTOREV}"` + "\n#", "AUTOREV"},
		{"pinned-srcrev", otad, `SRCREV = "`, `SRCREV = "main"` + "\n#", "not a 40-hex commit"},
		{"no-network", otad, "GO_LINKSHARED = \"\"\n", "GO_LINKSHARED = \"\"\ndo_compile[network] = \"1\"\n", "network"},
		{"no-network", otad, `export GOPROXY = "off"`, `export GOPROXY = "https://proxy.golang.org"`, "GOPROXY"},
		{"unpackdir", script, "inherit otad-board", "UNPACKDIR ??= \"${WORKDIR}\"\ninherit otad-board", "UNPACKDIR"},
		{"unpackdir", script, "inherit otad-board", "S = \"${WORKDIR}\"\ninherit otad-board", "S = ${WORKDIR}"},
		{"wic-location", "", "", "wic/extra.wks", "files/wic"},
		{"single-deploy", script, "install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr", "install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr\n    install -m 0644 ${B}/boot.scr ${DEPLOYDIR}/boot.scr", "deployed twice"},
		{"single-deploy", script, `PROVIDES += "u-boot-default-script"`, "", "u-boot-default-script"},
		{"single-deploy", readme, `PREFERRED_PROVIDER_u-boot-default-script = "otad-boot-script"`, "PREFERRED_PROVIDER_u-boot-default-script = \"otad-boot-script\"\n   IMAGE_BOOT_FILES:append = \" boot.scr\"", "IMAGE_BOOT_FILES"},
		{"boot-defaults", board, "'disk': 'mmcblk0', 'fdt': '', 'fwenv': '0'}", "'disk': 'vda', 'fdt': '', 'fwenv': '0'}", "raspberrypi4-64"},
		{"boot-defaults", board, "return {'devtype': 'mmc', 'devnum': '1', 'disk': 'mmcblk1'", "return {'devtype': 'virtio', 'devnum': '0', 'disk': 'vda'", "beaglebone-yocto"},
		{"boot-defaults", board, "'bootz' if", "'booti' if", "bootz"},
		{"boot-defaults", script, "-e 's|@KERNEL@|${OTAD_BOOT_KERNEL}|' \\\n", "", "@KERNEL@"},
		{"licenses", otad, `LICENSE = "MIT & Apache-2.0 & BSD-2-Clause & BSD-3-Clause"`, `LICENSE = "MIT"`, "Apache-2.0"},
		{"licenses", otad, "    file://module-licenses/github.com/godbus/dbus/v5@v5.2.4/LICENSE;md5=09042bd5c6c96a2b9e45ddf1bc517eed \\\n", "", "godbus"},
		{"gomod-list", gomods, "gomod://golang.org/x/sys;version=v0.50.0", "gomod://golang.org/x/sys;version=v0.49.0", "out of date"},
		{"recipe-hygiene", otad, "do_install() {", "do_install:append() {", "do_install:append"},
		{"recipe-hygiene", otad, `FILES:${PN}-dev = ""`, "", "-dev"},
		{"recipe-hygiene", script, `INHIBIT_DEFAULT_DEPS = "1"`, "", "INHIBIT_DEFAULT_DEPS"},
		{"recipe-hygiene", conf, `do_install[file-checksums]`, `do_install[vardeps]`, "OTAD_KEYRING_FILES"},
		{"recipe-hygiene", class, `OTAD_BUNDLE_COMPATIBLE ??= "${OTAD_COMPATIBLE}"`, `OTAD_BUNDLE_COMPATIBLE ??= "${MACHINE}"`, "OTAD_COMPATIBLE"},
		// An empty old string removes the file.
		{"check-layer-static", "SECURITY.md", "", "", "SECURITY"},
		{"check-layer-static", readme, "Maintainer: the otad maintainers <maintainers@users.noreply.r-seed-cc5e50e9.example>.", "Written by the otad authors <otad@users.noreply.r-seed-cc5e50e9.example>.", "maintainer"},
		{"check-layer-static", readme, "<maintainers@users.noreply.r-seed-cc5e50e9.example>", "(see the repository)", "e-mail"},
		{"check-layer-static", readme, "Send patches as pull requests", "Send changes as pull requests", "patches"},
		{"check-layer-static", "", "", "recipes-otad/otad/files/fix.patch", "Upstream-Status"},
		{"check-layer-static", "conf/layer.conf", `LAYERSERIES_COMPAT_otad = "scarthgap walnascar whinlatter wrynose"`, `LAYERSERIES_COMPAT_otad = "scarthgap"`, "wrynose"},
		{"world-skip", "recipes-otad/packagegroups/packagegroup-otad.bb", "inherit packagegroup otad-go", "inherit packagegroup", "packagegroup-otad.bb"},
		{"world-skip", class, "inherit otad-board otad-go deploy nopackages", "inherit otad-board deploy nopackages", "otad-bundle.bbclass"},
		{"check-layer-static", conf, `CONFFILES:${PN} =`, `INSANE_SKIP:${PN} += "installed-vars"` + "\nCONFFILES:${PN} =", "INSANE_SKIP"},
	}
	byName := map[string]check{}
	for _, c := range checks {
		byName[c.name] = c
	}
	for _, m := range mutations {
		t.Run(m.check+"/"+m.want, func(t *testing.T) {
			dir := copyLayer(t)
			if m.file == "" {
				p := filepath.Join(dir, m.new)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("part / --source rootfs\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if m.old == "" {
				if err := os.Remove(filepath.Join(dir, m.file)); err != nil {
					t.Fatal(err)
				}
			} else {
				p := filepath.Join(dir, m.file)
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(data), m.old) {
					t.Fatalf("mutation does not apply: %s lacks %q", m.file, m.old)
				}
				if err := os.WriteFile(p, []byte(strings.Replace(string(data), m.old, m.new, 1)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			problems := byName[m.check].run(t, dir)
			for _, p := range problems {
				if strings.Contains(p, m.want) {
					return
				}
			}
			t.Errorf("check %s did not report %q after the mutation; it said %q", m.check, m.want, problems)
		})
	}
}

func copyLayer(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), layer)
	err := filepath.WalkDir(layer, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(layer, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// files returns the layer's BitBake files (recipes, appends, includes,
// classes, confs) relative to dir, with their contents.
func bbFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch filepath.Ext(p) {
		case ".bb", ".bbappend", ".inc", ".bbclass", ".conf":
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			out[filepath.ToSlash(rel)] = string(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// checkPinnedSrcrev: AUTOREV makes the parser run git ls-remote, which
// fails under BB_NO_NETWORK; a git SRC_URI needs a commit and a real PV.
func checkPinnedSrcrev(t *testing.T, dir string) []string {
	var out []string
	files := bbFiles(t, dir)
	for _, name := range sortedKeys(files) {
		src := files[name]
		if strings.Contains(src, "AUTOREV") {
			out = append(out, name+": uses AUTOREV (parsing would need the network)")
		}
		if !strings.Contains(src, "git://") || !strings.HasSuffix(name, ".bb") {
			continue
		}
		m := regexp.MustCompile(`(?m)^SRCREV\s*\??=\s*"([^"]*)"`).FindStringSubmatch(src)
		if m == nil {
			out = append(out, name+": git SRC_URI without SRCREV")
			continue
		}
		if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(m[1]) {
			out = append(out, fmt.Sprintf("%s: SRCREV %q is not a 40-hex commit", name, m[1]))
		} else if err := exec.Command("git", "-C", "..", "cat-file", "-e", m[1]+"^{commit}").Run(); err != nil {
			out = append(out, fmt.Sprintf("%s: SRCREV %s is not a commit of this repository", name, m[1]))
		}
		pv := regexp.MustCompile(`(?m)^PV\s*=\s*"([^"]*)"`).FindStringSubmatch(src)
		if pv == nil || !strings.Contains(pv[1], "+git") || strings.HasPrefix(pv[1], "+git") {
			out = append(out, name+": PV must be a version followed by +git")
		}
	}
	return out
}

// checkNoNetwork: modules come from SRC_URI; the go command may not fetch.
func checkNoNetwork(t *testing.T, dir string) []string {
	var out []string
	files := bbFiles(t, dir)
	for _, name := range sortedKeys(files) {
		if regexp.MustCompile(`\[network\]`).MatchString(files[name]) {
			out = append(out, name+": a task asks for network access ([network] flag)")
		}
	}
	otad := files["recipes-otad/otad/otad_git.bb"]
	for _, want := range []string{`export GOPROXY = "off"`, `export GOTOOLCHAIN = "local"`} {
		if !strings.Contains(otad, want) {
			out = append(out, "otad_git.bb: lacks "+want+" (GOPROXY/GOTOOLCHAIN would let go download)")
		}
	}
	for _, inc := range []string{"otad-go-mods.inc", "otad-go-mods-proxy.inc"} {
		if !strings.Contains(otad, inc) {
			out = append(out, "otad_git.bb: does not require "+inc)
		}
	}
	return out
}

// checkUnpackdir: styhead+ refuse UNPACKDIR = WORKDIR, wrynose S = WORKDIR.
func checkUnpackdir(t *testing.T, dir string) []string {
	var out []string
	files := bbFiles(t, dir)
	for _, name := range sortedKeys(files) {
		src := files[name]
		if regexp.MustCompile(`(?m)^\s*UNPACKDIR\s*[?:+.]*=`).MatchString(src) {
			out = append(out, name+": assigns UNPACKDIR (leave it to bitbake.conf)")
		}
		if regexp.MustCompile(`(?m)^\s*S\s*[?]*=\s*"\$\{WORKDIR\}/?"`).MatchString(src) {
			out = append(out, name+": sets S = ${WORKDIR} (refused by wrynose)")
		}
	}
	return out
}

// checkWicLocation: wrynose wants kickstarts in files/wic.
func checkWicLocation(t *testing.T, dir string) []string {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if (strings.HasSuffix(p, ".wks") || strings.HasSuffix(p, ".wks.in")) && !strings.HasPrefix(rel, "files/wic/") {
			out = append(out, rel+": kickstarts belong in files/wic")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	conf, _ := os.ReadFile(filepath.Join(dir, "conf/layer.conf"))
	if !strings.Contains(string(conf), "${LAYERDIR}/files/wic") {
		out = append(out, "layer.conf: WKS_SEARCH_PATH does not name ${LAYERDIR}/files/wic")
	}
	return out
}

// checkSingleDeploy: one file per name in DEPLOY_DIR_IMAGE, boot.scr from
// one provider, and nothing that lists boot.scr a second time on the Pi.
func checkSingleDeploy(t *testing.T, dir string) []string {
	var out []string
	files := bbFiles(t, dir)
	owner := map[string]string{}
	for _, name := range sortedKeys(files) {
		seen := map[string]bool{}
		for _, m := range regexp.MustCompile(`\$\{DEPLOYDIR\}/([^\s"/]+)`).FindAllStringSubmatch(files[name], -1) {
			f := m[1]
			if seen[f] {
				out = append(out, fmt.Sprintf("%s: %s deployed twice", name, f))
			}
			seen[f] = true
			if o, ok := owner[f]; ok && o != name {
				out = append(out, fmt.Sprintf("%s and %s both deploy %s", o, name, f))
			}
			owner[f] = name
		}
		if regexp.MustCompile(`IMAGE_BOOT_FILES`).MatchString(stripComments(files[name])) {
			out = append(out, name+": sets IMAGE_BOOT_FILES (the machine conf owns it; meta-raspberrypi already lists boot.scr)")
		}
	}
	script := files["recipes-bsp/otad-boot-script/otad-boot-script.bb"]
	if !strings.Contains(script, `PROVIDES += "u-boot-default-script"`) {
		out = append(out, "otad-boot-script.bb: does not provide u-boot-default-script, so meta-raspberrypi's rpi-u-boot-scr deploys a second boot.scr")
	}
	// The layer README's Raspberry Pi snippet must pick the provider and
	// must not list boot.scr again.
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		return append(out, "layer has no README.md")
	}
	for _, block := range regexp.MustCompile("(?s)```(.*?)```").FindAllStringSubmatch(string(readme), -1) {
		if !strings.Contains(block[1], "RPI_USE_U_BOOT") {
			continue
		}
		if strings.Contains(block[1], "IMAGE_BOOT_FILES") || strings.Contains(block[1], "EXTRA_IMAGEDEPENDS") {
			out = append(out, "README.md: the Raspberry Pi snippet adds boot.scr to IMAGE_BOOT_FILES/EXTRA_IMAGEDEPENDS a second time")
		}
		if !strings.Contains(block[1], `PREFERRED_PROVIDER_u-boot-default-script = "otad-boot-script"`) {
			out = append(out, "README.md: the Raspberry Pi snippet does not choose otad-boot-script as u-boot-default-script")
		}
	}
	return out
}

func stripComments(src string) string {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(src, "")
}

// evalBoard evaluates otad-board.bbclass's defaults for a machine with a
// small stand-in for BitBake's datastore: the class's Python functions run
// as written, ??= values are expanded with ${VAR} and ${@expr}.
const evalBoard = `
import json, re, sys
src = open(sys.argv[1]).read()
machine = json.loads(sys.argv[2])
funcs = re.findall(r'(?ms)^def .*?(?=^\S)', src + '\nEND')
g = {}
for f in funcs:
    exec(f, g)
weak = dict(re.findall(r'(?m)^(\w+) \?\?= "(.*)"$', src))
class D:
    def getVar(self, k):
        if k in machine:
            return machine[k]
        if k in weak:
            return expand(weak[k])
        return None
d = D()
g['d'] = d
def expand(s):
    out, i = '', 0
    while i < len(s):
        if s.startswith('${@', i):
            depth, j = 1, i + 3
            while depth:
                depth += {'{': 1, '}': -1}.get(s[j], 0)
                j += 1
            out += str(eval(s[i+3:j-1], g))
            i = j
        elif s.startswith('${', i):
            j = s.index('}', i)
            v = d.getVar(s[i+2:j])
            out += '' if v is None else v
            i = j + 1
        else:
            out += s[i]
            i += 1
    return out
print(json.dumps({k: expand(v) for k, v in weak.items()}))
`

// machines are the three the issue names, with the variables their
// machine confs set that the defaults read.
var machines = map[string]map[string]string{
	"qemuarm64":        {"MACHINE": "qemuarm64", "MACHINEOVERRIDES": "qemuall:qemuarm64", "KERNEL_IMAGETYPE": "Image", "TARGET_ARCH": "aarch64"},
	"raspberrypi3-64":  {"MACHINE": "raspberrypi3-64", "MACHINEOVERRIDES": "rpi:raspberrypi3:raspberrypi3-64", "KERNEL_IMAGETYPE": "Image", "KERNEL_BOOTCMD": "booti", "TARGET_ARCH": "aarch64"},
	"raspberrypi4-64":  {"MACHINE": "raspberrypi4-64", "MACHINEOVERRIDES": "rpi:raspberrypi4:raspberrypi4-64", "KERNEL_IMAGETYPE": "Image", "KERNEL_BOOTCMD": "booti", "TARGET_ARCH": "aarch64"},
	"beaglebone-yocto": {"MACHINE": "beaglebone-yocto", "MACHINEOVERRIDES": "beaglebone-yocto", "KERNEL_IMAGETYPE": "zImage", "TARGET_ARCH": "arm"},
}

// want are the values each machine's boot script and system.conf must get.
var want = map[string]map[string]string{
	"qemuarm64":        {"OTAD_SLOT_A_DEVICE": "/dev/vda2", "OTAD_SLOT_B_DEVICE": "/dev/vda3", "OTAD_BOOT_DEVTYPE": "virtio", "OTAD_BOOT_KERNEL": "Image", "OTAD_BOOT_CMD": "booti"},
	"raspberrypi3-64":  {"OTAD_SLOT_A_DEVICE": "/dev/mmcblk0p2", "OTAD_SLOT_B_DEVICE": "/dev/mmcblk0p3", "OTAD_BOOT_DEVTYPE": "mmc", "OTAD_BOOT_DEVNUM": "0", "OTAD_BOOT_KERNEL": "Image", "OTAD_BOOT_CMD": "booti", "OTAD_INSTALL_FW_ENV_CONFIG": "0"},
	"raspberrypi4-64":  {"OTAD_SLOT_A_DEVICE": "/dev/mmcblk0p2", "OTAD_SLOT_B_DEVICE": "/dev/mmcblk0p3", "OTAD_BOOT_DEVTYPE": "mmc", "OTAD_BOOT_DEVNUM": "0", "OTAD_BOOT_KERNEL": "Image", "OTAD_BOOT_CMD": "booti", "OTAD_INSTALL_FW_ENV_CONFIG": "0"},
	"beaglebone-yocto": {"OTAD_SLOT_A_DEVICE": "/dev/mmcblk1p2", "OTAD_SLOT_B_DEVICE": "/dev/mmcblk1p3", "OTAD_BOOT_DEVTYPE": "mmc", "OTAD_BOOT_DEVNUM": "1", "OTAD_BOOT_KERNEL": "zImage", "OTAD_BOOT_CMD": "bootz", "OTAD_BOOT_FDT": "am335x-boneblack.dtb", "OTAD_INSTALL_FW_ENV_CONFIG": "1"},
}

// boardValues returns otad-board.bbclass's defaults for one machine.
func boardValues(t *testing.T, dir, machine string) (map[string]string, error) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed (BitBake needs it too)")
	}
	env, _ := json.Marshal(machines[machine])
	out, err := exec.Command(py, "-c", evalBoard, filepath.Join(dir, "classes/otad-board.bbclass"), string(env)).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("evaluating otad-board.bbclass for %s: %v\n%s", machine, err, out)
	}
	vals := map[string]string{}
	if err := json.Unmarshal(out, &vals); err != nil {
		return nil, fmt.Errorf("evaluating otad-board.bbclass for %s: %v\n%s", machine, err, out)
	}
	return vals, nil
}

// checkBootDefaults: each machine gets its own root device, kernel and boot
// command (no QEMU defaults on a real board), the recipe substitutes every
// placeholder of the defaults template, and the defaults land after the
// trial block's saveenv so they are never stored.
func checkBootDefaults(t *testing.T, dir string) []string {
	var out []string
	names := make([]string, 0, len(machines))
	for m := range machines {
		names = append(names, m)
	}
	sort.Strings(names)
	for _, m := range names {
		vals, err := boardValues(t, dir, m)
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		for k, w := range want[m] {
			if vals[k] != w {
				out = append(out, fmt.Sprintf("%s: %s = %q, want %q", m, k, vals[k], w))
			}
		}
		if !strings.HasPrefix(m, "qemu") {
			for k, v := range vals {
				if strings.Contains(v, "vda") || strings.Contains(v, "virtio") {
					out = append(out, fmt.Sprintf("%s: %s = %q is QEMU's", m, k, v))
				}
			}
		}
	}

	recipeDir := filepath.Join(dir, "recipes-bsp/otad-boot-script")
	recipe, _ := os.ReadFile(filepath.Join(recipeDir, "otad-boot-script.bb"))
	tmpl, err := os.ReadFile(filepath.Join(recipeDir, "files/board-defaults.cmd.in"))
	if err != nil {
		return append(out, err.Error())
	}
	for _, ph := range regexp.MustCompile(`@[A-Z_]+@`).FindAllString(string(tmpl), -1) {
		if !strings.Contains(string(recipe), "s|"+ph+"|") {
			out = append(out, "otad-boot-script.bb: does not substitute "+ph+" of board-defaults.cmd.in")
		}
	}
	marker := regexp.MustCompile(`(?m)^OTAD_BOOT_MARKER = "(.*)"$`).FindStringSubmatch(string(recipe))
	bootCmd, _ := os.ReadFile(filepath.Join(recipeDir, "files/boot.cmd"))
	if marker == nil {
		return append(out, "otad-boot-script.bb: no OTAD_BOOT_MARKER")
	}
	i := strings.Index(string(bootCmd), "\n"+marker[1]+"\n")
	switch {
	case i < 0:
		out = append(out, "boot.cmd lacks the marker line the recipe inserts the defaults after")
	case strings.Contains(string(bootCmd[i:]), "saveenv"):
		out = append(out, "boot.cmd saves the environment after the marker: the board defaults would be stored")
	}
	return out
}

// spdx maps each module that may be linked into otad to the licenses its
// LICENSE file carries. A new dependency fails the check until it is
// classified here and listed in the recipe.
var spdx = map[string][]string{
	"github.com/coreos/go-systemd/v22": {"Apache-2.0"},
	"github.com/godbus/dbus/v5":        {"BSD-2-Clause"},
	"github.com/sirupsen/logrus":       {"MIT"},
	"golang.org/x/sys":                 {"BSD-3-Clause"},
	"github.com/klauspost/compress":    {"BSD-3-Clause", "Apache-2.0", "MIT"},
}

// checkLicenses: every module linked into either build of the binary has
// its licenses in LICENSE and its license file checksummed.
func checkLicenses(t *testing.T, dir string) []string {
	var out []string
	recipe, _ := os.ReadFile(filepath.Join(dir, "recipes-otad/otad/otad_git.bb"))
	v := bbVars(t, filepath.Join(dir, "recipes-otad/otad/otad_git.bb"))
	licenses := map[string]bool{}
	for _, l := range regexp.MustCompile(`[A-Za-z0-9.+-]+`).FindAllString(v["LICENSE"], -1) {
		licenses[l] = true
	}
	modcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	linked := map[string]bool{}
	for _, tags := range []string{"", "otad_device,nethttpomithttp2"} {
		cmd := exec.Command("go", "list", "-deps", "-tags", tags, "-f", "{{with .Module}}{{if not .Main}}{{.Path}}@{{.Version}}{{end}}{{end}}", "./cmd/otad")
		cmd.Dir = ".."
		list, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list: %v", err)
		}
		for _, m := range strings.Fields(string(list)) {
			linked[m] = true
		}
	}
	if len(linked) == 0 {
		t.Fatal("go list found no linked modules")
	}
	for m := range linked {
		path, ver, _ := strings.Cut(m, "@")
		ids, ok := spdx[path]
		if !ok {
			out = append(out, fmt.Sprintf("%s is linked into otad but not classified in check_test.go's spdx table", path))
			continue
		}
		for _, id := range ids {
			if !licenses[id] {
				out = append(out, fmt.Sprintf("otad_git.bb: LICENSE lacks %s (%s)", id, path))
			}
		}
		lic, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(modcache)), escapePath(path)+"@"+ver, "LICENSE"))
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v (run go mod download)", m, err))
			continue
		}
		sum := md5.Sum(lic)
		entry := fmt.Sprintf("file://module-licenses/%s/LICENSE;md5=%s", m, hex.EncodeToString(sum[:]))
		if !strings.Contains(string(recipe), entry) {
			out = append(out, fmt.Sprintf("otad_git.bb: LIC_FILES_CHKSUM lacks %s", entry))
		}
	}
	sort.Strings(out)
	return out
}

func escapePath(p string) string {
	return regexp.MustCompile(`[A-Z]`).ReplaceAllStringFunc(p, func(c string) string { return "!" + strings.ToLower(c) })
}

// checkGoModList: the generated module list matches go.sum and the module
// cache (the generator's own -check).
func checkGoModList(t *testing.T, dir string) []string {
	cmd := exec.Command("go", "run", "./gengomod", "-check", "-gosum", "../go.sum", "-dir", filepath.Join(dir, "recipes-otad/otad"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return []string{fmt.Sprintf("gengomod -check: %v: %s", err, strings.TrimSpace(string(out)))}
	}
	return nil
}

// checkRecipeHygiene: what made the recipes wrong without failing a parse.
func checkRecipeHygiene(t *testing.T, dir string) []string {
	var out []string
	files := bbFiles(t, dir)
	for _, name := range sortedKeys(files) {
		src := files[name]
		// A plain do_install:append also runs in the native variant.
		if strings.Contains(src, "BBCLASSEXTEND") && regexp.MustCompile(`(?m)^do_install:append\(\)`).MatchString(src) {
			out = append(out, name+": do_install:append without :class-target also runs for -native")
		}
		// Recipes that only run host tools need no cross compiler or libc.
		if (strings.Contains(src, "nopackages") || strings.Contains(src, "do_compile[noexec]")) && !strings.Contains(src, `INHIBIT_DEFAULT_DEPS = "1"`) {
			out = append(out, name+": builds nothing for the target but lacks INHIBIT_DEFAULT_DEPS")
		}
		if strings.Contains(src, "inherit otad-board") && !strings.Contains(src, `PACKAGE_ARCH = "${MACHINE_ARCH}"`) {
			out = append(out, name+": uses per-machine defaults but is not MACHINE_ARCH")
		}
	}
	otad := files["recipes-otad/otad/otad_git.bb"]
	if !strings.Contains(otad, `FILES:${PN}-dev = ""`) || !regexp.MustCompile(`(?m)^do_install\(\)`).MatchString(otad) {
		out = append(out, "otad_git.bb: go.bbclass's do_install would ship the whole repository in ${PN}-dev")
	}
	conf := files["recipes-otad/otad-conf/otad-conf.bb"]
	if !regexp.MustCompile(`do_install\[file-checksums\].*OTAD_KEYRING_FILES`).MatchString(conf) {
		out = append(out, "otad-conf.bb: OTAD_KEYRING_FILES are not checksum-tracked")
	}
	class := files["classes/otad-bundle.bbclass"]
	if !regexp.MustCompile(`do_bundle\[file-checksums\].*OTAD_BUNDLE_KEYS`).MatchString(class) {
		out = append(out, "otad-bundle.bbclass: OTAD_BUNDLE_KEYS are not checksum-tracked")
	}
	if !strings.Contains(class, `OTAD_BUNDLE_COMPATIBLE ??= "${OTAD_COMPATIBLE}"`) {
		out = append(out, "otad-bundle.bbclass: the bundle's compatible must default to OTAD_COMPATIBLE, the device's")
	}
	if !strings.Contains(class, "DATETIME") {
		out = append(out, "otad-bundle.bbclass: bundle names carry no timestamp")
	}
	return out
}

// checkLayerStatic: what yocto-check-layer (scarthgap and wrynose) tests
// without parsing: a README with a maintainer, an e-mail address and how to
// send patches (test_readme; checked even though the README names other
// READMEs, which makes the tool skip it), a non-empty SECURITY file in the
// layer (wrynose's test_security; the layer may be copied out of this
// repository, so the top-level one does not count), an Upstream-Status in
// every patch (test_patches_upstream_status), and both LTS releases in
// LAYERSERIES_COMPAT (test_layerseries_compat, and the layer's promise).
// test_world_inherit_class fails a recipe that skips a QA test in
// CHECKLAYER_REQUIRED_TESTS; this layer needs no INSANE_SKIP at all, so any
// is reported.
func checkLayerStatic(t *testing.T, dir string) []string {
	var out []string
	files := bbFiles(t, dir)
	for _, name := range sortedKeys(files) {
		if regexp.MustCompile(`(?m)^\s*INSANE_SKIP`).MatchString(files[name]) {
			out = append(out, name+": INSANE_SKIP (yocto-check-layer fails recipes that skip required QA tests)")
		}
	}
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil || len(readme) == 0 {
		out = append(out, "README.md missing or empty in the layer")
	}
	text := strings.ToLower(string(readme))
	if !strings.Contains(text, "maintainer") {
		out = append(out, "README.md names no maintainer")
	}
	if !strings.Contains(text, "patch") {
		out = append(out, "README.md does not say where to send patches")
	}
	if !regexp.MustCompile(`[^@\s<]+@[^@\s>]+`).MatchString(text) {
		out = append(out, "README.md has no e-mail address")
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "SECURITY*"))
	if len(matches) == 0 {
		out = append(out, "no SECURITY file in the layer (yocto-check-layer test_security)")
	} else if fi, err := os.Stat(matches[0]); err != nil || fi.Size() == 0 {
		out = append(out, "SECURITY file is empty")
	}
	status := regexp.MustCompile(`(?m)^Upstream-Status: (Pending|Submitted|Denied|Inappropriate|Backport|Inactive-Upstream)( .+)?$`)
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".patch") {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !status.Match(data) {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel+": no valid Upstream-Status line")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	compat := regexp.MustCompile(`(?m)^LAYERSERIES_COMPAT_otad\s*=\s*"([^"]*)"`).FindStringSubmatch(files["conf/layer.conf"])
	for _, rel := range []string{"scarthgap", "wrynose"} {
		if compat == nil || !strings.Contains(" "+compat[1]+" ", " "+rel+" ") {
			out = append(out, "conf/layer.conf: LAYERSERIES_COMPAT_otad lacks "+rel)
		}
	}
	return out
}

// checkWorldSkip: before wrynose the otad recipe is skipped unless a mixin
// layer brings a Go as new as go.mod's (otad-go.bbclass). A recipe that
// still depends on otad or otad-native is then not skipped but unbuildable,
// and `bitbake world` fails ("Nothing RPROVIDES 'otad'" through
// meta-world-pkgdata): yocto-check-layer's test_world and
// test_world_inherit_class failed so on scarthgap with packagegroup-otad.
// Every recipe or class naming otad in a DEPENDS or RDEPENDS must inherit
// otad-go itself or through a class that does.
func checkWorldSkip(t *testing.T, dir string) []string {
	var out []string
	files := bbFiles(t, dir)
	inheritRe := regexp.MustCompile(`(?m)^inherit\s+(.+)$`)
	inherits := func(src string) []string {
		var cs []string
		for _, m := range inheritRe.FindAllStringSubmatch(src, -1) {
			cs = append(cs, strings.Fields(m[1])...)
		}
		return cs
	}
	skipping := map[string]bool{"otad-go": true}
	for _, name := range sortedKeys(files) {
		if strings.HasPrefix(name, "classes/") && strings.HasSuffix(name, ".bbclass") {
			for _, c := range inherits(files[name]) {
				if c == "otad-go" {
					skipping[strings.TrimSuffix(strings.TrimPrefix(name, "classes/"), ".bbclass")] = true
				}
			}
		}
	}
	if _, ok := files["classes/otad-go.bbclass"]; !ok {
		out = append(out, "classes/otad-go.bbclass missing")
	}
	depRe := regexp.MustCompile(`(?m)^R?DEPENDS\S*\s*[+.:?]*=+\s*"([^"]*)"`)
	for _, name := range sortedKeys(files) {
		src := files[name]
		needs := name == "recipes-otad/otad/otad_git.bb"
		for _, m := range depRe.FindAllStringSubmatch(src, -1) {
			for _, dep := range strings.Fields(m[1]) {
				if dep == "otad" || dep == "otad-native" {
					needs = true
				}
			}
		}
		if !needs {
			continue
		}
		ok := false
		for _, c := range inherits(src) {
			ok = ok || skipping[c]
		}
		if !ok {
			out = append(out, name+": needs otad but does not inherit otad-go, so world breaks where otad is skipped (Go too old)")
		}
	}
	return out
}
