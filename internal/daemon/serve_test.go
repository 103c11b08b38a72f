package daemon

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/dbusapi"
)

// TestServeOverPrivateBus runs Serve (what `otad serve` calls) on a private
// dbus-daemon and installs through the real D-Bus client: the seam between
// the daemon and the bus API, end to end.
func TestServeOverPrivateBus(t *testing.T) {
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Skip("dbus-daemon not installed")
	}
	dir := t.TempDir()
	a, bb := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, p := range []string{a, bb} {
		must(t, os.WriteFile(p, make([]byte, 4<<20), 0o644))
	}
	b := newBoard(t, a, bb, "file")
	sock := filepath.Join(dir, "bus")
	conf := fmt.Sprintf(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path=%s</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/></policy>
</busconfig>`, sock)
	must(t, os.WriteFile(filepath.Join(dir, "bus.conf"), []byte(conf), 0o644))
	bus := exec.Command("dbus-daemon", "--config-file="+filepath.Join(dir, "bus.conf"), "--nofork", "--print-address")
	out, err := bus.StdoutPipe()
	must(t, err)
	must(t, bus.Start())
	t.Cleanup(func() { bus.Process.Kill(); bus.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	must(t, err)
	addr = strings.TrimSpace(addr)
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
