package health

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notifier speaks the sd_notify protocol to the service manager: one
// datagram per message on the unix socket named by $NOTIFY_SOCKET. Without
// that variable (otad not started by systemd) every call is a no-op.
//
// Watchdog mode (a) is this: systemd owns the hardware watchdog
// (RuntimeWatchdogSec=) and supervises otad through WatchdogSec=; otad sends
// WATCHDOG=1 at half the interval, but only while its main loop answers, so
// a hung daemon is killed and restarted instead of pinged forever.
type Notifier struct {
	// Socket is the notify socket address; a leading '@' names an abstract
	// socket. "" disables notifications.
	Socket string
	// WatchdogInterval is WATCHDOG_USEC; 0 means no service watchdog.
	WatchdogInterval time.Duration
}

// NewNotifier reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. A
// WATCHDOG_PID naming another process means the watchdog is not ours.
func NewNotifier() (*Notifier, error) {
	n := &Notifier{Socket: os.Getenv("NOTIFY_SOCKET")}
	if us := os.Getenv("WATCHDOG_USEC"); us != "" {
		v, err := strconv.ParseUint(us, 10, 63)
		if err != nil || v == 0 {
			return n, fmt.Errorf("health: bad WATCHDOG_USEC %q", us)
		}
		n.WatchdogInterval = time.Duration(v) * time.Microsecond
		if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
			n.WatchdogInterval = 0
		}
	}
	return n, nil
}

// Notify sends the given assignments ("READY=1", "STATUS=...") in one
// datagram.
func (n *Notifier) Notify(assignments ...string) error {
	if n == nil || n.Socket == "" || len(assignments) == 0 {
		return nil
	}
	addr := &net.UnixAddr{Name: n.Socket, Net: "unixgram"}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("health: sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(assignments, "\n"))); err != nil {
		return fmt.Errorf("health: sd_notify: %w", err)
	}
	return nil
}

// Ready tells systemd that startup finished: call it only once the
// persistent state (journal, boot env, slots) is loaded. status, if not
// empty, is sent in the same datagram.
func (n *Notifier) Ready(status string) error {
	if status == "" {
		return n.Notify("READY=1")
	}
	return n.Notify("READY=1", "STATUS="+oneLine(status))
}

// Status sets the one-line status shown by `systemctl status otad`.
func (n *Notifier) Status(status string) error { return n.Notify("STATUS=" + oneLine(status)) }

// Stopping tells systemd that shutdown began.
func (n *Notifier) Stopping() error { return n.Notify("STOPPING=1") }

// Ping sends one WATCHDOG=1.
func (n *Notifier) Ping() error { return n.Notify("WATCHDOG=1") }

// RunWatchdog pings at half the watchdog interval until ctx is done. Before
// each ping it calls alive (if not nil) with a deadline of a quarter of the
// interval; a missing or failed answer skips the ping, so a daemon whose
// main loop hangs is restarted by systemd. It returns nil at once when no
// service watchdog is configured.
func (n *Notifier) RunWatchdog(ctx context.Context, alive func(context.Context) error) error {
	if n == nil || n.Socket == "" || n.WatchdogInterval <= 0 {
		return nil
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
			return nil
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
