// Package loopdev attaches files to loop devices for tests that need a real
// block device. Only tests import it. It attaches only files the test made
// and detaches every device it attached when the test ends, pass or fail;
// the caller decides whether running without root skips or fails.
package loopdev

import (
	"os/exec"
	"strings"
	"testing"
)

// Attach attaches backing to a free loop device (read-only if asked) and
// returns the device path; the device is detached in t.Cleanup. Without
// losetup the test is skipped.
func Attach(t testing.TB, backing string, readOnly bool) string {
	t.Helper()
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	args := []string{"--find", "--show"}
	if readOnly {
		args = append(args, "--read-only")
	}
	out, err := exec.Command("losetup", append(args, backing)...).CombinedOutput()
	dev := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(dev, "/dev/loop") {
		t.Fatalf("losetup %s: %v: %s", backing, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}
