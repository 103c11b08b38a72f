// Package privbus describes and runs a private dbus-daemon configured like
// Debian's system bus — deny by default, the bus driver reachable — plus
// policy files or inline policy added by the caller. The demo and the D-Bus
// tests run otad's real bus policy on it without touching the machine's
// buses. The daemon is always a child of this process, ended by its PID.
package privbus

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SystemConfig is a dbus-daemon configuration listening on the unix socket
// path socket, with the default policy of Debian 12's system.conf, followed
// by extra (policy XML: <include>FILE</include> or <policy> elements).
func SystemConfig(socket, extra string) string {
	return fmt.Sprintf(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
%s
</busconfig>
`, socket, extra)
}

// Include is the extra policy that includes the policy file at path.
func Include(path string) string { return "  <include>" + path + "</include>" }

// Bus is a running private dbus-daemon.
type Bus struct {
	Address string
	cmd     *exec.Cmd
	done    chan struct{}
	stderr  lockedWriter
}

// Start writes the configuration into dir (bus.conf, socket bus.sock; keep
// dir short: socket paths are limited to 108 bytes) and starts dbus-daemon,
// returning once it has printed its address.
func Start(ctx context.Context, dir, extra string) (*Bus, error) {
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		return nil, fmt.Errorf("privbus: dbus-daemon not installed (make deps): %w", err)
	}
	cfg := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(cfg, []byte(SystemConfig(filepath.Join(dir, "bus.sock"), extra)), 0o644); err != nil {
		return nil, err
	}
	b := &Bus{done: make(chan struct{})}
	b.cmd = exec.Command("dbus-daemon", "--config-file="+cfg, "--nofork", "--nopidfile", "--print-address=1")
	b.cmd.Stderr = &b.stderr
	// Dies with this process even if Stop is never reached.
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Our own pipe rather than StdoutPipe: Wait must not close it under
	// the reader.
	out, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	b.cmd.Stdout = w
	err = b.cmd.Start()
	w.Close()
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("privbus: %w", err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	line := make(chan string, 1)
	go func() {
		defer out.Close()
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- strings.TrimSpace(s.Text())
		}
		close(line)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case b.Address = <-line:
		if b.Address != "" {
			return b, nil
		}
	case <-b.done:
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	b.Stop()
	return nil, fmt.Errorf("privbus: dbus-daemon printed no address: %s", b.Stderr())
}

// PID is the daemon's process id.
func (b *Bus) PID() int { return b.cmd.Process.Pid }

// Stderr is what the daemon logged.
func (b *Bus) Stderr() string { return b.stderr.String() }

// Stop ends the daemon by its PID (SIGTERM, SIGKILL after 5 s) and waits.
func (b *Bus) Stop() {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// Done is closed when the daemon has exited.
func (b *Bus) Done() <-chan struct{} { return b.done }

// lockedWriter lets Stderr be read while the daemon still writes.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
