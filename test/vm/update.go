package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/otadev/otad/internal/bootenv"
)

// Scenarios that drive otad's engine in the guest: `otad serve` under the
// busybox supervisor, `otad install` / `otad status --json` over the guest's
// D-Bus system bus.

// engineRedundant selects the U-Boot for the engine scenarios. It is the
// single-copy Debian U-Boot: on the redundant NOR env otad's boolean-scheme
// "mark obsolete" is a 1-byte program, and small writes through Linux's CFI
// driver hang on QEMU's pflash (ETIME, then EINVAL; sector-sized writes
// work), so arming fails there; see mtd-nor-env-redundant and README.md.
const engineRedundant = false

// guestWait is shell for the step scripts: wait for the daemon on the bus,
// then for a settled state (not installing, not confirming).
const guestWait = `
wait_daemon() {
	sleep 1; timeout 10 otad status >>/host/step.log 2>&1; echo "first status rc=$?" >>/host/step.log
	i=0
	while ! otad status >/tmp/ws.out 2>&1; do
		i=$((i + 1)); [ $i -gt 600 ] && { cat /tmp/ws.out; return 1; }; sleep 0.2
	done
}
settled() {
	i=0
	while :; do
		otad status --json >/tmp/st.json 2>/dev/null &&
			grep -q '"operation": "idle"' /tmp/st.json &&
			grep -q '"trial_boot": false' /tmp/st.json && return 0
		i=$((i + 1)); [ $i -gt 900 ] && { cat /tmp/st.json; return 1; }; sleep 0.2
	done
}
status_to() { otad status --json >"$1" 2>>/host/step.log; }
`

// guestStatus is `otad status --json` as the guest saved it.
type guestStatus struct {
	Operation string           `json:"operation"`
	LastError string           `json:"last_error"`
	BootSlot  string           `json:"boot_slot"`
	Version   string           `json:"version"`
	TrialBoot bool             `json:"trial_boot"`
	Slots     []map[string]any `json:"slots"`
}

func (m *machine) status(name string) (*guestStatus, error) {
	b, err := os.ReadFile(filepath.Join(m.share(), name))
	if err != nil {
		return nil, fmt.Errorf("guest status %s: %w", name, err)
	}
	var st guestStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("guest status %s: %w: %s", name, err, b)
	}
	return &st, nil
}

// slotProp finds a slot property by name, case-insensitively.
func (st *guestStatus) slotProp(slot, prop string) string {
	for _, s := range st.Slots {
		if fmt.Sprint(s["name"]) != slot {
			continue
		}
		for k, v := range s {
			if strings.EqualFold(k, prop) {
				return fmt.Sprint(v)
			}
		}
	}
	return ""
}

// partHash hashes partition n (2 = A, 3 = B) of the machine's disk.
func (m *machine) partHash(n int) (string, error) {
	f, err := os.Open(m.disk())
	if err != nil {
		return "", err
	}
	defer f.Close()
	size := int64(m.slotMiB) << 20
	off := int64(1+bootMiB) << 20
	if n == 3 {
		off += size
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, off, size)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func fileHash(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// bundle builds (once) a signed bundle of a slot image in the share dir of
// no machine yet; machines get a copy in their share.
func (a *artifacts) bundle(name, image, version, compat string, secver int) (string, error) {
	out := filepath.Join(a.work, name+".otab")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	err := run(a.otadHst, "bundle", "create", "-compatible", compat, "-version", version,
		"-security-version", fmt.Sprint(secver), "-image", "rootfs="+a.slots[image], "-key", a.signKey, "-o", out)
	return out, err
}

func (m *machine) give(bundlePath string) error {
	return run("cp", bundlePath, filepath.Join(m.share(), filepath.Base(bundlePath)))
}

func (m *machine) stepLog() string {
	b, _ := os.ReadFile(filepath.Join(m.share(), "step.log"))
	o, _ := os.ReadFile(filepath.Join(m.share(), "otad.log"))
	return "step.log:\n" + tail(string(b), 15) + "\notad.log:\n" + tail(string(o), 15)
}

// scenGoodUpdate (scenario 1): install v2 in the guest on A → otad arms and
// reboots → real U-Boot boots B as a trial → health passes → commit → a
// further boot is B with no env write.
func scenGoodUpdate(ctx context.Context, a *artifacts, r *result) error {
	b2, err := a.bundle("v2", "v2", "2.0", compatible, 2)
	if err != nil {
		return err
	}
	m, err := a.newMachine("good-update", a.slots["v1"], a.slots["v1"], engineRedundant, firstBootEnv(a))
	if err != nil {
		return err
	}
	if err := m.give(b2); err != nil {
		return err
	}
	err = m.onBoot(guestWait + `
if [ "$slot" = A ] && once install; then
	wait_daemon || { ev "error daemon-not-ready"; exit 1; }
	settled; status_to /host/status-A.json
	ev "install-start"
	otad install /host/v2.otab >/host/install.log 2>&1
	ev "install rc=$?"
fi
if [ "$slot" = B ]; then
	wait_daemon && settled
	n=$(grep -c '^boot ' /host/events)
	status_to /host/status-B-$n.json
	ev "status-B n=$n"
	if once reboot-after-commit; then
		dd if=/dev/mtd0 of=/host/env-before-reboot.bin bs=256k skip=256 count=2 2>/dev/null
		reboot
	fi
fi
`)
	if err != nil {
		return err
	}
	if err := m.start(); err != nil {
		return err
	}
	defer m.cut()
	_, n, err := m.waitEvent(ctx, 0, 90*time.Second, func(e event) bool { return e.kind == "install" || e.kind == "error" })
	if err != nil {
		return fmt.Errorf("no install result: %w\n%s", err, m.stepLog())
	}
	if ev := m.events()[n-1]; ev.kind != "install" || ev.fields["rc"] != "0" {
		il, _ := os.ReadFile(filepath.Join(m.share(), "install.log"))
		return fmt.Errorf("otad install failed: %s\n%s\n%s", ev.raw, il, m.stepLog())
	}
	_, n, err = m.waitEvent(ctx, n, 2*time.Minute, isBoot("B", "v2"))
	if err != nil {
		return fmt.Errorf("slot B did not boot after the install: %w\n%s", err, tail(m.console(), 15))
	}
	trialEnv, err := m.guestEnv()
	if err != nil {
		return err
	}
	if err := expectEnv("trial boot of B", trialEnv, "otad_slot", "B", "otad_prev", "A", "upgrade_available", "1", "bootcount", "1"); err != nil {
		return err
	}
	ev, n, err := m.waitEvent(ctx, n, 2*time.Minute, func(e event) bool { return e.kind == "status-B" })
	if err != nil {
		return fmt.Errorf("no settled status on B: %w\n%s", err, m.stepLog())
	}
	st, err := m.status("status-B-" + ev.fields["n"] + ".json")
	if err != nil {
		return err
	}
	if st.BootSlot != "B" || st.TrialBoot || !goodState(st.slotProp("B", "state")) {
		return fmt.Errorf("otad status after the trial boot: slot %s trial %v B state %q last error %q", st.BootSlot, st.TrialBoot, st.slotProp("B", "state"), st.LastError)
	}
	// the reboot after the commit: B again, and the env bank not rewritten
	if _, _, err = m.waitEvent(ctx, n, 90*time.Second, isBoot("B", "v2")); err != nil {
		return fmt.Errorf("slot B did not boot again after the commit: %w", err)
	}
	committed, err := os.ReadFile(filepath.Join(m.share(), "env-at-boot.bin"))
	if err != nil {
		return err
	}
	beforeReboot, err := os.ReadFile(filepath.Join(m.share(), "env-before-reboot.bin"))
	if err != nil {
		return err
	}
	if string(beforeReboot) != string(committed) {
		return fmt.Errorf("u-boot wrote the environment while booting the committed slot")
	}
	if _, _, err = m.waitEvent(ctx, n, 90*time.Second, func(e event) bool { return e.kind == "status-B" }); err != nil {
		return err
	}
	ge, err := m.guestEnv()
	if err != nil {
		return err
	}
	if err := expectEnv("after commit", ge, "otad_slot", "B", "otad_prev", "A", "upgrade_available", "0", "bootcount", "0"); err != nil {
		return err
	}
	m.cut()
	r.boots = m.ubootStarts()
	after, err := m.readEnvBank()
	if err != nil {
		return err
	}
	if string(after) != string(committed) {
		return fmt.Errorf("the environment changed after the boot of the committed slot")
	}
	want, _ := fileHash(a.slots["v2"])
	got, err := m.partHash(3)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("slot B content %s is not the v2 image %s", got[:12], want[:12])
	}
	a.committedB = m
	return nil
}

// readEnvBank returns the env area(s) of bank 1 as the host sees them.
func (m *machine) readEnvBank() ([]byte, error) {
	b, err := os.ReadFile(m.envFlash())
	if err != nil {
		return nil, err
	}
	return b[:0x80000], nil
}

// firstBootEnv is a factory-fresh board: A active, nothing armed.
func firstBootEnv(a *artifacts) *bootenv.Env {
	return boardEnvFor(engineRedundant, "otad_slot", "A", "otad_prev", "A", "upgrade_available", "0", "bootcount", "0", "bootlimit", "3")
}

// scenBadUpdate (scenario 2 with the engine): install a bundle whose rootfs
// cannot boot; real U-Boot counts to bootlimit and falls back to A; otad on
// A reports the rollback and marks B bad.
func scenBadUpdate(ctx context.Context, a *artifacts, r *result) error {
	bb, err := a.bundle("v2-broken", "v2-broken", "2.0-broken", compatible, 2)
	if err != nil {
		return err
	}
	m, err := a.newMachine("bad-update", a.slots["v1"], a.slots["v1"], engineRedundant, firstBootEnv(a))
	if err != nil {
		return err
	}
	if err := m.give(bb); err != nil {
		return err
	}
	err = m.onBoot(guestWait + `
n=$(grep -c '^boot ' /host/events)
if [ "$slot" = A ] && [ "$n" = 1 ]; then
	wait_daemon || { ev "error daemon-not-ready"; exit 1; }
	settled
	otad install /host/v2-broken.otab >/host/install.log 2>&1
	ev "install rc=$?"
elif [ "$slot" = A ]; then
	wait_daemon && settled
	status_to /host/status-after.json
	ev "status-after n=$n"
fi
`)
	if err != nil {
		return err
	}
	if err := m.start(); err != nil {
		return err
	}
	defer m.cut()
	ev, n, err := m.waitEvent(ctx, 0, 90*time.Second, func(e event) bool { return e.kind == "install" || e.kind == "error" })
	if err != nil || ev.fields["rc"] != "0" {
		il, _ := os.ReadFile(filepath.Join(m.share(), "install.log"))
		return fmt.Errorf("install: %v %s\n%s\n%s", err, ev.raw, il, m.stepLog())
	}
	if _, _, err = m.waitEvent(ctx, n, 4*time.Minute, func(e event) bool { return e.kind == "status-after" }); err != nil {
		return fmt.Errorf("no report after the fallback: %w\n%s\n%s", err, m.stepLog(), tail(m.console(), 10))
	}
	for _, e := range m.events() {
		if e.kind == "boot" && e.fields["slot"] == "B" {
			return fmt.Errorf("broken slot B reached userspace: %s", e.raw)
		}
	}
	st, err := m.status("status-after.json")
	if err != nil {
		return err
	}
	if st.BootSlot != "A" || st.slotProp("B", "state") != "bad" {
		return fmt.Errorf("otad after the fallback: boot slot %s, B state %q, last error %q", st.BootSlot, st.slotProp("B", "state"), st.LastError)
	}
	r.detail = "otad: " + st.LastError
	ge, err := m.guestEnv()
	if err != nil {
		return err
	}
	if err := expectEnv("after the fallback", ge, "otad_slot", "A", "upgrade_available", "0", "otad_failed", "B"); err != nil {
		return err
	}
	m.cut()
	r.boots = m.ubootStarts()
	if r.boots != 5 {
		return fmt.Errorf("U-Boot started %d times, want 5 (A, 3 trials of B, fallback to A)", r.boots)
	}
	want, _ := fileHash(a.slots["v1"])
	if got, err := m.partHash(2); err != nil || got != want {
		return fmt.Errorf("slot A is no longer the v1 image (%v)", err)
	}
	return nil
}

// scenRefused (scenario 6): on the device left by good-update (B committed,
// security floor raised by v2), a bundle below the floor and a bundle for
// another board are refused in the guest, and nothing is written: the
// inactive slot A and the env bank stay byte-identical.
func scenRefused(ctx context.Context, a *artifacts, r *result) error {
	m := a.committedB
	if m == nil {
		return fmt.Errorf("needs the device good-update leaves (good-update did not pass)")
	}
	old, err := a.bundle("v1-old", "v1", "1.5", compatible, 1)
	if err != nil {
		return err
	}
	wrong, err := a.bundle("wrong-board", "v1", "3.0", "some-other-board", 3)
	if err != nil {
		return err
	}
	for _, b := range []string{old, wrong} {
		if err := m.give(b); err != nil {
			return err
		}
	}
	hashA, err := m.partHash(2)
	if err != nil {
		return err
	}
	envBefore, err := m.readEnvBank()
	if err != nil {
		return err
	}
	err = m.onBoot(guestWait + `
if once refused; then
	wait_daemon && settled
	otad install /host/v1-old.otab >/host/install-old.log 2>&1; ev "install-old rc=$?"
	otad install /host/wrong-board.otab >/host/install-wrong.log 2>&1; ev "install-wrong rc=$?"
	settled; status_to /host/status-refused.json; ev "refused-done"
fi
`)
	if err != nil {
		return err
	}
	first := len(m.events())
	if err := m.start(); err != nil {
		return err
	}
	defer m.cut()
	if _, _, err := m.waitEvent(ctx, first, 2*time.Minute, func(e event) bool { return e.kind == "refused-done" }); err != nil {
		return fmt.Errorf("%w\n%s", err, m.stepLog())
	}
	var notes []string
	for _, e := range m.events()[first:] {
		switch e.kind {
		case "install-old", "install-wrong":
			logName := map[string]string{"install-old": "install-old.log", "install-wrong": "install-wrong.log"}[e.kind]
			msg, _ := os.ReadFile(filepath.Join(m.share(), logName))
			if e.fields["rc"] == "0" {
				return fmt.Errorf("%s: installed, want refused: %s", e.kind, msg)
			}
			note := e.kind + ": " + strings.TrimSpace(tail(string(msg), 1))
			if e.fields["rc"] != "5" {
				// otad install -h documents 5 for a bad bundle (signature,
				// compatible, downgrade); shown, not hidden.
				note += " [exit " + e.fields["rc"] + ", documented 5]"
			}
			notes = append(notes, note)
		}
	}
	st, err := m.status("status-refused.json")
	if err != nil {
		return err
	}
	if st.BootSlot != "B" || st.Operation != "idle" || !goodState(st.slotProp("B", "state")) {
		return fmt.Errorf("status after the refusals: slot %s op %s B %q", st.BootSlot, st.Operation, st.slotProp("B", "state"))
	}
	m.cut()
	r.boots = m.ubootStarts()
	if h, err := m.partHash(2); err != nil || h != hashA {
		return fmt.Errorf("inactive slot A changed although both bundles were refused (%v)", err)
	}
	envAfter, err := m.readEnvBank()
	if err != nil {
		return err
	}
	if string(envAfter) != string(envBefore) {
		return fmt.Errorf("the environment changed although both bundles were refused")
	}
	r.detail = strings.Join(notes, " / ")
	return nil
}

// goodState: otad reports the committed, booted slot as "active" (a
// committed slot not booted is "good").
func goodState(s string) bool { return s == "active" || s == "good" }
