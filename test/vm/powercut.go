package main

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// scenPowerCuts (scenario 5), on the redundant NOR env: installs run back and forth between the slots
// (v1 image → v2 image → v1 image ...) and QEMU is killed at random moments
// between `otad install` starting and the new slot being committed, which
// spans download, verify, slot write, read-back, the arm env write, the
// reboot, U-Boot's trial count and the commit env write. After every cut the
// board is powered on again and must settle (otad idle, no trial) on a slot
// whose bytes are a complete image; at the end one more install must
// succeed uncut.
func scenPowerCuts(ctx context.Context, a *artifacts, r *result) error {
	const cuts = 20
	for _, b := range [][4]string{{"v2", "v2", "2.0"}, {"v3", "v1", "3.0"}} {
		if _, err := a.bundle(b[0], b[1], b[2], compatible, 2); err != nil {
			return err
		}
	}
	known := map[string]string{}
	for _, img := range []string{"v1", "v2"} {
		h, err := fileHash(a.slots[img])
		if err != nil {
			return err
		}
		known[h] = img
	}
	// The redundant env (source-built U-Boot, native bootcount): power-fail
	// safety is claimed only for two copies. With the single copy the other
	// engine scenarios use, a cut during its erase or program leaves no valid
	// env at all ("bootenv: no valid environment copy"), which a run of this
	// scenario hit.
	m, err := a.newMachine("power-cuts", a.slots["v1"], a.slots["v1"], true,
		boardEnvFor(true, "otad_slot", "A", "otad_prev", "A", "upgrade_available", "0", "bootcount", "0", "bootlimit", "3"))
	if err != nil {
		return err
	}
	for _, b := range []string{"v2", "v3"} {
		if err := m.give(filepath.Join(a.work, b+".otab")); err != nil {
			return err
		}
	}
	err = m.onBoot(guestWait + `
wait_daemon || { ev "error daemon-not-ready"; exit 1; }
settled || { ev "error not-settled"; exit 1; }
status_to /host/status-last.json
img=$(cat /etc/otad-image)
ev "ready slot=$slot image=$img"
while [ ! -e /host/go ]; do sleep 0.2; done
rm -f /host/go
if [ "$img" = v1 ]; then b=v2; else b=v3; fi
ev "install-start bundle=$b"
otad install /host/$b.otab >/host/install.log 2>&1
ev "install rc=$?"
`)
	if err != nil {
		return err
	}
	defer m.cut()
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	fmt.Printf("vmtest: power-cuts seed %d\n", seed)

	pos := 0
	// ready powers the board on if needed and waits for it to settle, then
	// checks the invariant: the booted slot holds a complete image.
	ready := func(what string) (event, error) {
		if !m.running() {
			m.cmd = nil
			if err := m.start(); err != nil {
				return event{}, err
			}
		}
		ev, n, err := m.waitEvent(ctx, pos, 5*time.Minute, func(e event) bool { return e.kind == "ready" || e.kind == "error" })
		if err != nil {
			return ev, fmt.Errorf("%s: board did not settle: %w%s\n%s\n%s", what, err, m.staleHint(), m.stepLog(), tail(m.console(), 12))
		}
		pos = n
		if ev.kind == "error" {
			return ev, fmt.Errorf("%s: %s\n%s", what, ev.raw, m.stepLog())
		}
		part := map[string]int{"A": 2, "B": 3}[ev.fields["slot"]]
		h, err := m.partHash(part)
		if err != nil {
			return ev, err
		}
		if img, ok := known[h]; !ok || img != ev.fields["image"] {
			return ev, fmt.Errorf("%s: booted slot %s (reports %s) holds no complete image (sha256 %s)", what, ev.fields["slot"], ev.fields["image"], h[:12])
		}
		return ev, nil
	}
	install := func() (time.Time, error) {
		if err := writeFile(filepath.Join(m.share(), "go"), "", 0o644); err != nil {
			return time.Time{}, err
		}
		_, n, err := m.waitEvent(ctx, pos, time.Minute, func(e event) bool { return e.kind == "install-start" })
		if err != nil {
			return time.Time{}, fmt.Errorf("install did not start: %w\n%s", err, m.stepLog())
		}
		pos = n
		return time.Now(), nil
	}

	// Round 0, uncut: how long does a whole cycle take here?
	ev0, err := ready("first boot")
	if err != nil {
		return err
	}
	t0, err := install()
	if err != nil {
		return err
	}
	ev1, err := ready("uncut install")
	if err != nil {
		return err
	}
	if ev1.fields["slot"] == ev0.fields["slot"] {
		return fmt.Errorf("uncut install did not switch slots (%s → %s)\n%s", ev0.raw, ev1.raw, m.stepLog())
	}
	window := time.Since(t0)
	fmt.Printf("vmtest: power-cuts: one install cycle takes %.1fs; cutting at random moments in it\n", window.Seconds())

	var at []time.Duration
	for i := 0; i < cuts; i++ {
		if i > 0 {
			if _, err := ready(fmt.Sprintf("after cut %d at %v", i, at[i-1])); err != nil {
				return err
			}
			r.cuts = i // survived: settled on a complete image
		}
		if _, err := install(); err != nil {
			return err
		}
		d := time.Duration(rng.Int63n(int64(window)))
		time.Sleep(d)
		m.cut()
		at = append(at, d)
	}
	if _, err := ready(fmt.Sprintf("after cut %d at %v", cuts, at[cuts-1])); err != nil {
		return err
	}
	r.cuts = cuts
	// can install again, uncut
	if _, err := install(); err != nil {
		return err
	}
	evB, err := ready("final install")
	if err != nil {
		return err
	}
	m.cut()
	r.boots = m.ubootStarts()
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	var ms []string
	for _, d := range at {
		ms = append(ms, fmt.Sprintf("%.1f", d.Seconds()))
	}
	r.detail = fmt.Sprintf("cycle %.0fs, cuts at %ss; final install → slot %s", window.Seconds(), strings.Join(ms, ","), evB.fields["slot"])
	_ = os.Remove(filepath.Join(m.share(), "go"))
	return nil
}

// staleHint names the case seen on these runs: otad logged the commit of a
// trial boot, yet its D-Bus status still says "confirming" (trial) minutes
// later, so the guest never sees a settled state.
func (m *machine) staleHint() string {
	o, _ := os.ReadFile(filepath.Join(m.share(), "otad.log"))
	st, _ := os.ReadFile(filepath.Join(m.share(), "step.log"))
	lines := strings.Split(strings.TrimSpace(string(o)), "\n")
	if len(lines) > 0 && strings.Contains(lines[len(lines)-1], "trial boot confirmed and committed") &&
		strings.Contains(tail(string(st), 25), "operation:  confirming") {
		return " (otad logged the commit but its D-Bus status still reports operation=confirming, trial=true: stale status, not a slot or env problem)"
	}
	return ""
}
