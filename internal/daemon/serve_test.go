package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/privbus"
)

// TestServeOverPrivateBus runs Serve (what `otad serve` calls) on a private
// dbus-daemon and installs through the real D-Bus client: the seam between
// the daemon and the bus API, end to end.
func TestServeOverPrivateBus(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the shipped bus policy lets only root own io.otad.Update1")
	}
	dir := t.TempDir()
	a, bb := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, p := range []string{a, bb} {
		must(t, os.WriteFile(p, make([]byte, 4<<20), 0o644))
	}
	b := newBoard(t, a, bb, "file")
	// The shipped bus policy on a private system-like bus; the test runs
	// as root, which the policy lets own the name and call everything.
	policy, err := filepath.Abs("../../systemd/io.otad.Update1.conf")
	must(t, err)
	bus, err := privbus.Start(context.Background(), t.TempDir(), privbus.Include(policy))
	must(t, err)
	t.Cleanup(bus.Stop)
	addr := bus.Address
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", addr)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, b.path("system.conf"), nil, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	var c *dbusapi.Client
	for i := 0; ; i++ {
		if c, err = dbusapi.Dial(ctx, addr); err == nil {
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
	src := b.bundle("5.0", 0, img(true, 5, 1<<20))
	var ops []string
	_, result, msg, err := c.Install(ctx, src, map[string]any{"reboot": false}, func(u dbusapi.Update) {
		if u.Operation != "" {
			ops = append(ops, u.Operation)
		}
	})
	if err != nil || result != 0 {
		t.Fatalf("install over D-Bus: %v %d %s (ops %v)", err, result, msg, ops)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Operation != "pending-reboot" || st.BootSlot != "A" {
		t.Fatalf("status %+v %v", st, err)
	}
	slots, err := c.Slots(ctx)
	if err != nil || len(slots) != 2 || fmt.Sprint(slots[1].Props["version"].Value()) != "5.0" {
		t.Fatalf("slots %+v %v", slots, err)
	}
}
