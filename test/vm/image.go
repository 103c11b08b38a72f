package main

import (
	"bufio"
	"bytes"
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
	cache  string // setup.sh's keyed cache directory
	repo   string
	work   string
	qemu   string
	flash0 string
	// U-Boot with a redundant flash env and native bootcount (optional)
	flash0Red string
	otadArm   string // static arm64 otad for the guest
	sysRoot   string // Debian systemd rootfs from setup-systemd.sh ("": run sysSetup first)
	sysSetup  string // setup-systemd.sh
	sysErr    error  // sysSetup failed (not retried)
	otadHst   string // host otad (bundles, env)
	boot      string // FAT image, partition 1
	data      string // empty ext4, partition 4
	slots     map[string]string
	keys      string // keyring directory for the guest (public keys)
	signKey   string // private key for bundles
	defEnv    *bootenv.Env
	// committedB is the machine good-update left on a committed B (v2), for
	// scenarios that continue from there.
	committedB *machine
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

// guestFile is one file copied into a slot image: host path, path in the
// image, mode.
type guestFile struct {
	src, dst string
	mode     os.FileMode
}

func installFiles(root string, files []guestFile) error {
	for _, f := range files {
		if err := copyFile(filepath.Join(root, f.dst), f.src, f.mode); err != nil {
			return err
		}
	}
	return nil
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
	files := []guestFile{
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
		{filepath.Join(a.repo, "systemd/io.otad.Update1.conf"), "etc/dbus-1/system.d/io.otad.Update1.conf", 0o644},
	}
	if err := installFiles(root, files); err != nil {
		return "", err
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
	// The slot is mounted read-only, so the applet links are made here (the
	// host's busybox lists the same applets as Debian's arm64 build).
	list, err := exec.Command("busybox", "--list-full").Output()
	if err != nil {
		return "", fmt.Errorf("busybox --list-full: %w", err)
	}
	for _, l := range strings.Fields(string(list)) {
		if l == "sbin/init" || l == "bin/busybox" {
			continue
		}
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(l)), 0o755); err != nil {
			return "", err
		}
		_ = os.Symlink("/bin/busybox", filepath.Join(root, l))
	}
	if err := os.MkdirAll(filepath.Join(root, "var"), 0o755); err != nil {
		return "", err
	}
	for l, t := range map[string]string{"var/run": "/run", "var/lock": "/run/lock", "var/tmp": "/tmp"} {
		if err := os.Symlink(t, filepath.Join(root, l)); err != nil {
			return "", err
		}
	}
	// board-specific, written by rcS from the harness's board description
	if err := os.Symlink("/run/fw_env.config", filepath.Join(root, "etc/fw_env.config")); err != nil {
		return "", err
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
func (a *artifacts) newMachine(name, slotA, slotB string, redundant bool, env *bootenv.Env) (*machine, error) {
	return a.newMachineSized(name, slotA, slotB, redundant, env, slotMiB)
}

// newMachineSized is newMachine with slot partitions of slotSize MiB (the
// systemd tier's images are larger than the busybox ones).
func (a *artifacts) newMachineSized(name, slotA, slotB string, redundant bool, env *bootenv.Env, slotSize int) (*machine, error) {
	dir := filepath.Join(a.work, "m-"+name)
	os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "share"), 0o755); err != nil {
		return nil, err
	}
	m := &machine{dir: dir, art: a, redundant: redundant, slotMiB: slotSize}
	if redundant && a.flash0Red == "" {
		return nil, errSkip("setup.sh could not build the redundant-env U-Boot")
	}
	total := 1 + bootMiB + 2*slotSize + dataMiB + 1
	if err := run("truncate", "-s", fmt.Sprintf("%dM", total), m.disk()); err != nil {
		return nil, err
	}
	layout := fmt.Sprintf("label: dos\nstart=1MiB, size=%dMiB, type=c, bootable\nsize=%dMiB, type=83\nsize=%dMiB, type=83\nsize=%dMiB, type=83\n",
		bootMiB, slotSize, slotSize, dataMiB)
	cmd := exec.Command("sfdisk", "-q", m.disk())
	cmd.Stdin = strings.NewReader(layout)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("sfdisk: %w\n%s", err, out)
	}
	off := 1
	for _, p := range []struct {
		img  string
		size int
	}{{a.boot, bootMiB}, {slotA, slotSize}, {slotB, slotSize}, {a.data, dataMiB}} {
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

// fwEnvConfig is the host's view of the env bank: one copy at offset 0, or
// (redundant U-Boot) a second at 0x40000.
func (m *machine) fwEnvConfig() string {
	p := filepath.Join(m.dir, "fw_env.config")
	text := m.envFlash() + " 0x0 0x40000 0x40000\n"
	if m.redundant {
		text += m.envFlash() + " 0x40000 0x40000 0x40000\n"
	}
	_ = writeFile(p, text, 0o644)
	return p
}

// guestFwEnvConfig is the board's fw_env.config for Linux: the env bank is
// the second half of /dev/mtd0 (both pflash banks, one NOR device).
func (m *machine) guestFwEnvConfig() string {
	text := "# U-Boot env in pflash bank 1 (/dev/mtd0 covers both 64 MiB banks)\n/dev/mtd0 0x4000000 0x40000 0x40000\n"
	if m.redundant {
		text += "/dev/mtd0 0x4040000 0x40000 0x40000\n"
	}
	return text
}

// fileMedium is a flash image file seen as a NOR medium (erase = 0xff), so
// otad's env writer uses the flag scheme of the real medium (boolean on NOR,
// as U-Boot's redundant flash env does) on the host too.
type fileMedium struct{ f *os.File }

func (m fileMedium) ReadAt(p []byte, off int64) (int, error)  { return m.f.ReadAt(p, off) }
func (m fileMedium) WriteAt(p []byte, off int64) (int, error) { return m.f.WriteAt(p, off) }
func (m fileMedium) Erase(off, n int64) error {
	_, err := m.f.WriteAt(bytes.Repeat([]byte{0xff}, int(n)), off)
	return err
}

// norStore opens path (an env bank image or a guest dump of it) as a
// redundant NOR env: copies at 0 and 0x40000, boolean flags.
func norStore(path string) (bootenv.Store, func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, err
	}
	md := fileMedium{f}
	st := bootenv.NewSectorMediumStore([]bootenv.Medium{md, md}, []int64{0, 0x40000}, 0x40000, 0x40000, bootenv.FlagsBoolean)
	return st, func() { f.Close() }, nil
}

// seedEnv writes U-Boot's defaults merged with env into bank 1 with otad's
// own env writer: `otad env init` for the single-copy env; for the
// redundant NOR env the bootenv package itself with the boolean scheme (a
// host file would otherwise get counter flags). A loaded env replaces
// U-Boot's built-in defaults, so the defaults are part of the seed.
func (a *artifacts) seedEnv(m *machine, env *bootenv.Env) error {
	full := a.defEnv.Clone()
	for _, n := range env.Names() {
		v, _ := env.Get(n)
		full.Set(n, v)
	}
	if err := writeFile(filepath.Join(m.share(), "fw_env.config"), m.guestFwEnvConfig(), 0o644); err != nil {
		return err
	}
	if m.redundant {
		// erased NOR
		if err := os.WriteFile(m.envFlash(), bytes.Repeat([]byte{0xff}, 64<<20), 0o644); err != nil {
			return err
		}
		st, done, err := norStore(m.envFlash())
		if err != nil {
			return err
		}
		defer done()
		return st.Save(full)
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

// readEnv reads the env bank as the host sees it (QEMU stopped).
func (m *machine) readEnv() (*bootenv.Env, error) {
	if m.redundant {
		st, done, err := norStore(m.envFlash())
		if err != nil {
			return nil, err
		}
		defer done()
		return st.Load()
	}
	return loadFileEnv(m.fwEnvConfig())
}

func loadFileEnv(config string) (*bootenv.Env, error) {
	cfg, err := bootenv.LoadConfig(config)
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

// guestEnv parses the env bank the guest read from /dev/mtd0 at its last boot.
func (m *machine) guestEnv() (*bootenv.Env, error) {
	dump := filepath.Join(m.share(), "env-at-boot.bin")
	if m.redundant {
		st, done, err := norStore(dump)
		if err != nil {
			return nil, err
		}
		defer done()
		return st.Load()
	}
	p := filepath.Join(m.dir, "guest-env.config")
	if err := writeFile(p, dump+" 0x0 0x40000 0x40000\n", 0o644); err != nil {
		return nil, err
	}
	return loadFileEnv(p)
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
