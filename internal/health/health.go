// Package health decides whether a trial boot is good.
//
// A Confirmer runs Checkers one after another inside one confirmation window
// (default 5 minutes) and returns nil or a *Failure naming the check, the
// reason (failing unit, exit status, timeout) and the tail of its output.
// Invariants:
//   - Confirm returns within Window plus one second even if a checker
//     ignores its context: a hung check is a failed check, never a hung otad.
//   - Cancellation of the caller's context (otad stopping) is NOT a verdict:
//     Confirm then returns the context error, never a *Failure, so the caller
//     must not mark the slot bad and simply confirms again on the next start.
//   - In watchdog mode (b) the hardware watchdog is petted only while the
//     confirmation is in progress and inside its window. On a failure the
//     petting has stopped before Confirm returns and the device stays open
//     without a magic close, so the board resets even if the caller's reboot
//     hangs; U-Boot counts that boot. The magic close happens only after the
//     Commit hook (the one env write) has succeeded.
//
// The package keeps no state on disk; what survives a power cut is the boot
// env, which this package never writes itself.
package health

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// DefaultWindow bounds a whole confirmation when Confirmer.Window is zero.
const DefaultWindow = 5 * time.Minute

// Checker is one health check. Check returns nil when healthy. It should
// return promptly when ctx is done; a *Failure error carries the details
// into the report unchanged.
type Checker interface {
	Check(ctx context.Context) error
}

// CheckerFunc adapts a function to Checker: the hook for checks that are not
// a unit or a command (an application socket, a modem, a sensor...).
type CheckerFunc func(ctx context.Context) error

// Check calls f(ctx).
func (f CheckerFunc) Check(ctx context.Context) error { return f(ctx) }

// Named gives a checker the name reported in a *Failure.
func Named(name string, c Checker) Checker { return namedChecker{name, c} }

type namedChecker struct {
	name string
	Checker
}

func (n namedChecker) Name() string { return n.name }

func hasName(c Checker) bool {
	n, ok := c.(interface{ Name() string })
	return ok && n.Name() != ""
}

// Standard builds the usual checker list from the configuration: the
// systemd target (started through systemd) first (omitted when target is ""), then each command with
// its own timeout, in order.
func Standard(systemd UnitManager, target string, noFailedUnits bool, commands [][]string, commandTimeout time.Duration) []Checker {
	var cs []Checker
	if target != "" {
		cs = append(cs, &TargetChecker{Unit: target, NoFailedUnits: noFailedUnits, Systemd: systemd})
	}
	for _, argv := range commands {
		cs = append(cs, &CommandChecker{Argv: append([]string(nil), argv...), Timeout: commandTimeout})
	}
	return cs
}

// checkName is how reports refer to c: its Name() if it has one.
func checkName(c Checker, i int) string {
	if n, ok := c.(interface{ Name() string }); ok && n.Name() != "" {
		return n.Name()
	}
	return fmt.Sprintf("check %d", i+1)
}

// Failure is the verdict "this slot is bad" with what the journal and
// `otad status` show.
type Failure struct {
	Check  string   // which check failed, e.g. "target boot-complete.target", "command /usr/bin/probe", "commit"
	Reason string   // one line: failing unit, exit status, timeout
	Output string   // tail of the check's output, may be empty
	Units  []string // units found in failed state, if the check looked
	// WindowExpired: the check did not finish inside the confirmation
	// window (a hang, or a target that never became active).
	WindowExpired bool
}

// OutputTail is the tail of the failing check's output (the engine puts its
// last line into the rollback reason).
func (f *Failure) OutputTail() string { return f.Output }

func (f *Failure) Error() string {
	var b strings.Builder
	b.WriteString("health: ")
	if f.Check != "" {
		b.WriteString(f.Check)
		b.WriteString(": ")
	}
	b.WriteString(f.Reason)
	return b.String()
}

// Confirmer runs the confirmation of a trial boot.
type Confirmer struct {
	Checkers []Checker
	// Window bounds the whole confirmation; 0 means DefaultWindow.
	Window time.Duration
	// Watchdog is the hardware watchdog in mode (b); nil means mode (a):
	// systemd owns the device and otad only pings its service watchdog.
	Watchdog *Watchdog
	// PetInterval is how often the watchdog is petted while checks run;
	// 0 means a third of the watchdog timeout.
	PetInterval time.Duration
	// Commit, if set, runs after every check passed, still inside the window
	// and while the watchdog is still petted; the watchdog is released
	// (magic close) only after it returns nil. Its error becomes a *Failure
	// with Check "commit". If nil, the watchdog is released when the checks
	// pass and the caller commits after Confirm returns.
	Commit func(ctx context.Context) error
}

// Confirm runs every checker in order within the window. It returns
//   - nil when all passed (and Commit, if set, succeeded);
//   - a *Failure for a bad slot: mark it bad and reboot;
//   - an error wrapping ErrRelease: healthy and committed, only the magic
//     close failed (the board may reset once, into the committed slot);
//   - otherwise an error wrapping ctx's error: interrupted, not a verdict.
//     If it was interrupted during Commit, the env may or may not have been
//     written: re-read the boot state.
func (c *Confirmer) Confirm(ctx context.Context) error {
	window := c.Window
	if window <= 0 {
		window = DefaultWindow
	}
	wctx, cancel := context.WithTimeoutCause(ctx, window, errWindow)
	defer cancel()

	stopPetting := c.startPetting(wctx)
	fail := func(f *Failure) error {
		// Stop before returning: from here on only a reboot or the
		// hardware reset ends this boot.
		stopPetting()
		return f
	}

	for i, chk := range c.Checkers {
		name := checkName(chk, i)
		err := runBounded(wctx, chk.Check)
		if err == nil && wctx.Err() == nil {
			continue
		}
		if ctx.Err() != nil {
			stopPetting()
			return fmt.Errorf("health: confirmation interrupted during %s: %w", name, ctx.Err())
		}
		if wctx.Err() != nil {
			return fail(&Failure{
				Check:         name,
				Reason:        fmt.Sprintf("still running when the confirmation window of %v expired", window),
				Output:        outputOf(err),
				WindowExpired: true,
			})
		}
		return fail(asFailure(name, hasName(chk), err))
	}

	if c.Commit != nil {
		// Not bounded like a check: an abandoned commit could still write the
		// env while the caller falls back. It is one short env write.
		if err := c.Commit(wctx); err != nil {
			if ctx.Err() != nil {
				stopPetting()
				return fmt.Errorf("health: confirmation interrupted during commit: %w", err)
			}
			return fail(&Failure{Check: "commit", Reason: err.Error()})
		}
	}
	stopPetting()
	if c.Watchdog != nil {
		if err := c.Watchdog.Release(ctx); err != nil {
			return fmt.Errorf("%w: %w", ErrRelease, err)
		}
	}
	return nil
}

var errWindow = errors.New("health: confirmation window expired")

// ErrRelease: the trial boot is healthy and committed, but the hardware
// watchdog could not be magic-closed. Its Healthy method lets the engine
// tell it from a verdict without importing this package.
var ErrRelease error = releaseError{}

type releaseError struct{}

func (releaseError) Error() string {
	return "health: healthy and committed, but releasing the watchdog failed"
}

// Healthy reports true: the slot passed; only the watchdog release failed.
func (releaseError) Healthy() bool { return true }

// abandonGrace is how long a checker gets to return after its context
// ended, so a killed command can still hand over its output tail.
const abandonGrace = time.Second

// runBounded runs fn and returns when it does, or at most abandonGrace after
// ctx is done, so a checker that ignores its context cannot hang the
// confirmation. The goroutine of such a checker is leaked; it is already
// stuck and the caller is about to reboot.
func runBounded(ctx context.Context, fn func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	grace := time.NewTimer(abandonGrace)
	defer grace.Stop()
	select {
	case err := <-done:
		if err != nil {
			return err // may carry output for the report
		}
	case <-grace.C:
	}
	return context.Cause(ctx)
}

// asFailure turns a checker's error into the report. The checker's Name()
// (which Named sets) wins over whatever Check the error carries.
func asFailure(name string, named bool, err error) *Failure {
	var f *Failure
	if errors.As(err, &f) {
		cp := *f
		if named || cp.Check == "" {
			cp.Check = name
		}
		return &cp
	}
	return &Failure{Check: name, Reason: err.Error()}
}

func outputOf(err error) string {
	var f *Failure
	if errors.As(err, &f) {
		return f.Output
	}
	return ""
}

// startPetting pets the watchdog now and then every PetInterval until ctx
// is done or the returned stop function is called. stop waits for the
// petting goroutine, so no pet happens after it returns.
func (c *Confirmer) startPetting(ctx context.Context) (stop func()) {
	if c.Watchdog == nil {
		return func() {}
	}
	every := c.PetInterval
	if every <= 0 {
		every = c.Watchdog.Timeout() / 3
	}
	if every <= 0 {
		every = time.Second
	}
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			// A failing pet is not fatal here: the device decides, and a
			// board reset during a trial is exactly the fallback path.
			if pctx.Err() != nil {
				return
			}
			_ = c.Watchdog.Pet()
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			wg.Wait()
		})
	}
}
