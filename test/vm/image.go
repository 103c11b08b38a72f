package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/otadev/otad/internal/bootenv"
)

// artifacts are the inputs every machine shares: what setup.sh cached plus
// what this run built (boot partition, slot images, otad for the guest).
type artifacts struct {
	cache   string // setup.sh's keyed cache directory
	repo    string
	work    string
	qemu    string
	flash0  string
	otadArm string // static arm64 otad for the guest
	otadHst string // host otad (bundles, env)
	boot    string // FAT image, partition 1
	data    string // empty ext4, partition 4
	slots   map[string]string
	keys    string // keyring directory for the guest (public keys)
	signKey string // private key for bundles
	defEnv  *bootenv.Env
}

// Disk layout (MiB): p1 FAT boot at 1, p2 slot A, p3 slot B, p4 data.
const (
	bootMiB = 16
	slotMiB = 96
	dataMiB = 32
)

func run(name string, args ...string) error {
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func writeFile(path, text string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(text), mode)
}

func copyFile(dst, src string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return writeFile(dst, string(b), mode)
}

// buildBoot makes partition 1: FAT with boot.scr compiled from THE boot
// script of the Yocto layer (the file the product ships).
func (a *artifacts) buildBoot() error {
	src := filepath.Join(a.repo, "yocto/meta-otad/recipes-bsp/otad-boot-script/files/boot.cmd")
	scr := filepath.Join(a.work, "boot.scr")
	if err := run("mkimage", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-d", src, scr); err != nil {
		return err
	}
	a.boot = filepath.Join(a.work, "boot.vfat")
	os.Remove(a.boot)
	if err := run("mkfs.vfat", "-C", "-n", "BOOT", a.boot, fmt.Sprint(bootMiB*1024)); err != nil {
		return err
	}
	return run("mcopy", "-i", a.boot, scr, "::boot.scr")
}

// slotSpec describes one rootfs image variant.
type slotSpec struct {
	name   string // image id, written to /etc/otad-image
	broken bool   // no /sbin/init: the initramfs exits, the kernel panics
}

// buildSlot makes an ext4 slot image: kernel + initramfs in /boot, a busybox
// userland with init, dbus-daemon, and the static arm64 otad with its config.
func (a *artifacts) buildSlot(s slotSpec, confText string) (string, error) {
	root := filepath.Join(a.work, "root-"+s.name)
	os.RemoveAll(root)
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "etc/otad", "etc/dbus-1/system.d",
		"usr/share/dbus-1", "proc", "sys", "dev", "run", "tmp", "host", "data", "var/lib/dbus", "boot", "lib"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return "", err
		}
	}
	g := filepath.Join(a.repo, "test/vm/guest")
	type cp struct {
		src, dst string
		mode     os.FileMode
	}
	files := []cp{
		{filepath.Join(a.cache, "Image"), "boot/Image", 0o644},
		{filepath.Join(a.cache, "initrd.img"), "boot/initrd.img", 0o644},
		{filepath.Join(a.cache, "busybox"), "bin/busybox", 0o755},
		{a.otadArm, "usr/bin/otad", 0o755},
		{filepath.Join(g, "inittab"), "etc/inittab", 0o644},
		{filepath.Join(g, "rcS"), "etc/init.d/rcS", 0o755},
		{filepath.Join(g, "scenario"), "etc/init.d/scenario", 0o755},
		{filepath.Join(g, "shutdown"), "etc/init.d/shutdown", 0o755},
		{filepath.Join(g, "otad-supervise"), "usr/sbin/otad-supervise", 0o755},
		{filepath.Join(g, "dbus-system.conf"), "usr/share/dbus-1/system.conf", 0o644},
		{filepath.Join(g, "fw_env.config"), "etc/fw_env.config", 0o644},
		{filepath.Join(a.repo, "systemd/io.otad.Update1.conf"), "etc/dbus-1/system.d/io.otad.Update1.conf", 0o644},
	}
	for _, f := range files {
		if err := copyFile(filepath.Join(root, f.dst), f.src, f.mode); err != nil {
			return "", err
		}
	}
	if err := run("cp", "-a", filepath.Join(a.cache, "dbus")+"/.", root); err != nil {
		return "", err
	}
	if err := run("cp", "-a", a.keys, filepath.Join(root, "etc/otad/keys")); err != nil {
		return "", err
	}
	for path, text := range map[string]string{
		"etc/otad-image":       s.name + "\n",
		"etc/otad/system.conf": confText,
		"etc/passwd":           "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":            "root:x:0:\notad:x:990:\n",
		"etc/machine-id":       "0123456789abcdef0123456789abcdef\n",
	} {
		if err := writeFile(filepath.Join(root, path), text, 0o644); err != nil {
			return "", err
		}
	}
	if !s.broken {
		if err := os.Symlink("/bin/busybox", filepath.Join(root, "sbin/init")); err != nil {
			return "", err
		}
	}
	for _, l := range []string{"sh", "mount", "awk", "cat", "dd", "sleep", "cut", "sync", "umount"} {
		_ = os.Symlink("busybox", filepath.Join(root, "bin", l))
	}
	img := filepath.Join(a.work, "slot-"+s.name+".ext4")
	os.Remove(img)
	// Fixed UUID and hash seed and no timestamps variation matter little; the
	// image content is what a bundle carries, so it only has to be built once.
	if err := run("mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", root, img, fmt.Sprintf("%dM", slotMiB)); err != nil {
		return "", err
	}
	os.RemoveAll(root)
	return img, nil
}

func (a *artifacts) buildData() error {
	a.data = filepath.Join(a.work, "data.ext4")
	os.Remove(a.data)
	return run("mkfs.ext4", "-q", "-F", "-L", "data", a.data, fmt.Sprintf("%dM", dataMiB))
}

// newMachine assembles a disk (MBR, four partitions) from the images and a
// fresh 64 MiB environment bank seeded with env.
func (a *artifacts) newMachine(name, slotA, slotB string, env *bootenv.Env) (*machine, error) {
	dir := filepath.Join(a.work, "m-"+name)
	os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "share"), 0o755); err != nil {
		return nil, err
	}
	m := &machine{dir: dir, art: a}
	total := 1 + bootMiB + 2*slotMiB + dataMiB + 1
	if err := run("truncate", "-s", fmt.Sprintf("%dM", total), m.disk()); err != nil {
		return nil, err
	}
	layout := fmt.Sprintf("label: dos\nstart=1MiB, size=%dMiB, type=c, bootable\nsize=%dMiB, type=83\nsize=%dMiB, type=83\nsize=%dMiB, type=83\n",
		bootMiB, slotMiB, slotMiB, dataMiB)
	cmd := exec.Command("sfdisk", "-q", m.disk())
	cmd.Stdin = strings.NewReader(layout)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("sfdisk: %w\n%s", err, out)
	}
	off := 1
	for _, p := range []struct {
		img  string
		size int
	}{{a.boot, bootMiB}, {slotA, slotMiB}, {slotB, slotMiB}, {a.data, dataMiB}} {
		if err := run("dd", "if="+p.img, "of="+m.disk(), "bs=1M", fmt.Sprintf("seek=%d", off), "conv=notrunc,sparse", "status=none"); err != nil {
			return nil, err
		}
		off += p.size
	}
	if err := run("truncate", "-s", "64M", m.envFlash()); err != nil {
		return nil, err
	}
	if err := a.seedEnv(m, env); err != nil {
		return nil, err
	}
	return m, nil
}

// fwEnvConfig is the host's view of the env bank: one copy at offset 0.
func (m *machine) fwEnvConfig() string {
	p := filepath.Join(m.dir, "fw_env.config")
	_ = writeFile(p, m.envFlash()+" 0x0 0x40000 0x40000\n", 0o644)
	return p
}

// seedEnv writes U-Boot's defaults merged with env into bank 1 with otad's
// own env writer, `otad env init` (a loaded env replaces U-Boot's built-in
// defaults, so the defaults file carries them).
func (a *artifacts) seedEnv(m *machine, env *bootenv.Env) error {
	full := a.defEnv.Clone()
	for _, n := range env.Names() {
		v, _ := env.Get(n)
		full.Set(n, v)
	}
	var b strings.Builder
	for _, n := range full.Names() {
		v, _ := full.Get(n)
		fmt.Fprintf(&b, "%s=%s\n", n, v)
	}
	defaults := filepath.Join(m.dir, "env-defaults.txt")
	if err := writeFile(defaults, b.String(), 0o644); err != nil {
		return err
	}
	return run(a.otadHst, "env", "init", "-c", m.fwEnvConfig(), "-f", defaults)
}

// readEnv reads the env bank as the host sees it (QEMU must be stopped or
// the guest quiet: QEMU writes the file as U-Boot or Linux programs flash).
func (m *machine) readEnv() (*bootenv.Env, error) {
	cfg, err := bootenv.LoadConfig(m.fwEnvConfig())
	if err != nil {
		return nil, err
	}
	st, err := bootenv.OpenStore(cfg)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return st.Load()
}

// guestEnv parses the env copy the guest read from /dev/mtd0 at its last boot.
func (m *machine) guestEnv() (*bootenv.Env, error) {
	p := filepath.Join(m.dir, "guest-env.config")
	if err := writeFile(p, filepath.Join(m.share(), "env-at-boot.bin")+" 0x0 0x40000 0x40000\n", 0o644); err != nil {
		return nil, err
	}
	cfg, err := bootenv.LoadConfig(p)
	if err != nil {
		return nil, err
	}
	st, err := bootenv.OpenStore(cfg)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return st.Load()
}

// loadDefaultEnv reads U-Boot's default environment captured by setup.sh
// (env export -t: name=value lines).
func loadDefaultEnv(path string) (*bootenv.Env, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	e := bootenv.NewEnv()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if n, v, ok := strings.Cut(sc.Text(), "="); ok && n != "" {
			e.Set(n, v)
		}
	}
	return e, sc.Err()
}
