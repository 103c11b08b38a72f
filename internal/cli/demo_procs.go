//go:build !otad_device

package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/privbus"
)

// demoInlinePolicy stands in for systemd/io.otad.Update1.conf when the demo
// runs away from a checkout or an installed copy: root owns the name and
// may call everything; anyone may read.
const demoInlinePolicy = `  <policy user="root">
    <allow own="io.otad.Update1"/>
    <allow send_destination="io.otad.Update1"/>
  </policy>
  <policy context="default">
    <allow send_destination="io.otad.Update1" send_interface="org.freedesktop.DBus.Properties" send_member="GetAll"/>
    <allow send_destination="io.otad.Update1" send_interface="org.freedesktop.DBus.Properties" send_member="Get"/>
    <allow send_destination="io.otad.Update1" send_interface="io.otad.Update1" send_member="GetSlotStatus"/>
  </policy>`

// findPolicy looks for otad's bus policy: next to the binary in a checkout
// (bin/otad → systemd/), above the working directory, or installed.
func findPolicy(exe string) string {
	const rel = "systemd/io.otad.Update1.conf"
	var cands []string
	for _, start := range []string{filepath.Dir(exe), "."} {
		dir, err := filepath.Abs(start)
		if err != nil {
			continue
		}
		for range 8 {
			cands = append(cands, filepath.Join(dir, rel))
			if dir == filepath.Dir(dir) {
				break
			}
			dir = filepath.Dir(dir)
		}
	}
	cands = append(cands, "/usr/share/dbus-1/system.d/io.otad.Update1.conf", "/etc/dbus-1/system.d/io.otad.Update1.conf")
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
			return c
		}
	}
	return ""
}

// startBus starts the demo's private dbus-daemon and connects the client.
func (b *demoBoard) startBus(ctx context.Context) error {
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		return errors.New("dbus-daemon not found: install package dbus (make deps)")
	}
	policy := demoInlinePolicy
	b.policy = "inline (root only)"
	if p := findPolicy(b.exe); p != "" {
		policy = privbus.Include(p)
		b.policy = p
	}
	if os.Geteuid() != 0 {
		// Not root: let this user own the name too (the in-process check
		// has already been satisfied by group otad, see demoCanInstall).
		if u, err := user.Current(); err == nil {
			policy += fmt.Sprintf("\n  <policy user=%q><allow own=\"io.otad.Update1\"/><allow send_destination=\"io.otad.Update1\"/></policy>", u.Username)
		}
	}
	// privbus writes bus.conf and bus.sock into the work dir and ends the
	// daemon by its PID (teardown); its log goes to dbus.log then.
	var err error
	if b.bus, err = privbus.Start(ctx, b.work, policy); err != nil {
		return err
	}
	b.busAddr = b.bus.Address
	if b.client, err = dbusapi.Dial(ctx, b.busAddr); err != nil {
		return err
	}
	b.say("   bus: private dbus-daemon (pid %d) on bus.sock, system-bus policy + %s", b.bus.PID(), demoRel(b.work, []string{b.policy})[0])
	return nil
}

// demoChildEnv is this process's environment minus what would make a child
// talk to the real systemd.
func demoChildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "DBUS_SYSTEM_BUS_ADDRESS":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func startProc(name string, cmd *exec.Cmd) (*demoProc, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &demoProc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM to the process (by its PID) and waits for it; after
// demoWait it kills it.
func (p *demoProc) stop() error {
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(demoWait):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s (pid %d) ignored SIGTERM for %v; killed", p.name, p.cmd.Process.Pid, demoWait)
	}
}
