package boot_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/boot/bootsim"
	"github.com/otadev/otad/internal/bootenv"
)

func committedOn(slot string) *bootenv.MemStore {
	e := bootenv.NewEnv()
	e.Set(boot.VarSlot, slot)
	e.Set(boot.VarPrev, slot)
	e.Set(boot.VarUpgrade, "0")
	e.Set(boot.VarBootCount, "0")
	return bootenv.NewMemStore(e)
}

func mustWrites(t *testing.T, s *bootenv.MemStore, want int, what string) {
	t.Helper()
	if got := s.Writes(); got != want {
		t.Fatalf("%s: %d env writes so far, want %d", what, got, want)
	}
}

func TestArmCommitEachOneWrite(t *testing.T) {
	s := committedOn("A")
	p := &boot.Protocol{Store: s, BootLimit: 3}
	if err := p.Arm("B", "A"); err != nil {
		t.Fatal(err)
	}
	mustWrites(t, s, 1, "Arm")
	st, err := p.State()
	if err != nil {
		t.Fatal(err)
	}
	want := boot.State{Slot: "B", Prev: "A", UpgradeAvailable: true, BootCount: 0, BootLimit: 3}
	if st != want {
		t.Fatalf("after Arm: %+v, want %+v", st, want)
	}
	e, _ := s.Load()
	if v, _ := e.Get(boot.VarAltBootCmd); v != boot.AltBootCmd {
		t.Fatalf("altbootcmd = %q", v)
	}
	slot, err := bootsim.Step(s) // trial boot: the script counts and saves
	if err != nil || slot != "B" {
		t.Fatalf("trial boot: %s %v", slot, err)
	}
	mustWrites(t, s, 2, "trial boot")
	if err := p.CheckCanary("B"); err != nil {
		t.Fatalf("canary after a counted trial: %v", err)
	}
	if stt, _ := p.Status("B"); !stt.Trial || stt.RolledBack {
		t.Fatalf("status in trial: %+v", stt)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	mustWrites(t, s, 3, "Commit")
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	mustWrites(t, s, 3, "second Commit (nothing to do)")
	for i := 0; i < 3; i++ {
		if slot, _ := bootsim.Step(s); slot != "B" {
			t.Fatalf("normal boot %d booted %s", i, slot)
		}
	}
	mustWrites(t, s, 3, "normal boots")
	if stt, _ := p.Status("B"); stt.Trial || stt.RolledBack {
		t.Fatalf("status after commit: %+v", stt)
	}
}

func TestFailedTrialRollsBackAfterBootLimit(t *testing.T) {
	s := committedOn("A")
	p := &boot.Protocol{Store: s, BootLimit: 2}
	if err := p.Arm("B", "A"); err != nil {
		t.Fatal(err)
	}
	var slots []string
	for i := 0; i < 4; i++ { // the new slot never commits
		slot, err := bootsim.Step(s)
		if err != nil {
			t.Fatal(err)
		}
		slots = append(slots, slot)
	}
	if got := strings.Join(slots, ""); got != "BBAA" {
		t.Fatalf("boots went %s, want BBAA (two trials, then fallback)", got)
	}
	stt, err := p.Status("A")
	if err != nil {
		t.Fatal(err)
	}
	if !stt.RolledBack || stt.Trial || stt.State.Failed != "B" {
		t.Fatalf("status after fallback: %+v", stt)
	}
	if !boot.RolledBack(stt.State, "A", "B") || boot.RolledBack(stt.State, "A", "") {
		t.Fatal("RolledBack from the engine's record is wrong")
	}
	if err := p.CheckCanary("A"); err != nil {
		t.Fatalf("canary on the fallback slot: %v", err)
	}
	// The next install clears the rollback report.
	if err := p.Arm("B", "A"); err != nil {
		t.Fatal(err)
	}
	if stt, _ := p.Status("A"); stt.RolledBack {
		t.Fatal("rollback still reported after a new Arm")
	}
}

func TestFallbackAndDisarm(t *testing.T) {
	s := committedOn("A")
	p := &boot.Protocol{Store: s}
	if err := p.Disarm("A"); err != nil {
		t.Fatal(err)
	}
	mustWrites(t, s, 0, "Disarm with nothing armed")
	if err := p.Arm("B", "A"); err != nil {
		t.Fatal(err)
	}
	if err := p.Disarm("A"); err != nil {
		t.Fatal(err)
	}
	mustWrites(t, s, 2, "Arm + Disarm")
	if st, _ := p.State(); st.Slot != "A" || st.UpgradeAvailable {
		t.Fatalf("after Disarm: %+v", st)
	}
	if err := p.Arm("B", "A"); err != nil {
		t.Fatal(err)
	}
	bootsim.Step(s)
	if err := p.Fallback(); err != nil {
		t.Fatal(err)
	}
	mustWrites(t, s, 5, "Arm + boot + Fallback")
	st, _ := p.State()
	if st.Slot != "A" || st.UpgradeAvailable || st.BootCount != 0 || st.Failed != "B" {
		t.Fatalf("after Fallback: %+v", st)
	}
	if slot, _ := bootsim.Step(s); slot != "A" {
		t.Fatalf("boot after Fallback: %s", slot)
	}
	if err := p.Fallback(); !errors.Is(err, boot.ErrNoFallback) {
		t.Fatalf("Fallback with prev == slot: %v", err)
	}
}

// TestDisarmPointsAwayFromTheOtherSlot: Disarm(active) is what the engine
// calls before it overwrites the other slot, so afterwards the env must
// boot active whatever it said before. A committed pointer at the other
// slot (a fallback written but the reboot not done yet, or a manual
// fw_setenv) would otherwise boot a half-written slot with no trial and no
// way back after a power cut during the write.
func TestDisarmPointsAwayFromTheOtherSlot(t *testing.T) {
	// Trial of B failed its health check: Fallback points the env at A,
	// but the device still runs B when the next install starts writing A.
	s := committedOn("A")
	p := &boot.Protocol{Store: s}
	if err := p.Arm("B", "A"); err != nil {
		t.Fatal(err)
	}
	bootsim.Step(s)
	if err := p.Fallback(); err != nil {
		t.Fatal(err)
	}
	before := s.Writes()
	if err := p.Disarm("B"); err != nil {
		t.Fatal(err)
	}
	mustWrites(t, s, before+1, "Disarm of a committed pointer at the other slot")
	if st, _ := p.State(); st.Slot != "B" || st.UpgradeAvailable || st.BootCount != 0 {
		t.Fatalf("after Disarm(B): %+v", st)
	}
	if slot, _ := bootsim.Step(s); slot != "B" {
		t.Fatalf("power cut while A is written: next boot is %s, want the running slot B", slot)
	}
	if err := p.Disarm("B"); err != nil {
		t.Fatal(err)
	}
	mustWrites(t, s, before+1, "second Disarm (nothing to do)")

	// otad_slot unset or garbage boots A: Disarm("B") must name B.
	for _, v := range []string{"", "X"} {
		e := bootenv.NewEnv()
		e.Set(boot.VarSlot, v)
		s := bootenv.NewMemStore(e)
		if err := (&boot.Protocol{Store: s}).Disarm("B"); err != nil {
			t.Fatal(err)
		}
		if slot, _ := bootsim.Step(s); slot != "B" {
			t.Fatalf("otad_slot=%q: after Disarm(B) the script boots %s", v, slot)
		}
	}
}

func TestCanaryCatchesAForeignEnvironment(t *testing.T) {
	s := committedOn("A")
	p := &boot.Protocol{Store: s}
	if err := p.Arm("B", "A"); err != nil {
		t.Fatal(err)
	}
	// Booted into B but nothing counted the boot in the env otad reads.
	err := p.CheckCanary("B")
	if !errors.Is(err, boot.ErrCanary) || !strings.Contains(err.Error(), "fw_env.config") {
		t.Fatalf("canary: %v", err)
	}
	if err := p.CheckCanary("A"); err != nil {
		t.Fatalf("armed but not yet rebooted must pass: %v", err)
	}
	empty := &boot.Protocol{Store: bootenv.NewMemStore(nil)}
	if err := empty.CheckCanary("A"); !errors.Is(err, boot.ErrCanary) {
		t.Fatalf("no valid env: %v", err)
	}
}

func TestArmRefusesBadInput(t *testing.T) {
	s := committedOn("A")
	for _, c := range []struct{ target, current string }{{"C", "A"}, {"B", ""}, {"A", "A"}} {
		if err := (&boot.Protocol{Store: s}).Arm(c.target, c.current); err == nil {
			t.Errorf("Arm(%q, %q) accepted", c.target, c.current)
		}
	}
	if err := (&boot.Protocol{Store: s, BootLimit: 10}).Arm("B", "A"); err == nil {
		t.Error("bootlimit 10 accepted (hex/decimal ambiguity)")
	}
	mustWrites(t, s, 0, "refused Arms")
	noEnv := bootenv.NewMemStore(nil)
	if err := (&boot.Protocol{Store: noEnv}).Arm("B", "A"); !errors.Is(err, bootenv.ErrNoValidCopy) {
		t.Fatalf("Arm without a valid env: %v", err)
	}
	bad := committedOn("A")
	e, _ := bad.Load()
	e.Set(boot.VarBootCount, "zz")
	bad.Save(e)
	if _, err := (&boot.Protocol{Store: bad}).State(); !errors.Is(err, boot.ErrBadValue) {
		t.Fatalf("bootcount=zz: %v", err)
	}
}

func TestBootedSlot(t *testing.T) {
	for in, want := range map[string]string{
		"console=ttyAMA0 root=/dev/vda3 rootwait otad.slot=B\n": "B",
		"otad.slot=A":                   "A",
		"otad.slot=B quiet otad.slot=A": "A",
	} {
		if got, err := boot.BootedSlot(in); err != nil || got != want {
			t.Errorf("BootedSlot(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := boot.BootedSlot("root=/dev/vda2"); !errors.Is(err, boot.ErrNoSlot) {
		t.Errorf("missing: %v", err)
	}
	if _, err := boot.BootedSlot("otad.slot=C"); !errors.Is(err, boot.ErrBadSlot) {
		t.Errorf("bad: %v", err)
	}
	if _, err := boot.BootedSlot("xotad.slot=A"); !errors.Is(err, boot.ErrNoSlot) {
		t.Errorf("prefix match: %v", err)
	}
	p := filepath.Join(t.TempDir(), "cmdline")
	os.WriteFile(p, []byte("console=ttyAMA0 otad.slot=B root=/dev/vda3\n"), 0o644)
	if s, err := boot.ReadBootedSlot(p); err != nil || s != "B" {
		t.Errorf("ReadBootedSlot: %q %v", s, err)
	}
	if _, err := boot.ReadBootedSlot(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("ReadBootedSlot of a missing file succeeded")
	}
}

// TestProtocolOnRealEnvFile: Arm and Commit on a redundant env file are one
// write each (the flag counter moves by exactly one), and fw_printenv reads
// what U-Boot will see.
func TestProtocolOnRealEnvFile(t *testing.T) {
	for _, tool := range []string{"mkenvimage", "fw_printenv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing (make deps): %v", tool, err)
		}
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "defaults.txt")
	os.WriteFile(in, []byte("otad_slot=A\notad_prev=A\nbootcmd=run distro_bootcmd\n"), 0o644)
	img := filepath.Join(dir, "env.img")
	if out, err := exec.Command("mkenvimage", "-r", "-s", "0x4000", "-o", img, in).CombinedOutput(); err != nil {
		t.Fatalf("mkenvimage: %v %s", err, out)
	}
	b, _ := os.ReadFile(img)
	os.WriteFile(img, append(b, b...), 0o644)
	cfgPath := filepath.Join(dir, "fw_env.config")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("%s 0 0x4000\n%s 0x4000 0x4000\n", img, img)), 0o644)
	cfg, err := bootenv.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.LockPath = filepath.Join(dir, "lock")
	s, err := bootenv.OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	flags := func() int {
		b, _ := os.ReadFile(img)
		return max(int(b[4]), int(b[0x4004])) // each write: newest counter + 1

	}
	p := &boot.Protocol{Store: s}
	f0 := flags()
	if err := p.Arm("B", "A"); err != nil {
		t.Fatal(err)
	}
	if d := flags() - f0; d != 1 {
		t.Fatalf("Arm moved the newest flag counter by %d, want 1 write", d)
	}
	out, err := exec.Command("fw_printenv", "-c", cfgPath).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"otad_slot=B\n", "otad_prev=A\n", "upgrade_available=1\n", "bootcount=0\n", "bootlimit=3\n", "bootcmd=run distro_bootcmd\n"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("fw_printenv lacks %q:\n%s", want, out)
		}
	}
	if _, err := bootsim.Step(s); err != nil {
		t.Fatal(err)
	}
	f1 := flags()
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if d := flags() - f1; d != 1 {
		t.Fatalf("Commit moved the newest flag counter by %d, want 1 write", d)
	}
}
