package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeDog is a watchdog device that records every operation as a line in a
// file, the way a test bench would log what the hardware saw.
type fakeDog struct {
	t    *testing.T
	path string

	mu       sync.Mutex
	secs     int
	frozen   bool          // set by the test: any pet from now on is a bug
	petted   chan struct{} // one token per pet, never blocks
	setErr   error
	closeErr error // returned by magicClose
	closed   bool
}

func newFakeDog(t *testing.T, secs int) *fakeDog {
	return &fakeDog{t: t, path: filepath.Join(t.TempDir(), "watchdog.log"), secs: secs, petted: make(chan struct{}, 1024)}
}

func (d *fakeDog) record(line string) {
	f, err := os.OpenFile(d.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		d.t.Error(err)
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

func (d *fakeDog) setTimeout(secs int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.setErr != nil {
		return d.setErr
	}
	d.secs = secs
	d.record(fmt.Sprintf("settimeout %d", secs))
	return nil
}

func (d *fakeDog) timeout() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.secs, nil
}

func (d *fakeDog) keepalive() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		d.t.Error("keepalive on a closed device")
	}
	if d.frozen {
		d.t.Error("watchdog petted after the confirmation stopped petting")
	}
	d.record("keepalive")
	select {
	case d.petted <- struct{}{}:
	default:
	}
	return nil
}

func (d *fakeDog) magicClose() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	d.record("V")
	d.record("close")
	return d.closeErr
}

func (d *fakeDog) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	d.record("close")
	return nil
}

func (d *fakeDog) freeze() {
	d.mu.Lock()
	d.frozen = true
	d.mu.Unlock()
}

// lines returns what the device saw, one operation per entry.
func (d *fakeDog) lines() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, err := os.ReadFile(d.path)
	if err != nil && !os.IsNotExist(err) {
		d.t.Fatal(err)
	}
	return strings.Fields(strings.ReplaceAll(string(b), "settimeout ", "settimeout="))
}

func count(lines []string, op string) int {
	n := 0
	for _, l := range lines {
		if l == op {
			n++
		}
	}
	return n
}

// waitPets blocks until the device saw n more pets or ctx ends.
func (d *fakeDog) waitPets(ctx context.Context, n int) error {
	for i := 0; i < n; i++ {
		select {
		case <-d.petted:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func TestWatchdogOpenSetsTimeoutAndPets(t *testing.T) {
	dog := newFakeDog(t, 60)
	w, err := newWatchdog(dog, 25*time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	if w.Timeout() != 25*time.Second {
		t.Fatalf("timeout %v", w.Timeout())
	}
	// The driver may round: the read-back value is what counts.
	dog.secs = 0
	if _, err := newWatchdog(dog, 0, false); !errors.Is(err, ErrNotWatchdog) {
		t.Fatalf("zero timeout from driver: %v", err)
	}
	if got := dog.lines(); strings.Join(got, " ") != "settimeout=25 keepalive" {
		t.Fatalf("device saw %v", got)
	}

	// A driver with a fixed timeout refuses SETTIMEOUT: use what it has.
	fixed := newFakeDog(t, 16)
	fixed.setErr = unix.EOPNOTSUPP
	w, err = newWatchdog(fixed, 5*time.Second, false)
	if err != nil || w.Timeout() != 16*time.Second {
		t.Fatalf("fixed-timeout driver: %v %v", w, err)
	}
	// Something that does not speak the ioctls at all is not a watchdog.
	tty := newFakeDog(t, 16)
	tty.setErr = unix.ENOTTY
	if _, err := newWatchdog(tty, 5*time.Second, false); !errors.Is(err, ErrNotWatchdog) {
		t.Fatalf("ENOTTY: %v", err)
	}
}

func TestWatchdogRefusesNonDevices(t *testing.T) {
	// A regular file must stay untouched: no 'V' may land in it.
	p := filepath.Join(t.TempDir(), "not-a-watchdog")
	if err := os.WriteFile(p, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenWatchdog(p, time.Second); !errors.Is(err, ErrNotWatchdog) {
		t.Fatalf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "data" {
		t.Fatalf("file changed to %q", b)
	}
	// A character device that is not a watchdog answers ENOTTY.
	if _, err := OpenWatchdog("/dev/null", time.Second); !errors.Is(err, ErrNotWatchdog) {
		t.Fatalf("/dev/null: %v", err)
	}
	if _, err := OpenWatchdog(filepath.Join(t.TempDir(), "missing"), time.Second); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
}

func TestWatchdogBusyIsExplained(t *testing.T) {
	err := openError("/dev/watchdog0", unix.EBUSY)
	if !errors.Is(err, ErrWatchdogBusy) || !strings.Contains(err.Error(), "RuntimeWatchdogSec") {
		t.Fatalf("EBUSY: %v", err)
	}
	if err := openError("/dev/watchdog0", unix.EACCES); errors.Is(err, ErrWatchdogBusy) {
		t.Fatalf("EACCES reported as busy: %v", err)
	}
}

func TestWatchdogReleaseMagicClose(t *testing.T) {
	dog := newFakeDog(t, 10)
	w, err := newWatchdog(dog, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.Release(context.Background()); err != nil { // idempotent
		t.Fatal(err)
	}
	if err := w.Pet(); err == nil {
		t.Fatal("pet after release succeeded")
	}
	if got := strings.Join(dog.lines(), " "); got != "keepalive V close" {
		t.Fatalf("device saw %q", got)
	}
}

// With NOWAYOUT the magic close is ignored by the kernel, so Release must
// not close: it keeps petting until the daemon's context ends.
func TestWatchdogNowayoutKeepsPetting(t *testing.T) {
	dog := newFakeDog(t, 1)
	w, err := newWatchdog(dog, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	w.period = 30 * time.Millisecond // pet every 10ms
	<-dog.petted                     // the pet at open
	ctx, cancel := context.WithCancel(context.Background())
	if err := w.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := dog.waitPets(wctx, 3); err != nil {
		t.Fatalf("no pets after release under NOWAYOUT: %v", err)
	}
	// Release did not close: only the daemon's end (Close) does, and never
	// with the magic character, which the driver would ignore anyway.
	if l := dog.lines(); count(l, "V") != 0 || count(l, "close") != 0 {
		t.Fatalf("NOWAYOUT device closed by Release: %v", l)
	}
	cancel()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if l := dog.lines(); count(l, "V") != 0 || l[len(l)-1] != "close" {
		t.Fatalf("device saw %v", l)
	}
}

func TestWatchdogCloseWithoutMagic(t *testing.T) {
	dog := newFakeDog(t, 10)
	w, err := newWatchdog(dog, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dog.lines(), " "); got != "keepalive close" {
		t.Fatalf("device saw %q", got)
	}
}
