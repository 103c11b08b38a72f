package daemon

import (
	"context"
	"fmt"
	"os/exec"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"golang.org/x/sys/unix"
)

// NewRebooter returns the configured command, or systemd's reboot.target
// when argv is empty.
func NewRebooter(argv []string) interface{ Reboot(context.Context) error } {
	if len(argv) > 0 {
		return &CommandRebooter{Argv: argv}
	}
	return &SystemdRebooter{}
}

// SystemdRebooter starts reboot.target through systemd's D-Bus API, so
// services stop and file systems are synced and unmounted in order.
type SystemdRebooter struct {
	// Dial connects to systemd; nil: the system bus.
	Dial func(ctx context.Context) (*sdbus.Conn, error)
}

// Reboot queues reboot.target with mode replace-irreversibly: nothing can
// cancel it once queued. It returns when the job is queued.
func (r *SystemdRebooter) Reboot(ctx context.Context) error {
	dial := r.Dial
	if dial == nil {
		dial = sdbus.NewWithContext
	}
	conn, err := dial(ctx)
	if err != nil {
		return fmt.Errorf("reboot: connecting to systemd: %w", err)
	}
	defer conn.Close()
	if _, err := conn.StartUnitContext(ctx, "reboot.target", "replace-irreversibly", nil); err != nil {
		return fmt.Errorf("reboot: starting reboot.target: %w", err)
	}
	return nil
}

// CommandRebooter runs a configured reboot command after syncing.
type CommandRebooter struct{ Argv []string }

// Reboot syncs file systems and runs the command.
func (r *CommandRebooter) Reboot(ctx context.Context) error {
	unix.Sync()
	out, err := exec.CommandContext(ctx, r.Argv[0], r.Argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("reboot command %q: %w: %s", r.Argv, err, tail(out))
	}
	return nil
}

func tail(b []byte) string {
	if len(b) > 512 {
		b = b[len(b)-512:]
	}
	return string(b)
}
