package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/bootenv"
)

const compatible = "otad-vm-arm64"

// guestConf is /etc/otad/system.conf inside every slot image.
const guestConf = `[system]
compatible = ` + compatible + `
data-dir = /data/otad
env-config = /etc/fw_env.config
bootlimit = 3
reboot = auto
reboot-command = /sbin/reboot

[keyring]
directory = /etc/otad/keys

[slot.rootfs.0]
name = A
device = /dev/vda2
type = block

[slot.rootfs.1]
name = B
device = /dev/vda3
type = block

[health]
target =
check = /bin/sh -c 'test -e /etc/otad-image'
watchdog = none
`

// prepare builds what all scenarios share: keys, boot partition, data
// partition, the slot images v1 (good), v2 (good, newer) and v2-broken.
func (a *artifacts) prepare() error {
	var err error
	if a.defEnv, err = loadDefaultEnv(filepath.Join(a.cache, "uboot-default-env.txt")); err != nil {
		return err
	}
	a.keys = filepath.Join(a.work, "keys")
	if err := os.MkdirAll(a.keys, 0o755); err != nil {
		return err
	}
	a.signKey = filepath.Join(a.work, "vmtest.key")
	if err := run(a.otadHst, "bundle", "keygen", "-id", "vmtest", "-o", filepath.Join(a.work, "vmtest")); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(a.keys, "vmtest.pub"), filepath.Join(a.work, "vmtest.pub"), 0o644); err != nil {
		return err
	}
	if err := a.buildBoot(); err != nil {
		return err
	}
	if err := a.buildData(); err != nil {
		return err
	}
	for _, s := range []slotSpec{{name: "v1"}, {name: "v2"}, {name: "v2-broken", broken: true}} {
		img, err := a.buildSlot(s, guestConf)
		if err != nil {
			return fmt.Errorf("slot image %s: %w", s.name, err)
		}
		a.slots[s.name] = img
	}
	return nil
}

// boardEnv is what the board's default environment adds to U-Boot's own: no
// autoboot delay and the console for Linux.
func boardEnv(kv ...string) *bootenv.Env {
	e := bootenv.NewEnv()
	e.Set("bootdelay", "0")
	e.Set("otad_bootargs", "console=ttyAMA0 loglevel=5")
	for i := 0; i+1 < len(kv); i += 2 {
		e.Set(kv[i], kv[i+1])
	}
	return e
}

// boardEnvFor is boardEnv for a board with (native) or without U-Boot's
// own bootcount: with it the boot script must not count again, and
// altbootcmd does the fallback.
func boardEnvFor(native bool, kv ...string) *bootenv.Env {
	e := boardEnv(kv...)
	if native {
		e.Set("otad_native_bootcount", "1")
		e.Set("altbootcmd", boot.AltBootCmd)
	}
	return e
}

// expectEnv checks variables of env; an empty want means "unset or empty".
func expectEnv(where string, e *bootenv.Env, kv ...string) error {
	var bad []string
	for i := 0; i+1 < len(kv); i += 2 {
		got, _ := e.Get(kv[i])
		if got != kv[i+1] {
			bad = append(bad, fmt.Sprintf("%s=%q (want %q)", kv[i], got, kv[i+1]))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s env: %s", where, strings.Join(bad, ", "))
	}
	return nil
}

func isBoot(slot, image string) func(event) bool {
	return func(ev event) bool {
		return ev.kind == "boot" && ev.fields["slot"] == slot && ev.fields["image"] == image
	}
}

var scenarios = []scenario{
	{name: "boot-a", run: scenBootA},
	{name: "uboot-fallback", run: scenUbootFallback},
	{name: "native-bootcount", run: scenNativeBootcount},
	{name: "good-update", quick: true, run: scenGoodUpdate},
	{name: "refused", run: scenRefused},
	{name: "bad-update", run: scenBadUpdate},
	{name: "mtd-nor-env", run: func(ctx context.Context, a *artifacts, r *result) error { return scenMTDNorEnv(ctx, a, r, false) }},
	{name: "mtd-slot-writer", run: scenMTDSlotWriter},
	{name: "mtd-nandsim", run: scenNandsim},
	{name: "mtd-nor-env-redundant", run: func(ctx context.Context, a *artifacts, r *result) error { return scenMTDNorEnv(ctx, a, r, true) }},
	{name: "power-cuts", run: scenPowerCuts},
	// systemd tier (setup-systemd.sh's Debian rootfs)
	{name: "sys-good-update", run: scenSysGoodUpdate},
	{name: "health-fail", run: scenHealthFail},
	{name: "watchdog-hang", run: scenWatchdogHang},
	// Raspberry Pi tier (rpi.go, setup-rpi.sh): only when named
	{name: "rpi-update", named: true, run: scenRpiUpdate},
	{name: "rpi-power-cuts", named: true, run: scenRpiPowerCuts}, // redundant and stock side by side
}

// scenBootA: a plain boot of slot A from a seeded env; nothing may be
// written to the env (a normal boot writes nothing).
func scenBootA(ctx context.Context, a *artifacts, r *result) error {
	m, err := a.newMachine("boot-a", a.slots["v1"], a.slots["v2"], false, boardEnv("otad_slot", "A", "otad_prev", "A", "upgrade_available", "0", "bootcount", "0", "bootlimit", "3"))
	if err != nil {
		return err
	}
	before, err := os.ReadFile(m.envFlash())
	if err != nil {
		return err
	}
	if err := m.start(); err != nil {
		return err
	}
	defer m.cut()
	if _, _, err := m.waitEvent(ctx, 0, 90*time.Second, isBoot("A", "v1")); err != nil {
		return fmt.Errorf("slot A did not boot: %w\n%s", err, tail(m.console(), 15))
	}
	ge, err := m.guestEnv()
	if err != nil {
		return fmt.Errorf("guest env dump: %w", err)
	}
	if err := expectEnv("guest /dev/mtd0", ge, "otad_slot", "A", "upgrade_available", "0"); err != nil {
		return err
	}
	m.cut()
	r.boots = m.ubootStarts()
	after, err := os.ReadFile(m.envFlash())
	if err != nil {
		return err
	}
	if string(before[:0x40000]) != string(after[:0x40000]) {
		return fmt.Errorf("a normal boot changed the environment")
	}
	return nil
}

// scenUbootFallback: env armed on the host (otad_slot=B on trial), slot B
// cannot boot (its rootfs has no init: kernel panic → reset). Real U-Boot
// running THE boot script must count bootlimit trials and fall back to A.
func scenUbootFallback(ctx context.Context, a *artifacts, r *result) error {
	m, err := a.newMachine("uboot-fallback", a.slots["v1"], a.slots["v2-broken"], false,
		boardEnv("otad_slot", "B", "otad_prev", "A", "upgrade_available", "1", "bootcount", "0", "bootlimit", "3"))
	if err != nil {
		return err
	}
	if err := m.start(); err != nil {
		return err
	}
	defer m.cut()
	if _, _, err := m.waitEvent(ctx, 0, 4*time.Minute, isBoot("A", "v1")); err != nil {
		return fmt.Errorf("no fallback boot of A: %w\n%s", err, tail(m.console(), 20))
	}
	for _, ev := range m.events() {
		if ev.kind == "boot" && ev.fields["slot"] == "B" {
			return fmt.Errorf("broken slot B reached userspace: %s", ev.raw)
		}
	}
	ge, err := m.guestEnv()
	if err != nil {
		return fmt.Errorf("guest env dump: %w", err)
	}
	if err := expectEnv("guest /dev/mtd0", ge, "otad_slot", "A", "upgrade_available", "0", "bootcount", "0", "otad_failed", "B"); err != nil {
		return err
	}
	m.cut()
	r.boots = m.ubootStarts()
	if r.boots != 4 {
		return fmt.Errorf("U-Boot started %d times, want 4 (3 trials of B + fallback to A)", r.boots)
	}
	he, err := m.readEnv()
	if err != nil {
		return err
	}
	return expectEnv("host flash1.img", he, "otad_slot", "A", "otad_prev", "A", "upgrade_available", "0", "otad_failed", "B")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// onBoot installs the guest's per-boot step (/host/on-boot.sh).
func (m *machine) onBoot(script string) error {
	return writeFile(filepath.Join(m.share(), "on-boot.sh"), "#!/bin/sh\n"+guestLib+script, 0o755)
}

// guestLib is shell shared by the step scripts.
const guestLib = `slot=$(sed -n 's/.*otad\.slot=\([AB]\).*/\1/p' /proc/cmdline)
ev() { echo "$*" >>/host/events; }
once() { [ -e "/host/done-$1" ] && return 1; touch "/host/done-$1"; }
`

// scenMTDNorEnv (scenario 7, NOR part): otad in the guest writes the env
// through the real kernel MTD stack (/dev/mtd0 = both pflash banks, CFI
// driver built out of tree), and real U-Boot acts on it at the next boot.
// Cross-checked on the host with libubootenv's fw_printenv.
func scenMTDNorEnv(ctx context.Context, a *artifacts, r *result, redundant bool) error {
	name := "mtd-nor-env"
	if redundant {
		name += "-redundant"
	}
	m, err := a.newMachine(name, a.slots["v1"], a.slots["v2"], redundant, boardEnv("otad_slot", "A", "otad_prev", "A", "upgrade_available", "0", "bootcount", "0", "bootlimit", "3"))
	if err != nil {
		return err
	}
	err = m.onBoot(`
if [ "$slot" = A ] && once mtd; then
	otad env print >/host/env-print-A.txt; ev "env-print rc=$?"
	printf 'otad_slot B\notad_bootargs console=ttyAMA0 loglevel=5 vmtest.marker=written-by-otad\n' | otad env set -s -
	ev "env-set rc=$?"
	dmesg >/host/dmesg-A.txt
	ev "cfi dmesg-lines=$(grep -c '' /host/dmesg-A.txt) write-errors=$(grep -c 'write error' /host/dmesg-A.txt)"
	reboot
fi
`)
	if err != nil {
		return err
	}
	if err := m.start(); err != nil {
		return err
	}
	defer m.cut()
	_, n, err := m.waitEvent(ctx, 0, 90*time.Second, isBoot("A", "v1"))
	if err != nil {
		return fmt.Errorf("slot A did not boot: %w\n%s", err, tail(m.console(), 15))
	}
	ev, n, err := m.waitEvent(ctx, n, 60*time.Second, func(e event) bool { return e.kind == "env-set" })
	if err != nil {
		return err
	}
	if ev.fields["rc"] != "0" {
		st, _ := os.ReadFile(filepath.Join(m.share(), "step.log"))
		return fmt.Errorf("otad env set on /dev/mtd0 failed: %s\n%s", ev.raw, st)
	}
	if _, _, err := m.waitEvent(ctx, n, 90*time.Second, isBoot("B", "v2")); err != nil {
		return fmt.Errorf("U-Boot did not boot B after otad wrote otad_slot=B on /dev/mtd0: %w\n%s", err, tail(m.console(), 15))
	}
	cl, _ := os.ReadFile(filepath.Join(m.share(), "cmdline"))
	if !strings.Contains(string(cl), "vmtest.marker=written-by-otad") {
		return fmt.Errorf("kernel command line lacks the bootargs otad wrote: %s", cl)
	}
	pr, _ := os.ReadFile(filepath.Join(m.share(), "env-print-A.txt"))
	if !strings.Contains(string(pr), "otad_slot=A\n") || !strings.Contains(string(pr), "bootcmd=run distro_bootcmd") {
		return fmt.Errorf("otad env print in the guest did not show the seeded env:\n%s", tail(string(pr), 5))
	}
	m.cut()
	r.boots = m.ubootStarts()
	// The CFI driver logs a refused program ("buffer write error ...") even
	// when a retry or a later write succeeds: the kernel log must have none.
	var cfi event
	for _, e := range m.events() {
		if e.kind == "cfi" {
			cfi = e
		}
	}
	if cfi.fields["dmesg-lines"] == "" || cfi.fields["dmesg-lines"] == "0" || cfi.fields["write-errors"] != "0" {
		dm, _ := os.ReadFile(filepath.Join(m.share(), "dmesg-A.txt"))
		return fmt.Errorf("kernel log after otad's env write: %q\n%s", cfi.raw, tail(string(dm), 10))
	}
	if redundant {
		// the boolean scheme end to end: otad in Linux wrote copy 1 active and
		// marked the seeded copy 0 obsolete (one write-buffer program of its
		// own bytes through Linux's CFI driver); U-Boot took the new one.
		he, err := m.readEnv()
		if err != nil {
			return err
		}
		if err := expectEnv("host flash1.img (redundant, boolean flags)", he, "otad_slot", "B"); err != nil {
			return err
		}
		img, err := os.ReadFile(m.envFlash())
		if err != nil {
			return err
		}
		if img[4] != 0 || img[0x40004] != 1 {
			return fmt.Errorf("flags after otad's save: copy 0 %#x, copy 1 %#x; want 0 (obsolete), 1 (active)", img[4], img[0x40004])
		}
		// The obsolete mark re-programmed the old copy's CRC and data with
		// their own values: alone (copy 1 erased) it must still be valid.
		old := make([]byte, 0x80000)
		copy(old, img[:0x40000])
		for i := 0x40000; i < len(old); i++ {
			old[i] = 0xff
		}
		oldImg := filepath.Join(m.dir, "old-copy-only.img")
		if err := os.WriteFile(oldImg, old, 0o644); err != nil {
			return err
		}
		st, done, err := norStore(oldImg)
		if err != nil {
			return err
		}
		oe, err := st.Load()
		done()
		if err != nil {
			return fmt.Errorf("the obsolete copy 0 no longer loads on its own (CRC or data changed by the mark): %w", err)
		}
		if err := expectEnv("obsolete copy 0 alone", oe, "otad_slot", "A"); err != nil {
			return err
		}
	}
	// libubootenv's fw_printenv on the host reads what otad wrote in the
	// guest (on the image file it reads the boolean flags as counters, where
	// active 1 is newer than obsolete 0).
	out, err := exec.Command("fw_printenv", "-c", m.fwEnvConfig(), "otad_slot", "otad_bootargs").CombinedOutput()
	if err != nil {
		return fmt.Errorf("fw_printenv: %w: %s", err, out)
	}
	if want := "otad_slot=B\notad_bootargs=console=ttyAMA0 loglevel=5 vmtest.marker=written-by-otad\n"; string(out) != want {
		return fmt.Errorf("fw_printenv on the host: got %q, want %q", out, want)
	}
	return nil
}

// scenNativeBootcount: the optional U-Boot built from Debian's source with
// CONFIG_BOOTCOUNT_LIMIT + CONFIG_BOOTCOUNT_ENV and a redundant flash env.
// The env is armed on the host as otad's Arm does (with otad's altbootcmd);
// slot B cannot boot; U-Boot's own bootcount runs altbootcmd past bootlimit.
func scenNativeBootcount(ctx context.Context, a *artifacts, r *result) error {
	m, err := a.newMachine("native-bootcount", a.slots["v1"], a.slots["v2-broken"], true,
		boardEnv("otad_native_bootcount", "1", "altbootcmd", boot.AltBootCmd,
			"otad_slot", "B", "otad_prev", "A", "upgrade_available", "1", "bootcount", "0", "bootlimit", "3"))
	if err != nil {
		return err
	}
	if err := m.start(); err != nil {
		return err
	}
	defer m.cut()
	if _, _, err := m.waitEvent(ctx, 0, 4*time.Minute, isBoot("A", "v1")); err != nil {
		return fmt.Errorf("no fallback boot of A: %w\n%s", err, tail(m.console(), 20))
	}
	ge, err := m.guestEnv()
	if err != nil {
		return fmt.Errorf("guest env dump: %w", err)
	}
	if err := expectEnv("guest /dev/mtd0", ge, "otad_slot", "A", "upgrade_available", "0", "bootcount", "0", "otad_failed", "B"); err != nil {
		return err
	}
	m.cut()
	r.boots = m.ubootStarts()
	if r.boots != 4 {
		return fmt.Errorf("U-Boot started %d times, want 4 (3 trials of B + altbootcmd)", r.boots)
	}
	if strings.Contains(m.console(), "otad: trial boot") {
		return fmt.Errorf("the boot script counted although otad_native_bootcount=1")
	}
	return nil
}

// scenMTDSlotWriter (scenario 7, slot writer part): the slot package's own
// real-device test (TestRealMTD: write, read-back verify, resume at an
// erase block) runs in the guest against a kernel MTD device, mtdram built
// out of tree from Debian's linux-source (the arm64 kernel has no nandsim;
// NAND bad blocks stay covered by the simulator tests on the host).
func scenMTDSlotWriter(ctx context.Context, a *artifacts, r *result) error {
	m, err := a.newMachine("mtd-slot-writer", a.slots["v1"], a.slots["v2"], false, boardEnv("otad_slot", "A", "otad_prev", "A", "upgrade_available", "0", "bootcount", "0", "bootlimit", "3"))
	if err != nil {
		return err
	}
	test := filepath.Join(m.share(), "slot.test")
	cmd := exec.Command("go", "test", "-c", "-o", test, "./internal/slot")
	cmd.Dir = a.repo
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go test -c ./internal/slot for arm64: %w\n%s", err, out)
	}
	if err := copyFile(filepath.Join(m.share(), "mtdram.ko"), filepath.Join(a.cache, "mtd-ko", "mtdram.ko"), 0o644); err != nil {
		return err
	}
	err = m.onBoot(`
if once mtdtest; then
	insmod /host/mtdram.ko total_size=8192 erase_size=128 || { ev "mtd-test rc=insmod"; exit 1; }
	dev=/dev/$(grep -l mtdram /sys/class/mtd/mtd*/name | head -1 | cut -d/ -f5)
	cat /proc/mtd >/host/proc-mtd.txt
	OTAD_TEST_MTD=$dev /host/slot.test -test.run '^TestRealMTD$' -test.v -test.count=1 >/host/mtd-test.log 2>&1
	ev "mtd-test rc=$? dev=$dev"
fi
`)
	if err != nil {
		return err
	}
	if err := m.start(); err != nil {
		return err
	}
	defer m.cut()
	ev, _, err := m.waitEvent(ctx, 0, 3*time.Minute, func(e event) bool { return e.kind == "mtd-test" })
	if err != nil {
		return fmt.Errorf("%w\n%s", err, m.stepLog())
	}
	out, _ := os.ReadFile(filepath.Join(m.share(), "mtd-test.log"))
	if ev.fields["rc"] != "0" || !strings.Contains(string(out), "--- PASS: TestRealMTD") {
		return fmt.Errorf("TestRealMTD on %s: %s\n%s", ev.fields["dev"], ev.raw, tail(string(out), 15))
	}
	m.cut()
	r.boots = m.ubootStarts()
	r.detail = "TestRealMTD passed on " + ev.fields["dev"] + " (mtdram)"
	return nil
}
