package health

import (
	"context"
	"errors"
	"fmt"
	"github.com/otadev/otad/internal/sdsys/sdsystest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// trial is what the engine does with a verdict: commit through the hook on
// success, fall back on a *Failure, nothing on an interrupted confirmation.
type trial struct {
	commits, rollbacks int
	failure            *Failure
}

func (tr *trial) run(t *testing.T, c *Confirmer, ctx context.Context) error {
	t.Helper()
	c.Commit = func(context.Context) error { tr.commits++; return nil }
	err := c.Confirm(ctx)
	if errors.As(err, &tr.failure) {
		tr.rollbacks++
	}
	return err
}

// rollsBack runs a trial that must end in exactly one rollback and no
// commit, and returns its failure.
func rollsBack(t *testing.T, c *Confirmer) *Failure {
	t.Helper()
	var tr trial
	err := tr.run(t, c, context.Background())
	if tr.commits != 0 || tr.rollbacks != 1 {
		t.Fatalf("commits=%d rollbacks=%d err=%v", tr.commits, tr.rollbacks, err)
	}
	return tr.failure
}

// A watchdog that pets every 2ms on a fake device.
func testWatchdog(t *testing.T) (*Watchdog, *fakeDog) {
	t.Helper()
	dog := newFakeDog(t, 1)
	w, err := newWatchdog(dog, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	<-dog.petted // the pet at open
	return w, dog
}

// assertPetsStopped proves that nothing pets the device any more: the fake
// fails the test on any later keepalive, and a few pet intervals pass.
func assertPetsStopped(t *testing.T, dog *fakeDog) {
	t.Helper()
	dog.freeze()
	time.Sleep(30 * time.Millisecond) // 15 pet intervals
	l := dog.lines()
	if count(l, "V") != 0 || count(l, "close") != 0 {
		t.Fatalf("failed trial closed the watchdog (the board would not reset): %v", l)
	}
}

func TestConfirmSuccessCommitsThenMagicClose(t *testing.T) {
	fake := sdsystest.Start(t, map[string]string{DefaultTarget: "done"})
	w, dog := testWatchdog(t)

	// A check that only passes once the watchdog was petted three times
	// while it runs: pets happen while checks make progress.
	waitForPets := CheckerFunc(func(ctx context.Context) error { return dog.waitPets(ctx, 3) })
	c := &Confirmer{
		Checkers: []Checker{
			&TargetChecker{Systemd: fake.Units(), NoFailedUnits: true},
			&CommandChecker{Argv: []string{"/bin/sh", "-c", "test -d /"}, Timeout: 10 * time.Second},
			Named("pets", waitForPets),
		},
		Window:      30 * time.Second,
		Watchdog:    w,
		PetInterval: 2 * time.Millisecond,
	}
	var tr trial
	err := tr.run(t, c, context.Background())
	if err != nil {
		t.Fatalf("healthy trial: %v", err)
	}
	if tr.commits != 1 || tr.rollbacks != 0 {
		t.Fatalf("commits=%d rollbacks=%d", tr.commits, tr.rollbacks)
	}
	l := dog.lines()
	if n := len(l); n < 2 || l[n-2] != "V" || l[n-1] != "close" {
		t.Fatalf("watchdog not magic-closed after commit: %v", l)
	}
	if count(l, "keepalive") < 4 {
		t.Fatalf("too few pets: %v", l)
	}
}

// The magic close must come after the commit: if the commit hangs, the
// board must still reset.
func TestConfirmReleasesWatchdogOnlyAfterCommit(t *testing.T) {
	w, dog := testWatchdog(t)
	c := &Confirmer{Checkers: []Checker{CheckerFunc(func(context.Context) error { return nil })}, Watchdog: w, PetInterval: 2 * time.Millisecond}
	var seenAtCommit []string
	c.Commit = func(context.Context) error { seenAtCommit = dog.lines(); return nil }
	if err := c.Confirm(context.Background()); err != nil {
		t.Fatal(err)
	}
	if count(seenAtCommit, "V") != 0 || count(seenAtCommit, "close") != 0 {
		t.Fatalf("watchdog released before commit: %v", seenAtCommit)
	}
	if l := dog.lines(); l[len(l)-2] != "V" {
		t.Fatalf("no magic close: %v", l)
	}

	// A failing commit is a failure: no release, pets stop.
	w2, dog2 := testWatchdog(t)
	c2 := &Confirmer{Watchdog: w2, PetInterval: 2 * time.Millisecond,
		Commit: func(context.Context) error { return errors.New("bootenv: write failed") }}
	var f *Failure
	if err := c2.Confirm(context.Background()); !errors.As(err, &f) || f.Check != "commit" || !strings.Contains(f.Reason, "write failed") {
		t.Fatalf("got %v", err)
	}
	assertPetsStopped(t, dog2)
}

func TestConfirmFailingUnitIsNamed(t *testing.T) {
	fake := sdsystest.Start(t, map[string]string{DefaultTarget: "dependency"}, "gateway-app.service")
	w, dog := testWatchdog(t)
	c := &Confirmer{
		Checkers:    []Checker{&TargetChecker{Systemd: fake.Units()}, CheckerFunc(func(context.Context) error { t.Error("check after a failure ran"); return nil })},
		Window:      30 * time.Second,
		Watchdog:    w,
		PetInterval: 2 * time.Millisecond,
	}
	f := rollsBack(t, c)
	if f.Check != "target boot-complete.target" || !reflect.DeepEqual(f.Units, []string{"gateway-app.service"}) ||
		!strings.Contains(f.Reason, "gateway-app.service") || !strings.Contains(f.Reason, `"dependency"`) {
		t.Fatalf("failure %+v", f)
	}
	assertPetsStopped(t, dog)
}

func TestConfirmFailingCommandKeepsOutputTail(t *testing.T) {
	w, dog := testWatchdog(t)
	script := `seq 1 5000; echo "modem: no carrier" >&2; exit 3`
	c := &Confirmer{
		Checkers:    []Checker{&CommandChecker{Argv: []string{"/bin/sh", "-c", script}, Timeout: 10 * time.Second, TailBytes: 64}},
		Window:      30 * time.Second,
		Watchdog:    w,
		PetInterval: 2 * time.Millisecond,
	}
	f := rollsBack(t, c)
	if !strings.HasPrefix(f.Check, "command /bin/sh -c") || f.Reason != "exit status 3" {
		t.Fatalf("failure %+v", f)
	}
	if !strings.HasSuffix(f.Output, "4999\n5000\nmodem: no carrier\n") || !strings.HasPrefix(f.Output, "…") || len(f.Output) > 64+len("…") {
		t.Fatalf("output tail %q", f.Output)
	}
	assertPetsStopped(t, dog)
}

func TestCommandTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The shell forks a grandchild that would outlive a plain kill of sh.
	script := fmt.Sprintf(`sleep 300 & echo $! > %s; echo started; wait`, pidFile)
	err := (&CommandChecker{Argv: []string{"/bin/sh", "-c", script}, Timeout: time.Second}).Check(context.Background())
	var f *Failure
	if !errors.As(err, &f) || !strings.Contains(f.Reason, "timed out after 1s") || !strings.Contains(f.Output, "started") {
		t.Fatalf("got %#v", err)
	}
	assertGone(t, pidFile)
}

func TestCommandNotFound(t *testing.T) {
	err := (&CommandChecker{Argv: []string{"/nonexistent/otad-probe"}}).Check(context.Background())
	var f *Failure
	if !errors.As(err, &f) || !strings.Contains(f.Reason, "no such file") {
		t.Fatalf("got %v", err)
	}
	if err := (&CommandChecker{}).Check(context.Background()); !errors.As(err, &f) {
		t.Fatalf("empty argv: %v", err)
	}
}

// assertGone waits (bounded) until the process in pidFile no longer runs.
// A killed orphan may stay a zombie until its new parent reaps it.
func assertGone(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return // gone
		}
		if f := strings.Fields(string(stat)[strings.LastIndexByte(string(stat), ')')+1:]); len(f) > 0 && f[0] == "Z" {
			return // killed, not yet reaped
		}
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL) // our own grandchild: do not leak it
			t.Fatalf("grandchild %d survived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConfirmHangingCheckEndsAtWindow(t *testing.T) {
	w, dog := testWatchdog(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	hang := &CommandChecker{Argv: []string{"/bin/sh", "-c", fmt.Sprintf(`echo $$ > %s; echo probing; sleep 300`, pidFile)}}
	c := &Confirmer{Checkers: []Checker{hang}, Window: time.Second, Watchdog: w, PetInterval: 2 * time.Millisecond}
	f := rollsBack(t, c)
	if !f.WindowExpired || !strings.HasPrefix(f.Check, "command /bin/sh") || !strings.Contains(f.Reason, "window of 1s expired") {
		t.Fatalf("failure %+v", f)
	}
	if !strings.Contains(f.Output, "probing") {
		t.Fatalf("window failure lost the command output: %q", f.Output)
	}
	assertGone(t, pidFile)
	assertPetsStopped(t, dog)
}

// A checker that ignores its context entirely still cannot hold the
// confirmation past the window.
func TestConfirmCheckIgnoringContext(t *testing.T) {
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	c := &Confirmer{
		Checkers: []Checker{Named("app socket", CheckerFunc(func(context.Context) error { <-stuck; return nil }))},
		Window:   100 * time.Millisecond,
	}
	var tr trial
	err := tr.run(t, c, context.Background())
	if tr.rollbacks != 1 || tr.commits != 0 || tr.failure.Check != "app socket" || !tr.failure.WindowExpired {
		t.Fatalf("got %v (commits=%d)", err, tr.commits)
	}
}

// "Health check never confirms": boot-complete.target's start job never
// finishes (a required unit stuck activating), so the window decides.
func TestConfirmTargetNeverConfirms(t *testing.T) {
	fake := sdsystest.Start(t, map[string]string{}) // no JobRemoved, ever
	w, dog := testWatchdog(t)
	c := &Confirmer{
		Checkers:    []Checker{&TargetChecker{Systemd: fake.Units()}},
		Window:      time.Second,
		Watchdog:    w,
		PetInterval: 2 * time.Millisecond,
	}
	if f := rollsBack(t, c); f.Check != "target boot-complete.target" || !f.WindowExpired || !strings.Contains(f.Error(), "window of 1s expired") {
		t.Fatalf("failure %+v", f)
	}
	if got := fake.StartedUnits(); len(got) != 1 {
		t.Fatalf("StartUnit calls %v", got)
	}
	assertPetsStopped(t, dog)
}

// otad stopping mid-confirmation is not a verdict: no commit, no rollback.
func TestConfirmInterruptedIsNotAVerdict(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var started atomic.Bool
	c := &Confirmer{Checkers: []Checker{CheckerFunc(func(ctx context.Context) error {
		started.Store(true)
		cancel()
		<-ctx.Done()
		return ctx.Err()
	})}}
	var tr trial
	err := tr.run(t, c, ctx)
	if !started.Load() || !errors.Is(err, context.Canceled) || tr.rollbacks != 0 || tr.commits != 0 {
		t.Fatalf("err=%v commits=%d rollbacks=%d", err, tr.commits, tr.rollbacks)
	}
}

func TestConfirmPlainErrorAndDefaults(t *testing.T) {
	c := &Confirmer{Checkers: []Checker{
		CheckerFunc(func(context.Context) error { return nil }),
		CheckerFunc(func(context.Context) error { return errors.New("sensor offline") }),
	}}
	err := c.Confirm(context.Background())
	var f *Failure
	if !errors.As(err, &f) || f.Check != "check 2" || f.Reason != "sensor offline" || err.Error() != "health: check 2: sensor offline" {
		t.Fatalf("got %v", err)
	}
	// No checkers, no watchdog, no commit hook: trivially healthy.
	if err := (&Confirmer{}).Confirm(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A failed magic close after a good commit is reported apart from both a
// verdict and an interruption: the slot is committed either way.
func TestConfirmReleaseFailureIsNotARollback(t *testing.T) {
	w, dog := testWatchdog(t)
	dog.closeErr = syscall.EIO
	var tr trial
	err := tr.run(t, &Confirmer{Watchdog: w, PetInterval: 2 * time.Millisecond}, context.Background())
	if !errors.Is(err, ErrRelease) || !errors.Is(err, syscall.EIO) || tr.rollbacks != 0 || tr.commits != 1 {
		t.Fatalf("err=%v commits=%d rollbacks=%d", err, tr.commits, tr.rollbacks)
	}
}

func TestStandardCheckers(t *testing.T) {
	cs := Standard(nil, "gateway.target", true, [][]string{{"/usr/bin/probe", "-q"}, {"/bin/true"}}, 7*time.Second)
	if len(cs) != 3 {
		t.Fatalf("%d checkers", len(cs))
	}
	if tc, ok := cs[0].(*TargetChecker); !ok || tc.Unit != "gateway.target" || !tc.NoFailedUnits {
		t.Fatalf("first checker %#v", cs[0])
	}
	if cc, ok := cs[1].(*CommandChecker); !ok || cc.Name() != "command /usr/bin/probe -q" || cc.Timeout != 7*time.Second {
		t.Fatalf("second checker %#v", cs[1])
	}
	if got := Standard(nil, "", false, [][]string{{"/bin/true"}}, 0); len(got) != 1 {
		t.Fatalf("empty target not omitted: %d checkers", len(got))
	}
}
