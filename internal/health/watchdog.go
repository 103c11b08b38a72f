package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Watchdog mode (b): otad owns /dev/watchdog during a trial boot.
//
// Opening the device starts (or keeps running) the hardware timer. otad pets
// it while the confirmation makes progress and stops petting on a failure,
// so a hang or a failed check ends in a board reset that U-Boot counts.
// After the commit the device is closed with the magic character 'V', which
// stops the timer — unless the kernel driver runs with NOWAYOUT, in which
// case the timer can never be stopped: Release then keeps petting for the
// life of the daemon (until reboot), and stopping otad resets the board one
// timeout later. Boards with NOWAYOUT should prefer mode (a) (systemd's
// RuntimeWatchdogSec=).
//
// A watchdog device is single-open: if systemd already owns it (mode (a)
// configured at the same time), OpenWatchdog fails with ErrWatchdogBusy.

// ErrWatchdogBusy: another process (usually systemd with RuntimeWatchdogSec=)
// holds the device open.
var ErrWatchdogBusy = errors.New("health: watchdog device busy: another process (systemd RuntimeWatchdogSec=?) owns it; use watchdog mode \"systemd\" or set RuntimeWatchdogSec=0")

// ErrNotWatchdog: the path does not answer watchdog ioctls.
var ErrNotWatchdog = errors.New("health: not a watchdog device")

// wdDevice is the hardware boundary: the ioctls and the close variants of
// one open watchdog. Tests substitute a recording fake.
type wdDevice interface {
	setTimeout(secs int) error
	timeout() (int, error)
	keepalive() error
	magicClose() error // write 'V', then close: stops the timer unless NOWAYOUT
	close() error      // close without 'V': the timer keeps running
}

// Watchdog is an open hardware watchdog.
type Watchdog struct {
	dev      wdDevice
	period   time.Duration
	nowayout bool

	mu         sync.Mutex
	released   bool
	closed     bool
	stopKeeper func() // ends the NOWAYOUT petting after Release
}

// OpenWatchdog opens the device at path (e.g. /dev/watchdog0) and, if
// timeout > 0, sets its timeout (drivers round to what they support; the
// effective value is read back). NOWAYOUT is detected from sysfs.
func OpenWatchdog(path string, timeout time.Duration) (*Watchdog, error) {
	// Refuse anything but a character device before opening: the failure
	// path below writes 'V', which must never land in a regular file.
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("health: watchdog %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return nil, fmt.Errorf("%s: %w (not a character device)", path, ErrNotWatchdog)
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, openError(path, err)
	}
	dev := &fdDevice{fd: fd}
	w, err := newWatchdog(dev, timeout, detectNowayout(path))
	if err != nil {
		// Opening already started the timer; closing without 'V' would
		// leave it running with nobody petting, so try the magic close.
		_ = dev.magicClose()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return w, nil
}

func openError(path string, err error) error {
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%s: %w", path, ErrWatchdogBusy)
	}
	return fmt.Errorf("health: open watchdog %s: %w", path, err)
}

func newWatchdog(dev wdDevice, timeout time.Duration, nowayout bool) (*Watchdog, error) {
	if timeout > 0 {
		secs := int((timeout + time.Second - 1) / time.Second)
		if err := dev.setTimeout(secs); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			return nil, fmt.Errorf("set timeout %ds: %w", secs, notWatchdog(err))
		}
	}
	secs, err := dev.timeout()
	if err != nil {
		return nil, fmt.Errorf("get timeout: %w", notWatchdog(err))
	}
	if secs <= 0 {
		return nil, fmt.Errorf("driver reports timeout %ds: %w", secs, ErrNotWatchdog)
	}
	w := &Watchdog{dev: dev, period: time.Duration(secs) * time.Second, nowayout: nowayout}
	// Pet at once: the timer may have been running since U-Boot or the
	// kernel started it, with an unknown amount of it left.
	if err := w.Pet(); err != nil {
		return nil, err
	}
	return w, nil
}

func notWatchdog(err error) error {
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("%w (%v)", ErrNotWatchdog, err)
	}
	return err
}

// detectNowayout reads the watchdog class attribute for path. The legacy
// /dev/watchdog is a misc device (10:130) without the attribute; it is an
// alias of watchdog0. Unknown means false: the caller's documentation says
// to configure mode (a) on NOWAYOUT boards.
func detectNowayout(path string) bool {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false
	}
	cands := []string{fmt.Sprintf("/sys/dev/char/%d:%d/nowayout", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))}
	if filepath.Base(path) == "watchdog" {
		cands = append(cands, "/sys/class/watchdog/watchdog0/nowayout")
	}
	for _, p := range cands {
		if b, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(b)) == "1"
		}
	}
	return false
}

// Timeout is the effective hardware timeout.
func (w *Watchdog) Timeout() time.Duration { return w.period }

// Pet restarts the hardware timer.
func (w *Watchdog) Pet() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errors.New("health: watchdog already closed")
	}
	if err := w.dev.keepalive(); err != nil {
		return fmt.Errorf("health: watchdog keepalive: %w", err)
	}
	return nil
}

// Release ends otad's ownership after a commit: magic close, which stops the
// timer. With NOWAYOUT the close would not stop it, so Release instead keeps
// petting every third of the timeout until ctx is done (otad shutting down,
// normally for a reboot) and returns at once. Release is idempotent.
func (w *Watchdog) Release(ctx context.Context) error {
	w.mu.Lock()
	if w.released || w.closed {
		w.mu.Unlock()
		return nil
	}
	w.released = true
	if !w.nowayout {
		w.closed = true
		err := w.dev.magicClose()
		w.mu.Unlock()
		if err != nil {
			return fmt.Errorf("health: watchdog magic close: %w", err)
		}
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	w.stopKeeper = func() { cancel(); <-done }
	w.mu.Unlock()
	go func() {
		defer close(done)
		t := time.NewTicker(w.period / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = w.Pet()
			}
		}
	}()
	return nil
}

// Close closes the device WITHOUT the magic character: the timer keeps
// running and resets the board one timeout later unless it reboots first.
// This is the failure path. After a magic close it is a no-op; under
// NOWAYOUT it also ends the petting that Release started.
func (w *Watchdog) Close() error {
	w.mu.Lock()
	stop := w.stopKeeper
	w.stopKeeper = nil
	w.mu.Unlock()
	if stop != nil {
		stop()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.dev.close()
}

// fdDevice is the real device behind the WDIOC ioctls.
type fdDevice struct{ fd int }

func (d *fdDevice) setTimeout(secs int) error {
	// WDIOC_SETTIMEOUT writes the effective value back into the argument;
	// timeout() reads it again, so the written-back copy is not needed.
	return unix.IoctlSetPointerInt(d.fd, unix.WDIOC_SETTIMEOUT, secs)
}

func (d *fdDevice) timeout() (int, error) { return unix.IoctlGetInt(d.fd, unix.WDIOC_GETTIMEOUT) }

func (d *fdDevice) keepalive() error { return unix.IoctlWatchdogKeepalive(d.fd) }

func (d *fdDevice) magicClose() error {
	_, werr := unix.Write(d.fd, []byte{'V'})
	cerr := unix.Close(d.fd)
	if werr != nil {
		return werr
	}
	return cerr
}

func (d *fdDevice) close() error { return unix.Close(d.fd) }
