package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Scenarios of the systemd tier: otad runs as otad.service, the CLI talks
// to it over the real system bus, the health confirmation is
// boot-complete.target and PID 1 drives the i6300esb (RuntimeWatchdogSec).

// sysStep is the per-boot step of the systemd rollback scenarios: on the
// first boot of A install the bundle; on every later boot of A report otad's
// view once it has settled. Boots of B only leave otad's journal behind.
func sysStep(bundle string) string {
	return guestWait + guestJournal + `
n=$(grep -c '^boot ' /host/events)
if [ "$slot" = A ] && [ "$n" = 1 ]; then
	wait_daemon || { ev "error daemon-not-ready"; exit 1; }
	settled; status_to /host/status-A.json
	systemctl show -p Type,ActiveState,SubState,NRestarts otad.service >/host/otad-unit-A.txt
	ev "install-start"
	otad install /host/` + bundle + ` >/host/install.log 2>&1
	ev "install rc=$?"
elif [ "$slot" = B ]; then
	journalctl -f -o short-monotonic -u otad.service >>/host/otad-journal-B-$n.log 2>&1 &
	wait
elif [ "$slot" = A ]; then
	wait_daemon && settled
	status_to /host/status-after.json
	journalctl -o short-monotonic -u otad.service >/host/otad-journal-A-$n.log 2>&1
	journal_dump rollback-A-$n
	ev "status-after n=$n"
fi
`
}

// sysRollback runs the common part of health-fail and watchdog-hang: a
// systemd board on sys-v1 installs the given image as B, and the scenario
// must end on A with otad reporting the rollback. It returns the machine
// (stopped) and otad's final status; check inspects the events of B's boots.
func sysRollback(ctx context.Context, a *artifacts, r *result, name, image string, wantBoots int, timeout time.Duration, decidedOnB bool) (*machine, *guestStatus, error) {
	v1, err := a.sysSlot("sys-v1")
	if err != nil {
		return nil, nil, err
	}
	if _, err := a.sysSlot(image); err != nil {
		return nil, nil, err
	}
	b, err := a.bundle(image, image, "2.0-"+image, compatible, 2)
	if err != nil {
		return nil, nil, err
	}
	m, err := a.newSysMachine(name, v1, v1)
	if err != nil {
		return nil, nil, err
	}
	if err := m.give(b); err != nil {
		return nil, nil, err
	}
	if err := m.onBoot(sysStep(filepath.Base(b))); err != nil {
		return nil, nil, err
	}
	if err := m.followJournal("rollback", "rolled-back"); err != nil {
		return nil, nil, err
	}
	if err := m.start(); err != nil {
		return nil, nil, err
	}
	defer m.cut()
	ev, n, err := m.waitEvent(ctx, 0, 3*time.Minute, func(e event) bool { return e.kind == "install" || e.kind == "error" })
	if err != nil || ev.fields["rc"] != "0" {
		il, _ := os.ReadFile(filepath.Join(m.share(), "install.log"))
		return nil, nil, fmt.Errorf("install: %v %s\n%s\n%s\n%s", err, ev.raw, il, m.stepLog(), tail(m.console(), 10))
	}
	first := m.events()[0]
	if first.fields["init"] != "systemd" || first.fields["wd_state"] != "active" || first.fields["wd_timeout"] != "10" {
		return nil, nil, fmt.Errorf("systemd did not arm the i6300esb on A: %s", first.raw)
	}
	unit, _ := os.ReadFile(filepath.Join(m.share(), "otad-unit-A.txt"))
	if !strings.Contains(string(unit), "Type=notify") || !strings.Contains(string(unit), "SubState=running") {
		return nil, nil, fmt.Errorf("otad is not running as otad.service: %s", unit)
	}
	if _, _, err = m.waitEvent(ctx, n, timeout, func(e event) bool { return e.kind == "status-after" }); err != nil {
		return nil, nil, fmt.Errorf("no report on A after the rollback: %w\n%s\n%s", err, m.sysLogs(), tail(m.console(), 10))
	}
	st, err := m.status("status-after.json")
	if err != nil {
		return nil, nil, err
	}
	if st.BootSlot != "A" || st.slotProp("B", "state") != "bad" || st.TrialBoot {
		return nil, nil, fmt.Errorf("otad after the rollback: boot slot %s, B state %q, trial %v, last error %q", st.BootSlot, st.slotProp("B", "state"), st.TrialBoot, st.LastError)
	}
	// issue 20: the rollback is an err entry with its MESSAGE_ID and fields,
	// logged on B (otad decided) or on A (U-Boot decided); the MESSAGE_ID
	// query finds it in the same boot's journal.
	// When otad decided on B (health-fail) the entry lives only in B's
	// volatile journal, which the followers must get out before the reboot
	// otad starts at once; that is reported, not asserted (on a loaded host
	// it was lost). On A (watchdog-hang) it is asserted.
	rb, err := m.checkJournalEvent("jerr-rollback-*.json", "jid-rollback-*.json", "rolled-back", journalFields...)
	switch {
	case err == nil:
		r.detail = "journal: rolled-back " + fieldsOf(rb, journalFields...)
	case decidedOnB:
		r.detail = "journal of B not captured before its reboot: " + err.Error()
	default:
		return nil, nil, fmt.Errorf("journald: %w", err)
	}
	fmt.Printf("vmtest: %s: %s\n", name, r.detail)
	ge, err := m.guestEnv()
	if err != nil {
		return nil, nil, err
	}
	if err := expectEnv("on A after the rollback", ge, "otad_slot", "A", "otad_prev", "A", "upgrade_available", "0", "bootcount", "0", "otad_failed", "B"); err != nil {
		return nil, nil, err
	}
	m.cut()
	r.boots = m.ubootStarts()
	if r.boots != wantBoots {
		return nil, nil, fmt.Errorf("U-Boot started %d times, want %d", r.boots, wantBoots)
	}
	he, err := m.readEnv()
	if err != nil {
		return nil, nil, err
	}
	if err := expectEnv("host flash1.img", he, "otad_slot", "A", "upgrade_available", "0", "otad_failed", "B"); err != nil {
		return nil, nil, err
	}
	// slot contents: A untouched, B exactly the installed image
	for part, img := range map[int]string{2: "sys-v1", 3: image} {
		want, _ := fileHash(a.slots[img])
		got, err := m.partHash(part)
		if err != nil {
			return nil, nil, err
		}
		if got != want {
			return nil, nil, fmt.Errorf("partition %d is not the %s image", part, img)
		}
	}
	return m, st, nil
}

// sysLogs is the step log and otad's journals the guest copied, for failures.
func (m *machine) sysLogs() string {
	var b strings.Builder
	b.WriteString(m.stepLog())
	logs, _ := filepath.Glob(filepath.Join(m.share(), "otad-journal-*.log"))
	for _, l := range logs {
		t, _ := os.ReadFile(l)
		fmt.Fprintf(&b, "\n%s:\n%s", filepath.Base(l), tail(string(t), 12))
	}
	return b.String()
}

// bootsOf returns the boot events of slot with image.
func (m *machine) bootsOf(slot, image string) []event {
	var out []event
	for _, e := range m.events() {
		if isBoot(slot, image)(e) {
			out = append(out, e)
		}
	}
	return out
}

// scenHealthFail (scenario 3): B boots and reaches userspace, but a unit
// RequiredBy=boot-complete.target fails; otad's start job for the target
// ends "dependency", otad marks B bad (env: fallback) and reboots through
// systemd; A boots and otad reports the rollback naming the unit.
func scenHealthFail(ctx context.Context, a *artifacts, r *result) error {
	const failing = "vmtest-app-selftest.service"
	// U-Boot: A, the one trial of B, A again (otad falls back itself, no
	// further trials are counted)
	m, st, err := sysRollback(ctx, a, r, "health-fail", "sys-v2-unhealthy", 3, 5*time.Minute, true)
	if err != nil {
		return err
	}
	if n := len(m.bootsOf("B", "sys-v2-unhealthy")); n != 1 {
		return fmt.Errorf("slot B booted %d times, want one trial ended by otad", n)
	}
	// otad decided the rollback itself on B; on A it reports B bad with
	// the reason it recorded there.
	if !strings.Contains(st.LastError, failing) || !strings.Contains(st.slotProp("B", "reason"), failing) {
		return fmt.Errorf("the rollback reason does not name %s: last error %q, B reason %q", failing, st.LastError, st.slotProp("B", "reason"))
	}
	r.detail = "otad: " + st.LastError + "; " + r.detail
	return nil
}

// scenWatchdogHang (scenario 4): in every trial boot of B a runaway
// realtime task starves userspace (PID 1 included) before otad can commit;
// systemd stops petting the i6300esb, the watchdog resets the board, the
// boot script counts, and after bootlimit trials U-Boot falls back to A,
// where otad reports the rollback.
func scenWatchdogHang(ctx context.Context, a *artifacts, r *result) error {
	// U-Boot: A, three trials of B, the fallback to A
	m, st, err := sysRollback(ctx, a, r, "watchdog-hang", "sys-v2-hang", 5, 8*time.Minute, false)
	if err != nil {
		return err
	}
	boots := m.bootsOf("B", "sys-v2-hang")
	hangs := 0
	for _, e := range m.events() {
		if e.kind == "hang-start" && e.fields["slot"] == "B" {
			hangs++
		}
	}
	if len(boots) != 3 || hangs != 3 {
		return fmt.Errorf("slot B reached userspace %d times and hung %d times, want 3 and 3", len(boots), hangs)
	}
	// no otad decision: A learned of the rollback from the env U-Boot wrote
	if !strings.HasPrefix(st.LastError, "rolled back") || st.slotProp("B", "reason") == "" {
		return fmt.Errorf("otad on A does not report the rollback: last error %q, B reason %q", st.LastError, st.slotProp("B", "reason"))
	}
	for _, e := range boots {
		if e.fields["wd_state"] != "active" || e.fields["wd_timeout"] != "10" {
			return fmt.Errorf("the watchdog was not armed by systemd in the trial boot: %s", e.raw)
		}
	}
	// the hang is in userspace and the resets came from the hardware: the
	// kernel never panicked or oopsed, and it restarted the board only once,
	// for otad's reboot after the install (the console is searched only for
	// these negative checks)
	con := m.console()
	for _, bad := range []string{"Kernel panic", "Internal error: Oops", "BUG:"} {
		if strings.Contains(con, bad) {
			return fmt.Errorf("the kernel reported %q: the reset was not the watchdog ending a userspace hang", bad)
		}
	}
	if n := strings.Count(con, "reboot: Restarting system"); n != 1 {
		return fmt.Errorf("the kernel restarted the board %d times, want 1 (otad's reboot after the install; the trials end by watchdog reset)", n)
	}
	r.detail = "hang → next kernel start " + hangGaps(m.events()) + "; otad: " + st.LastError + "; " + r.detail
	return nil
}

// hangGaps reports, for each hang, the guest wall-clock time (PL031 RTC,
// whole seconds at boot) from the hang to the start of the next kernel:
// the watchdog timeout plus U-Boot. Shown, not asserted.
func hangGaps(evs []event) string {
	var out []string
	for i, e := range evs {
		if e.kind != "hang-start" {
			continue
		}
		var th float64
		if _, err := fmt.Sscan(e.fields["t"], &th); err != nil {
			continue
		}
		for _, b := range evs[i+1:] {
			if b.kind != "boot" {
				continue
			}
			var tb, up float64
			_, err1 := fmt.Sscan(b.fields["t"], &tb)
			_, err2 := fmt.Sscan(b.fields["uptime"], &up)
			if err1 == nil && err2 == nil {
				out = append(out, fmt.Sprintf("%.0fs", tb-up-th))
			}
			break
		}
	}
	return strings.Join(out, ", ") + " (RuntimeWatchdogSec=10s)"
}

// scenSysGoodUpdate (scenario 1 in the systemd tier): the health target
// (the example unit and the image's self-test) passes, otad commits.
func scenSysGoodUpdate(ctx context.Context, a *artifacts, r *result) error {
	v1, err := a.sysSlot("sys-v1")
	if err != nil {
		return err
	}
	if _, err := a.sysSlot("sys-v2"); err != nil {
		return err
	}
	b, err := a.bundle("sys-v2", "sys-v2", "2.0-sys", compatible, 2)
	if err != nil {
		return err
	}
	m, err := a.newSysMachine("sys-good-update", v1, v1)
	if err != nil {
		return err
	}
	if err := m.give(b); err != nil {
		return err
	}
	err = m.onBoot(guestWait + guestJournal + `
n=$(grep -c '^boot ' /host/events)
if [ "$slot" = A ] && once install; then
	wait_daemon || { ev "error daemon-not-ready"; exit 1; }
	settled
	systemctl show -p TasksMax,MemoryMax,IPAddressDeny,PrivateTmp otad.service >/host/otad-limits.txt
	# issue 20: an install that fails while writing B (the bundle cut in half)
	size=$(stat -c %s /host/sys-v2.otab)
	head -c $((size / 2)) /host/sys-v2.otab >/tmp/cut.otab
	otactl install /tmp/cut.otab >/host/install-cut.log 2>&1
	ev "install-cut rc=$?"
	settled
	journal_dump failed
	# issue 19: a bundle in the caller's /tmp, which otad.service
	# (PrivateTmp=yes) cannot see by name; systemctl status polled meanwhile
	cp /host/sys-v2.otab /tmp/x.otab
	( while :; do systemctl status --no-pager otad.service; echo ---; sleep 0.3; done ) >/host/status-during.txt 2>&1 &
	poll=$!
	otactl install -no-reboot /tmp/x.otab >/host/install.log 2>&1
	rc=$?
	kill $poll
	cat /sys/fs/cgroup/system.slice/otad.service/memory.peak >/host/otad-memory-peak.txt 2>&1
	ev "install rc=$rc"
	[ $rc = 0 ] && otactl reboot >>/host/install.log 2>&1
elif [ "$slot" = B ]; then
	journalctl -f -o short-monotonic -u otad.service >>/host/otad-journal-B-$n.log 2>&1 &
	wait_daemon && settled
	status_to /host/status-B-$n.json
	systemctl show -p Id,ActiveState boot-complete.target otad-health-example.service vmtest-app-selftest.service >/host/boot-complete-$n.txt
	ev "status-B n=$n"
fi
`)
	if err != nil {
		return err
	}
	if err := m.start(); err != nil {
		return err
	}
	defer m.cut()
	ev, n, err := m.waitEvent(ctx, 0, 5*time.Minute, func(e event) bool { return e.kind == "install" || e.kind == "error" })
	if err != nil || ev.fields["rc"] != "0" {
		il, _ := os.ReadFile(filepath.Join(m.share(), "install.log"))
		return fmt.Errorf("otactl install /tmp/x.otab (otad.service with PrivateTmp=yes): %v %s\n%s\n%s", err, ev.raw, il, m.stepLog())
	}
	notes, err := m.checkInstallObservability()
	if err != nil {
		return err
	}
	ev, _, err = m.waitEvent(ctx, n, 4*time.Minute, func(e event) bool { return e.kind == "status-B" })
	if err != nil {
		return fmt.Errorf("no settled status on B: %w\n%s\n%s", err, m.sysLogs(), tail(m.console(), 10))
	}
	st, err := m.status("status-B-" + ev.fields["n"] + ".json")
	if err != nil {
		return err
	}
	if st.BootSlot != "B" || st.TrialBoot || !goodState(st.slotProp("B", "state")) {
		return fmt.Errorf("otad on B: slot %s trial %v B state %q last error %q", st.BootSlot, st.TrialBoot, st.slotProp("B", "state"), st.LastError)
	}
	bc, _ := os.ReadFile(filepath.Join(m.share(), "boot-complete-"+ev.fields["n"]+".txt"))
	// the target and both units that gate it (the example health unit
	// from systemd/ and the image's self-test) ran and passed
	if strings.Count(string(bc), "ActiveState=active") != 3 {
		return fmt.Errorf("boot-complete.target and its required units on B:\n%s", bc)
	}
	ge, err := m.guestEnv()
	if err != nil {
		return err
	}
	if err := expectEnv("trial boot of B", ge, "otad_slot", "B", "upgrade_available", "1", "bootcount", "1"); err != nil {
		return err
	}
	m.cut()
	r.boots = m.ubootStarts()
	he, err := m.readEnv()
	if err != nil {
		return err
	}
	if err := expectEnv("host flash1.img after the commit", he, "otad_slot", "B", "otad_prev", "A", "upgrade_available", "0", "bootcount", "0"); err != nil {
		return err
	}
	if r.boots != 2 {
		return fmt.Errorf("U-Boot started %d times, want 2 (A, the trial of B)", r.boots)
	}
	want, _ := fileHash(a.slots["sys-v2"])
	if got, err := m.partHash(3); err != nil || got != want {
		return fmt.Errorf("slot B is not the sys-v2 image (%v)", err)
	}
	r.detail = notes
	fmt.Printf("vmtest: sys-good-update: %s\n", notes)
	return nil
}

// journalFields are the otad fields every key event carries (issue 20).
var journalFields = []string{"OTAD_TX", "OTAD_SLOT", "OTAD_VERSION", "OTAD_PHASE"}

// checkInstallObservability checks, on A of sys-good-update, the failed
// install's journal entries (issue 20), the STATUS= progress line that
// `systemctl status otad` printed during the good install, and reports the
// unit's limits and otad's peak memory as the guest saw them.
func (m *machine) checkInstallObservability() (string, error) {
	cut, _ := os.ReadFile(filepath.Join(m.share(), "install-cut.log"))
	var rc string
	for _, e := range m.events() {
		if e.kind == "install-cut" {
			rc = e.fields["rc"]
		}
	}
	if rc == "" || rc == "0" {
		return "", fmt.Errorf("the install of a bundle cut in half did not fail (rc %q): %s", rc, cut)
	}
	failed, err := m.checkJournalEvent("jerr-failed.json", "jid-failed.json", "install-failed", journalFields...)
	if err != nil {
		return "", fmt.Errorf("journald after a failed install: %w\notactl: %s", err, cut)
	}
	if failed["OTAD_SLOT"] != "B" {
		return "", fmt.Errorf("install-failed names slot %q, want B", failed["OTAD_SLOT"])
	}
	if x, _ := os.ReadFile(filepath.Join(m.share(), "jx-failed.txt")); !strings.Contains(string(x), "Defined-By: otad") {
		return "", fmt.Errorf("journalctl -x shows no catalog entry for otad's failure:\n%s", tail(string(x), 12))
	}
	during, _ := os.ReadFile(filepath.Join(m.share(), "status-during.txt"))
	all, progress := progressStatus(string(during))
	if progress == "" {
		return "", fmt.Errorf("systemctl status otad during the install showed no progress line; Status: lines seen: %q", all)
	}
	limits, _ := os.ReadFile(filepath.Join(m.share(), "otad-limits.txt"))
	peak, _ := os.ReadFile(filepath.Join(m.share(), "otad-memory-peak.txt"))
	var peakMiB string
	if n, err := strconv.ParseInt(strings.TrimSpace(string(peak)), 10, 64); err == nil {
		peakMiB = fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	} else {
		peakMiB = strings.TrimSpace(string(peak))
	}
	return fmt.Sprintf("otactl install /tmp/x.otab ok; journal: install-failed %s; status: %q; unit: %s; memory.peak %s",
		fieldsOf(failed, journalFields...), progress, strings.Join(strings.Fields(string(limits)), " "), peakMiB), nil
}
