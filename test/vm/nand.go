package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// scenNandsim (scenario 7, NAND part): an amd64 helper VM (Debian's amd64
// kernel has nandsim and UBI as modules) runs the slot package's real-device
// tests: TestRealMTD on a nandsim NAND with factory bad blocks (the writer
// must skip them), and TestRealUBIVolume on a UBI volume attached to it with
// Debian's mtd-utils.
func scenNandsim(ctx context.Context, a *artifacts, r *result) error {
	kernel := filepath.Join(a.cache, "bzImage-amd64")
	if _, err := os.Stat(kernel); err != nil {
		return errSkip("setup.sh built no amd64 helper VM")
	}
	dir := filepath.Join(a.work, "m-mtd-nandsim")
	share := filepath.Join(dir, "share")
	os.RemoveAll(dir)
	if err := os.MkdirAll(share, 0o755); err != nil {
		return err
	}
	cmd := exec.Command("go", "test", "-c", "-o", filepath.Join(share, "slot.test"), "./internal/slot")
	cmd.Dir = a.repo
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go test -c ./internal/slot: %w\n%s", err, out)
	}
	// 128 MiB NAND, 2 KiB pages, 128 KiB erase blocks; blocks 3 and 7 bad.
	script := `set -x
insmod /lib/modules/nandsim.ko first_id_byte=0x20 second_id_byte=0xa1 third_id_byte=0x00 fourth_id_byte=0x15 badblocks=3,7 || exit 10
cat /proc/mtd
dev=/dev/mtd0
OTAD_TEST_MTD=$dev /host/slot.test -test.run '^TestRealMTD$' -test.v -test.count=1 || exit 11
insmod /lib/modules/ubi.ko || exit 12
flash_erase /dev/mtd0 0 0 >/dev/null || exit 16
ubiattach -m 0 || exit 13
ubimkvol /dev/ubi0 -N slotb -s 24MiB || exit 14
OTAD_TEST_UBIVOL=/dev/ubi0_0 /host/slot.test -test.run '^TestRealUBIVolume$' -test.v -test.count=1 || exit 15
`
	if err := writeFile(filepath.Join(share, "run.sh"), script, 0o755); err != nil {
		return err
	}
	// SeaBIOS (unpacked next to QEMU by setup.sh) is found through -L.
	q := exec.Command(filepath.Join(a.cache, "qemu-system-x86_64"), "-L", filepath.Join(a.cache, "qemu/usr/share/seabios"),
		"-M", "pc", "-m", "768", "-smp", "1",
		"-display", "none", "-monitor", "none", "-nic", "none", "-audio", "none", "-no-reboot",
		"-serial", "file:"+filepath.Join(dir, "console-1.log"),
		"-kernel", kernel, "-initrd", filepath.Join(a.cache, "initrd-amd64.img"),
		"-append", "console=ttyS0 loglevel=4 panic=-1",
		"-fsdev", "local,id=fs0,security_model=none,path="+share,
		"-device", "virtio-9p-pci,fsdev=fs0,mount_tag=host")
	q.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	var qerr strings.Builder
	q.Stderr = &qerr
	if err := q.Start(); err != nil {
		return err
	}
	live.add(q.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- q.Wait(); live.remove(q.Process.Pid) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		_ = q.Process.Kill()
		<-done
		return fmt.Errorf("amd64 VM did not power off in 5 minutes")
	}
	r.boots = 1
	rc, _ := os.ReadFile(filepath.Join(share, "run.rc"))
	out, _ := os.ReadFile(filepath.Join(share, "run.log"))
	if strings.TrimSpace(string(rc)) != "rc=0" {
		con, _ := os.ReadFile(filepath.Join(dir, "console-1.log"))
		return fmt.Errorf("nandsim run %q:\n%s\n%s\n%s", strings.TrimSpace(string(rc)), tail(string(out), 20), tail(string(con), 10), qerr.String())
	}
	for _, want := range []string{"--- PASS: TestRealMTD", "--- PASS: TestRealUBIVolume"} {
		if !strings.Contains(string(out), want) {
			return fmt.Errorf("%q missing from the run:\n%s", want, tail(string(out), 20))
		}
	}
	r.detail = "TestRealMTD (nandsim, bad blocks 3,7) and TestRealUBIVolume passed"
	return nil
}
