package dbusapi

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/otadev/otad/internal/privbus"
)

// policyFile is the bus policy an image installs; the tests run under it.
const policyFile = "../../systemd/io.otad.Update1.conf"

// openPolicy lets any caller reach every method, so that only the
// in-process check stands between an unprivileged caller and the engine.
const openPolicy = `<policy user="root"><allow own="io.otad.Update1"/></policy><policy context="default"><allow send_destination="io.otad.Update1"/></policy>`

// worldDir is a directory an unprivileged child can enter (t.TempDir's
// parents are 0700).
func worldDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "otad-bus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startBus starts a private system-like dbus-daemon with the extra policy
// and returns its address and a world-accessible scratch directory. The
// daemon is ended by PID at cleanup.
func startBus(t *testing.T, extra string) (addr, dir string) {
	t.Helper()
	dir = worldDir(t)
	b, err := privbus.Start(context.Background(), dir, extra)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			t.Logf("dbus-daemon stderr:\n%s", b.Stderr())
		}
	})
	return b.Address, dir
}

func includePolicy(t *testing.T) string {
	t.Helper()
	abs, err := filepath.Abs(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("bus policy missing: %v", err)
	}
	return privbus.Include(abs)
}
