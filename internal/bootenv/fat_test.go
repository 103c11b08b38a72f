package bootenv

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/otadev/otad/internal/testutil/loopdev"
)

const fatEnvSize = 0x4000 // the Raspberry Pi U-Boot's CONFIG_ENV_SIZE

// fatFS is a real FAT32 file system in a loop-mounted image file.
type fatFS struct {
	dev, dir string
}

// newFAT formats a 64 MiB image (sparse) as FAT32 with the real mkfs.vfat,
// attaches it to a loop device of its own and mounts it; everything is
// undone in t.Cleanup (unmount before detach).
func newFAT(t *testing.T) *fatFS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop-mounts a FAT image (the test machine runs as root)")
	}
	for _, p := range []string{"mkfs.vfat", "mount", "umount"} {
		tool(t, p)
	}
	if !kernelHasVFAT() {
		t.Skip("this kernel cannot mount vfat (not in /proc/filesystems, modprobe vfat failed): " +
			"the real-FAT tests need one; the same torn-write model runs on the temp dir below, " +
			"and the Raspberry Pi VM tier writes uboot.env on a real FAT partition")
	}
	img := filepath.Join(t.TempDir(), "boot.vfat")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.vfat", "-F", "32", "-n", "BOOT", img)
	fs := &fatFS{dev: loopdev.Attach(t, img, false), dir: t.TempDir()}
	fs.mount(t)
	t.Cleanup(func() {
		if err := syscall.Unmount(fs.dir, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
			t.Errorf("umount %s: %v", fs.dir, err)
		}
	})
	return fs
}

// kernelHasVFAT reports whether mount -t vfat can work here.
func kernelHasVFAT() bool {
	has := func() bool {
		b, err := os.ReadFile("/proc/filesystems")
		return err == nil && strings.Contains(string(b), "\tvfat\n")
	}
	if has() {
		return true
	}
	_ = exec.Command("modprobe", "vfat").Run()
	return has()
}

func (fs *fatFS) mount(t *testing.T) {
	t.Helper()
	run(t, "mount", "-t", "vfat", fs.dev, fs.dir)
}

// remount unmounts and mounts again, so what is read next comes from the
// device, not from the page cache of the writes.
func (fs *fatFS) remount(t *testing.T) {
	t.Helper()
	if err := syscall.Unmount(fs.dir, 0); err != nil {
		t.Fatalf("umount: %v", err)
	}
	fs.mount(t)
}

// listing is the directory as FAT keeps it: names, sizes and inode numbers
// (vfat derives them from the directory entry position).
func listing(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %d %d", e.Name(), fi.Size(), fi.Sys().(*syscall.Stat_t).Ino))
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// seedFAT writes the two env files of a redundant FAT environment as U-Boot
// tooling makes them (mkenvimage -r) and returns an fw_env.config naming
// them, as the Pi's image ships it.
func seedFAT(t *testing.T, dir string, redundant bool, vars ...string) string {
	t.Helper()
	img := mkenvimage(t, fatEnvSize, redundant, vars...)
	files := []string{"uboot.env"}
	if redundant {
		files = append(files, "uboot-redund.env")
	}
	var lines []string
	for _, f := range files {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, img, 0o644); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, fmt.Sprintf("%s 0x0 0x%x", p, fatEnvSize))
	}
	return writeConfig(t, lines...)
}

func TestFATDetected(t *testing.T) {
	fs := newFAT(t)
	single := openStore(t, seedFAT(t, fs.dir, false, "a=1"))
	if !single.SingleCopyFAT() {
		t.Fatal("single uboot.env on FAT not detected")
	}
	err := single.ArmRisk()
	if !errors.Is(err, ErrSingleCopyFAT) {
		t.Fatalf("ArmRisk = %v, want ErrSingleCopyFAT", err)
	}
	for _, want := range []string{"CONFIG_SYS_REDUNDAND_ENVIRONMENT", "CONFIG_ENV_FAT_FILE_REDUND", "fw_env.config", "single-env = accept"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ArmRisk error does not say %q: %v", want, err)
		}
	}
	single.Close()

	cfg, err := LoadConfig(seedFAT(t, fs.dir, false, "a=1"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.LockPath, cfg.AcceptSingleCopy = "-", true
	accepted, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !accepted.SingleCopyFAT() || accepted.ArmRisk() != nil {
		t.Errorf("accepted single copy: SingleCopyFAT %v, ArmRisk %v", accepted.SingleCopyFAT(), accepted.ArmRisk())
	}
	accepted.Close()

	red := openStore(t, seedFAT(t, fs.dir, true, "a=1"))
	if red.SingleCopyFAT() || red.ArmRisk() != nil {
		t.Errorf("redundant FAT env: SingleCopyFAT %v, ArmRisk %v", red.SingleCopyFAT(), red.ArmRisk())
	}

	// A single copy in a file on another file system (the test's temp
	// dir) is a raw single copy: warned about elsewhere, not refused here.
	p := filepath.Join(t.TempDir(), "env.img")
	if err := os.WriteFile(p, mkenvimage(t, fatEnvSize, false, "a=1"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := openStore(t, writeConfig(t, fmt.Sprintf("%s 0x0 0x%x", p, fatEnvSize)))
	if other.SingleCopyFAT() || other.ArmRisk() != nil {
		t.Errorf("single file on non-FAT: SingleCopyFAT %v, ArmRisk %v", other.SingleCopyFAT(), other.ArmRisk())
	}
}

// TestFATSaveInPlace: a Save rewrites the copy inside the existing file:
// same directory entries, sizes and inodes, no temp file, and the real
// fw_printenv reads what the store wrote, also after a remount.
func TestFATSaveInPlace(t *testing.T) {
	fs := newFAT(t)
	cfgPath := seedFAT(t, fs.dir, true, "bootcmd=run otad", "otad_slot=A")
	before := listing(t, fs.dir)
	s := openStore(t, cfgPath)
	for i := range 5 {
		want := envOf("bootcmd", "run otad", "otad_slot", "AB"[i%2:i%2+1], "gen", fmt.Sprint(i))
		if err := s.Save(want); err != nil {
			t.Fatalf("save %d: %v", i, err)
		}
		if got := listing(t, fs.dir); got != before {
			t.Fatalf("save %d changed the directory:\n%s\nwant\n%s", i, got, before)
		}
		if got := fwPrintenv(t, cfgPath); !got.Equal(want) {
			t.Fatalf("save %d: fw_printenv\n%s\nwant\n%s", i, got, want)
		}
	}
	s.Close()
	fs.remount(t)
	if got, want := fwPrintenv(t, cfgPath), envOf("bootcmd", "run otad", "otad_slot", "A", "gen", "4"); !got.Equal(want) {
		t.Fatalf("after remount fw_printenv\n%s\nwant\n%s", got, want)
	}
}

// TestFATTornWrite is the power-cut model of a Save on FAT: the copy being
// written holds the new bytes up to the cut, one 512-byte sector of garbage
// at the cut (the sector the card was programming) and the old bytes after
// it. The medium is remounted (the page cache is gone, as after a power
// cut); the store and the real fw_printenv must both read the OTHER copy,
// whole, and the next Save must repair the torn one. The cuts alternate
// between the two files, so a torn write of either copy is covered.
func TestFATTornWrite(t *testing.T) {
	fs := newFAT(t)
	tornWrites(t, fs.dir, func() { fs.remount(t) })
}

// TestFileTornWrite runs the same model on the temp dir's file system, so
// the copy logic is exercised where the kernel has no vfat; "remount" is a
// reopen there (the page cache holds what the file holds).
func TestFileTornWrite(t *testing.T) {
	tornWrites(t, t.TempDir(), func() {})
}

func tornWrites(t *testing.T, dir string, remount func()) {
	cfgPath := seedFAT(t, dir, true, "otad_slot=A", "gen=seed")
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(28))
	cuts := []int{1, 4, 5, 511, 512, 513, fatEnvSize / 2, fatEnvSize - 1}
	for range 8 {
		cuts = append(cuts, 1+rng.Intn(fatEnvSize-1))
	}
	torn := map[int]int{}
	for i, cut := range cuts {
		s := openStore(t, cfgPath)
		old, err := s.Load()
		if err != nil {
			t.Fatalf("cut %d: load: %v", i, err)
		}
		states, err := s.c.readStates()
		if err != nil {
			t.Fatal(err)
		}
		cur, err := pick(states, s.c.scheme)
		if err != nil {
			t.Fatal(err)
		}
		target := 1 - cur
		next := old.Clone()
		next.Set("gen", fmt.Sprint(i))
		next.Set("otad_slot", "AB"[i%2:i%2+1])
		full, err := encode(next, fatEnvSize, true, nextFlag(states[cur].flag, s.c.scheme))
		if err != nil {
			t.Fatal(err)
		}
		s.Close()

		// The cut: what the file holds when the power goes.
		path := cfg.Devices[target].Path
		img, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		tornImg := append([]byte(nil), img...)
		copy(tornImg[:cut], full[:cut])
		sec := cut - cut%512
		rng.Read(tornImg[sec:min(sec+512, fatEnvSize)])
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(tornImg[:fatEnvSize], 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		remount()
		torn[target]++

		if decode(tornImg[:fatEnvSize], true).valid {
			t.Fatalf("cut %d at %d: the torn copy still checks out; the model tears nothing", i, cut)
		}
		s = openStore(t, cfgPath)
		got, err := s.Load()
		if err != nil {
			t.Fatalf("cut %d at byte %d of copy %d: no environment: %v", i, cut, target, err)
		}
		if !got.Equal(old) {
			t.Fatalf("cut %d at byte %d of copy %d: store reads\n%s\nwant the old\n%s", i, cut, target, got, old)
		}
		if fw := fwPrintenv(t, cfgPath); !fw.Equal(old) {
			t.Fatalf("cut %d at byte %d of copy %d: fw_printenv reads\n%s\nwant the old\n%s", i, cut, target, fw, old)
		}
		// The repeated Save goes to the torn copy again and makes it whole.
		if err := s.Save(next); err != nil {
			t.Fatalf("cut %d: save after the cut: %v", i, err)
		}
		s.Close()
		remount()
		if fw := fwPrintenv(t, cfgPath); !fw.Equal(next) {
			t.Fatalf("cut %d: after the repeated save fw_printenv reads\n%s\nwant\n%s", i, fw, next)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[:fatEnvSize], full) {
			t.Fatalf("cut %d: copy %d is not the repeated save's bytes", i, target)
		}
	}
	if torn[0] == 0 || torn[1] == 0 {
		t.Fatalf("cuts tore copy 0 %d times and copy 1 %d times; want both", torn[0], torn[1])
	}
}

// TestFATSingleCopyTornWrite documents why ArmRisk refuses: the same cut on
// a single uboot.env leaves no valid environment for fw_printenv either.
func TestFATSingleCopyTornWrite(t *testing.T) {
	fs := newFAT(t)
	cfgPath := seedFAT(t, fs.dir, false, "otad_slot=A")
	path := filepath.Join(fs.dir, "uboot.env")
	full, err := encode(envOf("otad_slot", "B"), fatEnvSize, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copy(img[:fatEnvSize/2], full)
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	fs.remount(t)
	s := openStore(t, cfgPath)
	if _, err := s.Load(); !errors.Is(err, ErrNoValidCopy) {
		t.Fatalf("torn single copy: Load = %v, want ErrNoValidCopy", err)
	}
	out, err := exec.Command(tool(t, "fw_printenv"), "-c", cfgPath).CombinedOutput()
	if err == nil && !strings.Contains(string(out), "otad_slot") {
		// libubootenv prints its built-in default (none here) and warns.
		return
	}
	if strings.Contains(string(out), "otad_slot=") {
		t.Fatalf("fw_printenv still reads a slot from the torn single copy:\n%s", out)
	}
}

// TestArmRiskMessage checks the refusal and its escape hatch without a FAT
// mount (the detection itself is TestFATDetected's).
func TestArmRiskMessage(t *testing.T) {
	cfgPath := seedFAT(t, t.TempDir(), false, "a=1")
	for _, accept := range []bool{false, true} {
		cfg, err := LoadConfig(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		cfg.LockPath, cfg.AcceptSingleCopy = "-", accept
		s, err := OpenStore(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if s.SingleCopyFAT() || s.ArmRisk() != nil {
			t.Fatalf("single file off FAT: SingleCopyFAT %v, ArmRisk %v", s.SingleCopyFAT(), s.ArmRisk())
		}
		s.c.areas[0].(*fileArea).fat = true // as openArea sets it on FAT
		err = s.ArmRisk()
		if accept != (err == nil) || (!accept && !errors.Is(err, ErrSingleCopyFAT)) {
			t.Fatalf("accept=%v: ArmRisk = %v", accept, err)
		}
		if err != nil && !strings.Contains(err.Error(), cfg.Devices[0].Path) {
			t.Errorf("ArmRisk does not name the file: %v", err)
		}
		s.Close()
	}
}
