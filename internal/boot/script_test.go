package boot_test

import (
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/boot/bootsim"
	"github.com/otadev/otad/internal/bootenv"
)

// TestScriptAndBootsimAgreeOnNames parses boot.cmd: every protocol variable
// is used by it, and what the script changes before its saveenv (i.e. what
// it persists) is exactly what bootsim may change.
func TestScriptAndBootsimAgreeOnNames(t *testing.T) {
	src := readScript(t)
	reads := names(regexp.MustCompile(`\$\{([A-Za-z0-9_]+)\}`), src)
	for _, v := range []string{boot.VarSlot, boot.VarPrev, boot.VarUpgrade, boot.VarBootCount, boot.VarBootLimit} {
		if !reads[v] {
			t.Errorf("boot.cmd never reads %s", v)
		}
	}
	head, _, ok := strings.Cut(src, "\tsaveenv\n")
	if !ok {
		t.Fatal("boot.cmd has no saveenv")
	}
	persisted := names(regexp.MustCompile(`(?m)^\s*(?:setenv|setexpr)\s+([A-Za-z0-9_]+)`), head)
	want := map[string]bool{boot.VarSlot: true, boot.VarUpgrade: true, boot.VarBootCount: true, boot.VarBootLimit: true, boot.VarFailed: true}
	if got, w := keys(persisted), keys(want); strings.Join(got, ",") != strings.Join(w, ",") {
		t.Errorf("boot.cmd persists %v, bootsim models %v", got, w)
	}
	// The native-bootcount fallback touches the same variables.
	alt := names(regexp.MustCompile(`setenv\s+([A-Za-z0-9_]+)`), boot.AltBootCmd)
	for v := range alt {
		if !want[v] {
			t.Errorf("AltBootCmd sets %s, which the script's fallback does not", v)
		}
	}
}

func names(re *regexp.Regexp, s string) map[string]bool {
	m := map[string]bool{}
	for _, sm := range re.FindAllStringSubmatch(s, -1) {
		m[sm[1]] = true
	}
	return m
}

func keys(m map[string]bool) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// TestScriptMatchesBootsim runs boot.cmd in the hush subset for every
// combination of the protocol variables and compares it with bootsim.Step:
// same persisted environment, same number of saves, same slot on the
// kernel command line, and root= of that slot.
func TestScriptMatchesBootsim(t *testing.T) {
	src := readScript(t)
	opt := func(vals ...string) []string { return append([]string{"<unset>"}, vals...) }
	n := 0
	for _, up := range opt("0", "1") {
		for _, bc := range opt("0", "1", "2", "3", "9", "a") {
			for _, bl := range opt("1", "3", "5") {
				for _, slot := range opt("A", "B", "X") {
					for _, prev := range opt("A", "B") {
						for _, native := range opt("1") {
							env := map[string]string{"kernel_addr_r": "0x40400000", "ramdisk_addr_r": "0x44000000",
								"fdtcontroladdr": "0x7ed00000", "otad_failed": "Z"}
							set := func(k, v string) {
								if v != "<unset>" {
									env[k] = v
								}
							}
							set(boot.VarUpgrade, up)
							set(boot.VarBootCount, bc)
							set(boot.VarBootLimit, bl)
							set(boot.VarSlot, slot)
							set(boot.VarPrev, prev)
							set("otad_native_bootcount", native)
							compareOne(t, src, env)
							n++
						}
					}
				}
			}
		}
	}
	t.Logf("%d environments: script and bootsim agree", n)
}

func compareOne(t *testing.T, src string, env map[string]string) {
	t.Helper()
	h := newHush(t, env)
	h.files["2:/boot/Image"], h.files["3:/boot/Image"] = true, true
	h.files["2:/boot/initrd.img"] = true
	h.run(src)

	e := bootenv.NewEnv()
	for k, v := range env {
		e.Set(k, v)
	}
	store := bootenv.NewMemStore(e)
	slot, err := bootsim.Step(store)
	if err != nil {
		t.Fatal(err)
	}
	native := env["otad_native_bootcount"] == "1"
	wantSaves := store.Writes()
	if native {
		wantSaves = 0 // U-Boot's bootcount driver saves, not the script
	}
	if h.saves != wantSaves {
		t.Fatalf("env %v: script saved %d times, bootsim %d", env, h.saves, wantSaves)
	}
	if !native {
		got, _ := store.Load()
		if !sameEnv(h.saved, got) {
			t.Fatalf("env %v:\nscript persisted %v\nbootsim %v", env, h.saved, got)
		}
	}
	if native {
		// The script itself only boots what the env says.
		slot = "A"
		if env[boot.VarSlot] == "B" {
			slot = "B"
		}
	}
	if h.booted == "" {
		t.Fatalf("env %v: script booted nothing; output %q", env, h.out)
	}
	args := h.env["bootargs"]
	if got, err := boot.BootedSlot(args); err != nil || got != slot {
		t.Fatalf("env %v: bootargs %q, bootsim boots %s (%v)", env, args, slot, err)
	}
	part := map[string]string{"A": "2", "B": "3"}[slot]
	if !strings.Contains(args, "root=/dev/vda"+part+" ") {
		t.Fatalf("env %v: bootargs %q lack root of slot %s", env, args, slot)
	}
	wantBoot := "booti 0x40400000 0x44000000:1234 0x7ed00000"
	if slot == "B" { // no initrd on partition 3 in this fake disk
		wantBoot = "booti 0x40400000 - 0x7ed00000"
	}
	if h.booted != wantBoot {
		t.Fatalf("env %v: ran %q, want %q", env, h.booted, wantBoot)
	}
}

func sameEnv(m map[string]string, e *bootenv.Env) bool {
	if len(m) != e.Len() {
		return false
	}
	for k, v := range m {
		if ev, ok := e.Get(k); !ok || ev != v {
			return false
		}
	}
	return true
}

// TestScriptTrialResetsWhenKernelMissing: a trial slot whose kernel does
// not load resets (the boot is already counted) instead of hanging.
func TestScriptTrialResetsWhenKernelMissing(t *testing.T) {
	h := newHush(t, map[string]string{boot.VarSlot: "B", boot.VarPrev: "A", boot.VarUpgrade: "1", boot.VarBootCount: "0", "kernel_addr_r": "0x40400000"})
	h.files["2:/boot/Image"] = true
	h.run(readScript(t))
	if !h.reset || h.booted != "" || h.saved[boot.VarBootCount] != "1" {
		t.Fatalf("reset=%v booted=%q bootcount=%q", h.reset, h.booted, h.saved[boot.VarBootCount])
	}
}
