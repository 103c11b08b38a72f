package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/privbus"
)

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	return len(ents)
}

// A caller's descriptor goes through the real engine: InspectBundleFD
// answers the manifest, InstallFD installs, a descriptor-named journal
// entry is not reopened as a path, and the daemon holds no descriptor of
// the caller's once the install has completed.
func TestCallerDescriptorsThroughTheEngine(t *testing.T) {
	dir := t.TempDir()
	a, bb := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, p := range []string{a, bb} {
		must(t, os.WriteFile(p, make([]byte, 4<<20), 0o644))
	}
	b := newBoard(t, a, bb, "file")
	busDir, err := os.MkdirTemp("", "otad-cf-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(busDir) })
	bus, err := privbus.Start(context.Background(), busDir,
		`<policy context="default"><allow own="io.otad.Update1"/><allow send_destination="io.otad.Update1"/></policy>`)
	must(t, err)
	t.Cleanup(bus.Stop)
	src := b.bundle("6.0", 0, img(true, 6, 1<<20))
	b.run(func(d *Daemon) {
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- ServeBus(bus.Address)(ctx, d) }()
		defer func() {
			cancel()
			if err := <-served; err != nil {
				t.Errorf("ServeBus: %v", err)
			}
		}()
		var c *dbusapi.Client
		for i := 0; ; i++ {
			if c, err = dbusapi.Dial(ctx, bus.Address); err == nil {
				if _, err = c.Status(ctx); err == nil {
					break
				}
				c.Close()
			}
			if i > 100 {
				t.Fatalf("daemon not on the bus: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		defer c.Close()
		f, err := os.Open(src)
		must(t, err)
		defer f.Close()
		base := openFDs(t)

		info, err := c.InspectFile(ctx, f)
		if err != nil || info["version"].Value() != "6.0" {
			t.Fatalf("InspectBundleFD: %v %v", info, err)
		}
		junk := filepath.Join(dir, "junk")
		must(t, os.WriteFile(junk, []byte("not a bundle at all"), 0o600))
		jf, err := os.Open(junk)
		must(t, err)
		if _, err := c.InspectFile(ctx, jf); err == nil {
			t.Fatal("InspectBundleFD accepted a file that is no bundle")
		}
		jf.Close()

		tx, res, msg, err := c.Install(ctx, f, map[string]any{"reboot": false}, nil)
		if err != nil || res != 0 {
			t.Fatalf("InstallFD: %v %d %s", err, res, msg)
		}
		if len(tx) != 32 {
			t.Errorf("transaction id %q is not 128 bits of hex", tx)
		}
		// The engine's Completed also ends the daemon's hold on the
		// descriptor; the goroutine that closes it runs just after.
		deadline := time.Now().Add(5 * time.Second)
		for openFDs(t) > base && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := openFDs(t); n > base {
			t.Fatalf("%d descriptors open after the install, %d before", n, base)
		}
	})
	// After a restart the journal may name a descriptor source; it is
	// refused, not looked up as a path.
	fo, err := FetchOptions(b.cfg.Fetch)
	must(t, err)
	if _, err := openSource(fo)(context.Background(), fdBundle); err == nil || !strings.Contains(err.Error(), "does not survive a restart") {
		t.Fatalf("a journaled descriptor source reopened: %v", err)
	}
}
