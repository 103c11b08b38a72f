package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The systemd tier: slots whose userland is Debian (mmdebstrap minbase +
// systemd, udev, kmod, dbus, built by setup-systemd.sh) with otad installed
// from the repository's systemd/ directory: otad.service (Type=notify,
// WatchdogSec, hardening), the D-Bus policy, the watchdog drop-in
// (RuntimeWatchdogSec: PID 1 owns the i6300esb) and the example health unit
// RequiredBy=boot-complete.target. The slot boots through the same kernel,
// initramfs, switch_root and boot script as the busybox tier; the root stays
// read-only, otad's state is the data partition mounted at /var/lib/otad.

// sysSlotMiB is the slot partition size of the systemd tier (the Debian
// userland plus kernel and initramfs is about 140 MiB).
const sysSlotMiB = 224

// sysGuestConf is /etc/otad/system.conf in the systemd-tier images: the
// defaults of a systemd board (health = boot-complete.target, watchdog mode
// systemd, reboot through systemd over D-Bus) and the VM's slots.
const sysGuestConf = `[system]
compatible = ` + compatible + `
data-dir = /var/lib/otad
env-config = /etc/fw_env.config
bootlimit = 3
reboot = auto

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
target = boot-complete.target
timeout = 3m
watchdog = systemd
`

// sysSlotSpec is one systemd-tier image variant.
type sysSlotSpec struct {
	name string
	app  bool // ships /etc/vmtest-app.conf, so vmtest-app-selftest.service passes
	hang bool // ships and enables vmtest-hang.service (runaway realtime task)
}

var sysSlotSpecs = map[string]sysSlotSpec{
	"sys-v1":           {name: "sys-v1", app: true},
	"sys-v2":           {name: "sys-v2", app: true},
	"sys-v2-unhealthy": {name: "sys-v2-unhealthy"},
	"sys-v2-hang":      {name: "sys-v2-hang", app: true, hang: true},
}

// sysSlot returns the image of a systemd-tier variant, building it on first
// use (only runs that select a systemd scenario pay for it).
func (a *artifacts) sysSlot(name string) (string, error) {
	if img, ok := a.slots[name]; ok {
		return img, nil
	}
	if err := a.ensureSysRoot(); err != nil {
		return "", err
	}
	s, ok := sysSlotSpecs[name]
	if !ok {
		return "", fmt.Errorf("unknown systemd image %q", name)
	}
	img, err := a.buildSysSlot(s)
	if err != nil {
		return "", fmt.Errorf("systemd slot image %s: %w", name, err)
	}
	a.slots[name] = img
	return img, nil
}

// ensureSysRoot runs setup-systemd.sh once (cached: a second; uncached:
// mmdebstrap, about 2 minutes) and remembers the rootfs directory it prints.
func (a *artifacts) ensureSysRoot() error {
	if a.sysRoot != "" || a.sysErr != nil {
		return a.sysErr
	}
	script := a.sysSetup
	if !filepath.IsAbs(script) {
		script = filepath.Join(a.repo, script)
	}
	t0 := time.Now()
	cmd := exec.Command(script, filepath.Dir(a.cache))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		a.sysErr = fmt.Errorf("%s: %w", script, err)
		return a.sysErr
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	a.sysRoot = lines[len(lines)-1]
	fmt.Printf("vmtest: systemd rootfs %s ready in %.0fs\n", a.sysRoot, time.Since(t0).Seconds())
	return nil
}

func (a *artifacts) buildSysSlot(s sysSlotSpec) (string, error) {
	root := filepath.Join(a.work, "sroot-"+s.name)
	os.RemoveAll(root)
	defer os.RemoveAll(root)
	if err := run("cp", "-a", a.sysRoot, root); err != nil {
		return "", err
	}
	g := filepath.Join(a.repo, "test/vm/guest/systemd")
	sd := filepath.Join(a.repo, "systemd")
	files := []guestFile{
		{filepath.Join(a.cache, "Image"), "boot/Image", 0o644},
		{filepath.Join(a.cache, "initrd.img"), "boot/initrd.img", 0o644},
		{a.otadArm, "usr/bin/otad", 0o755},
		// the product's units, as a package would install them
		{filepath.Join(sd, "otad.service"), "usr/lib/systemd/system/otad.service", 0o644},
		{filepath.Join(sd, "otad-health-example.service"), "usr/lib/systemd/system/otad-health-example.service", 0o644},
		{filepath.Join(sd, "io.otad.Update1.conf"), "usr/share/dbus-1/system.d/io.otad.Update1.conf", 0o644},
		{filepath.Join(sd, "system.conf.d/10-otad-watchdog.conf"), "etc/systemd/system.conf.d/10-otad-watchdog.conf", 0o644},
		// the board's and the harness's parts
		{filepath.Join(g, "50-vmtest-watchdog.conf"), "etc/systemd/system.conf.d/50-vmtest-watchdog.conf", 0o644},
		{filepath.Join(g, "fstab"), "etc/fstab", 0o644},
		{filepath.Join(g, "vmtest-report"), "usr/local/sbin/vmtest-report", 0o755},
		{filepath.Join(g, "vmtest-report.service"), "etc/systemd/system/vmtest-report.service", 0o644},
		{filepath.Join(g, "vmtest-scenario.service"), "etc/systemd/system/vmtest-scenario.service", 0o644},
		{filepath.Join(g, "vmtest-app-selftest.service"), "etc/systemd/system/vmtest-app-selftest.service", 0o644},
		{filepath.Join(g, "vmtest-journal.service"), "etc/systemd/system/vmtest-journal.service", 0o644},
	}
	units := []string{"otad.service", "otad-health-example.service", "vmtest-report.service",
		"vmtest-scenario.service", "vmtest-app-selftest.service", "vmtest-journal.service"}
	if s.hang {
		files = append(files,
			guestFile{filepath.Join(g, "vmtest-hang"), "usr/local/sbin/vmtest-hang", 0o755},
			guestFile{filepath.Join(g, "vmtest-hang.service"), "etc/systemd/system/vmtest-hang.service", 0o644})
		units = append(units, "vmtest-hang.service")
	}
	// the journal catalog (journalctl -x explains otad's key events)
	if cat := filepath.Join(sd, "otad.catalog"); fileExists(cat) {
		files = append(files, guestFile{cat, "usr/lib/systemd/catalog/otad.catalog", 0o644})
	}
	if err := installFiles(root, files); err != nil {
		return "", err
	}
	// one binary, daemon and CLI: otactl is what a shell user types
	if err := os.Symlink("otad", filepath.Join(root, "usr/bin/otactl")); err != nil {
		return "", err
	}
	texts := map[string]string{
		"etc/otad-image":       s.name + "\n",
		"etc/otad/system.conf": sysGuestConf,
		"etc/fw_env.config":    "# U-Boot env in pflash bank 1 (/dev/mtd0 covers both 64 MiB banks)\n/dev/mtd0 0x4000000 0x40000 0x40000\n",
		"etc/machine-id":       "0123456789abcdef0123456789abcdef\n",
		"etc/hostname":         "gateway\n",
	}
	if s.app {
		texts["etc/vmtest-app.conf"] = "image=" + s.name + "\n"
	}
	for path, text := range texts {
		if err := writeFile(filepath.Join(root, path), text, 0o644); err != nil {
			return "", err
		}
	}
	if err := run("cp", "-a", a.keys, filepath.Join(root, "etc/otad/keys")); err != nil {
		return "", err
	}
	// group otad of the D-Bus policy (callers allowed to install)
	gf, err := os.OpenFile(filepath.Join(root, "etc/group"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return "", err
	}
	_, err = gf.WriteString("otad:x:990:\n")
	if cerr := gf.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	// Debian's /sbin/init is an absolute link (/lib/systemd/systemd); the
	// initramfs checks it before switch_root, where "/" is still its own
	// root, so the image carries the equivalent relative link.
	initLink := filepath.Join(root, "usr/sbin/init")
	if err := os.Remove(initLink); err != nil {
		return "", err
	}
	if err := os.Symlink("../lib/systemd/systemd", initLink); err != nil {
		return "", err
	}
	for _, d := range []string{"host", "var/lib/otad"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return "", err
		}
	}
	// systemctl's offline enable: the [Install] sections create the links
	// (RequiredBy= → boot-complete.target.requires/), as on a real image.
	if err := run("systemctl", append([]string{"--root=" + root, "--quiet", "enable"}, units...)...); err != nil {
		return "", err
	}
	img := filepath.Join(a.work, "slot-"+s.name+".ext4")
	os.Remove(img)
	if err := run("mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", root, img, fmt.Sprintf("%dM", sysSlotMiB)); err != nil {
		return "", err
	}
	return img, nil
}

// newSysMachine is a systemd-tier board: larger slots, two vCPUs (systemd
// reaches multi-user in ~24 s instead of ~30 s) and the i6300esb watchdog.
func (a *artifacts) newSysMachine(name, slotA, slotB string) (*machine, error) {
	m, err := a.newMachineSized(name, slotA, slotB, false, firstBootEnv(a), sysSlotMiB)
	if err != nil {
		return nil, err
	}
	m.smp, m.watchdg = 2, true
	return m, nil
}
