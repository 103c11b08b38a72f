// Package sdsys is otad's one systemd-facing package: sd_notify and the
// service watchdog (through go-systemd's daemon package), and starting a
// unit and waiting for its job over D-Bus (go-systemd's dbus package).
// health decides whether a trial boot is good and update drives installs;
// neither imports systemd or D-Bus code, the wiring hands them this
// package's types through small interfaces.
//
// Invariants: without $NOTIFY_SOCKET (otad not started by systemd) every
// notification is a no-op; STATUS= is always one line; the service watchdog
// is pinged only while the caller's liveness probe answers in time, so a
// wedged daemon is restarted instead of pinged forever. The package keeps no
// state on disk.
package sdsys

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier speaks sd_notify to the service manager named by $NOTIFY_SOCKET.
//
// Watchdog mode (a) is this: systemd owns the hardware watchdog
// (RuntimeWatchdogSec=) and supervises otad through WatchdogSec=; otad sends
// WATCHDOG=1 at half the interval, but only while its liveness probe
// answers.
type Notifier struct {
	// WatchdogInterval is WATCHDOG_USEC when it names this process; 0 means
	// no service watchdog.
	WatchdogInterval time.Duration
}

// NewNotifier reads WATCHDOG_USEC and WATCHDOG_PID (go-systemd's
// SdWatchdogEnabled: a WATCHDOG_PID naming another process means the
// watchdog is not ours). NOTIFY_SOCKET is read on every send.
func NewNotifier() (*Notifier, error) {
	iv, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return &Notifier{}, fmt.Errorf("sdsys: %w", err)
	}
	return &Notifier{WatchdogInterval: iv}, nil
}

// Notify sends the assignments ("READY=1", "STATUS=...") in one datagram.
// Without $NOTIFY_SOCKET it does nothing.
func (n *Notifier) Notify(assignments ...string) error {
	if n == nil || len(assignments) == 0 {
		return nil
	}
	if _, err := daemon.SdNotify(false, strings.Join(assignments, "\n")); err != nil {
		return fmt.Errorf("sdsys: sd_notify: %w", err)
	}
	return nil
}

// Ready tells systemd that startup finished: call it only once the
// persistent state (journal, boot env, slots) is loaded. status, if not
// empty, is sent in the same datagram.
func (n *Notifier) Ready(status string) error {
	if status == "" {
		return n.Notify(daemon.SdNotifyReady)
	}
	return n.Notify(daemon.SdNotifyReady, "STATUS="+oneLine(status))
}

// Status sets the one-line status `systemctl status otad` shows.
func (n *Notifier) Status(status string) error { return n.Notify("STATUS=" + oneLine(status)) }

// Stopping tells systemd that shutdown began.
func (n *Notifier) Stopping() error { return n.Notify(daemon.SdNotifyStopping) }

// Ping sends one WATCHDOG=1.
func (n *Notifier) Ping() error { return n.Notify(daemon.SdNotifyWatchdog) }

// RunWatchdog pings at half the watchdog interval until ctx is done. Before
// each ping it calls alive (if not nil) with a deadline of a quarter of the
// interval; a missing or failed answer skips the ping, so a daemon whose
// main loop or engine is wedged is restarted by systemd. It returns at once
// when no service watchdog is configured.
func (n *Notifier) RunWatchdog(ctx context.Context, alive func(context.Context) error) {
	if n == nil || n.WatchdogInterval <= 0 || os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	t := time.NewTicker(n.WatchdogInterval / 2)
	defer t.Stop()
	for {
		if healthy(ctx, alive, n.WatchdogInterval/4) {
			// A send error is transient (systemd restarting its socket);
			// the next tick retries.
			_ = n.Ping()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func healthy(ctx context.Context, alive func(context.Context) error, limit time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	if alive == nil {
		return true
	}
	actx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- alive(actx) }()
	select {
	case err := <-done:
		return err == nil
	case <-actx.Done():
		return false
	}
}

// oneLine keeps STATUS= a single assignment: a newline would start a new one.
func oneLine(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "\r", " "), "\n", " ") }
