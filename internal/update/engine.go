// Package update is otad's engine: it runs one install at a time through
// idle → downloading → verifying → writing → pending-reboot, and after the
// reboot confirming → committed | rolled back.
//
// Invariants (what survives a power cut at any instant):
//   - The journal is saved BEFORE each step that cannot be undone: "writing"
//     before the first byte reaches the target slot, "written" only after
//     the slot was read back and matched the signed SHA-256, and the slot is
//     armed in the boot env only from "written". So a half-written slot is
//     never armed; an interrupted write resumes at its last synced chunk (or
//     restarts) when the engine starts again, at most MaxResumes times.
//   - Every boot env change is ONE write (boot.Protocol); the env store keeps
//     the old copy until the new one is verified.
//   - The anti-rollback floor is raised only after the commit is written.
//   - The active slot is never opened for writing (slot.Open refuses it).
//
// All long work runs in goroutines the engine tracks (Wait); the synchronous
// cores (install, recoverState, confirm) are what tests and the power-cut
// campaign drive step by step.
package update

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/slot"
)

// Sentinel errors callers branch on.
var (
	ErrBusy        = errors.New("update: another install is running")
	ErrCanceled    = errors.New("update: install canceled")
	ErrNoSuchSlot  = errors.New("update: no such slot")
	ErrTooManyRuns = errors.New("update: install interrupted too often, giving up")
	ErrNotArmable  = errors.New("update: refusing to arm a slot that is not completely written and verified")
	// ErrFallbackPending: the env already sends the next boot back to the
	// other slot (a failed trial whose reboot has not happened yet).
	// Installing now would overwrite the slot the device falls back to.
	ErrFallbackPending = errors.New("update: a fallback to the other slot is pending; reboot first")
)

// Results of a "completed" event (the D-Bus Completed signal's result).
const (
	ResultOK       = 0
	ResultFailed   = 1
	ResultCanceled = 2
	// ResultRefused: the bundle itself was refused (signature, key,
	// compatible, downgrade, expiry) before anything was written.
	ResultRefused = 3
)

// resultOf classifies a failed install for its completed event.
func resultOf(err error) int {
	switch {
	case errors.Is(err, ErrCanceled):
		return ResultCanceled
	case errors.Is(err, bundle.ErrBadSignature), errors.Is(err, bundle.ErrUnknownKey), errors.Is(err, bundle.ErrThreshold),
		errors.Is(err, bundle.ErrIncompatible), errors.Is(err, bundle.ErrDowngrade), errors.Is(err, bundle.ErrExpired):
		return ResultRefused
	}
	return ResultFailed
}

// Operations, as Status.Operation and the D-Bus Operation property show them.
const (
	OpIdle          = "idle"
	OpDownloading   = "downloading"
	OpVerifying     = "verifying"
	OpWriting       = "writing"
	OpPendingReboot = "pending-reboot"
	OpConfirming    = "confirming"
	OpRollingBack   = "rolling-back"
)

// Source is an opened bundle source. A Source that can bound how much it
// will ever read also implements Capper; the engine lowers the cap to the
// size the verified manifest declares.
type Source interface {
	io.Reader
	io.Seeker
	io.Closer
	Size() int64
}

// Capper is the optional cap of a Source (a download must never read past
// what the signed manifest declares). LowerCap never raises the cap.
type Capper interface {
	LowerCap(n int64)
}

// Confirmer decides whether a trial boot is healthy (health.Confirmer).
// Its error may refine the verdict through methods the engine looks for
// with errors.As: Healthy() bool reporting true means the slot passed and
// only a side effect failed (the watchdog release), so it is committed;
// OutputTail() string is the failing check's output, whose last line goes
// into the rollback reason.
type Confirmer interface {
	Confirm(ctx context.Context) error
}

// Rebooter restarts the device cleanly (systemd reboot.target or a
// configured command); never a bare reboot(2).
type Rebooter interface {
	Reboot(ctx context.Context) error
}

// Clock is the engine's time source.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Config is everything the engine is built from. Zero fields get the
// defaults New documents; Env, Slots, Journal, OpenSource and Cmdline are
// required.
type Config struct {
	// Log receives the engine's log lines; nil discards them.
	Log        Logger
	Compatible string
	// Slots are the rootfs slots by name ("A", "B").
	Slots map[string]slot.Slot
	// Env is the U-Boot environment; the engine speaks boot.Protocol over it.
	Env       bootenv.Store
	BootLimit int
	// OpenSlot opens target for writing; default slot.Open (refuses active).
	OpenSlot func(target, active slot.Slot) (slot.Target, error)
	// OpenReadOnly opens a slot to read (delta source); default slot.OpenReadOnly.
	OpenReadOnly func(s slot.Slot) (slot.Target, error)
	// VerifyReadBack checks the written slot; default slot.VerifyReadBack.
	VerifyReadBack func(ctx context.Context, t slot.Target, size int64, sum []byte) error
	OpenSource     func(ctx context.Context, src string) (Source, error)
	Keyring        *bundle.Keyring
	Confirmer      Confirmer
	Rebooter       Rebooter
	// AutoReboot reboots right after arming; the "reboot" install option overrides it.
	AutoReboot bool
	Clock      Clock
	// Cmdline returns the kernel command line (otad.slot=).
	Cmdline func() (string, error)
	Journal *journal.Journal
	Floor   floor.Floor
	// MaxResumes caps how often one install is resumed after a restart
	// before it fails (crash-loop breaker). Default 3.
	MaxResumes int
	// SyncBytes: the slot writer is synced and the resume point journaled at
	// least this often (rounded to whole chunks). Default 8 MiB.
	SyncBytes int64
	// ProgressInterval: progress events at least this often. Default 1 s.
	ProgressInterval time.Duration
}

// Progress of the current operation.
type Progress struct {
	Percent int
	Done    int64
	Total   int64
	Phase   string
}

// SlotStatus is one slot as Status reports it.
type SlotStatus struct {
	Name      string
	Device    string
	State     string // good | bad | pending | active | "" (unknown)
	Version   string
	SHA256    string
	Installed time.Time
	Activated time.Time
	Reason    string
}

// Status is a snapshot of the engine.
type Status struct {
	Operation  string
	Progress   Progress
	LastError  string
	BootSlot   string
	Compatible string
	Version    string
	TrialBoot  bool
	Tx         string
	// Installing and Target: the version being installed and its slot,
	// once the bundle is verified; "" outside an install.
	Installing string
	Target     string
	Slots      []SlotStatus
}

// Event is what subscribers receive. Kind is "operation" (Status changed),
// "progress", "completed" (Result: ResultOK, ResultFailed, ResultCanceled,
// ResultRefused) or "rolledback".
type Event struct {
	Kind    string
	Tx      string
	Result  int
	Message string
	Slot    string
	Reason  string
}

// Engine is the update state machine. Create it with New, then Start.
type Engine struct {
	cfg Config

	// runMu serializes env and journal writers (install, confirm, Mark*).
	runMu sync.Mutex

	mu         sync.Mutex
	baseCtx    context.Context
	busy       bool
	cancel     context.CancelFunc
	userCancel bool
	jobDone    chan struct{} // closed by end(): the job's outcome is on disk
	stopAt     time.Time     // when Cancel asked the running job to stop
	status     Status
	lastEmit   time.Time
	subs       map[int]chan Event
	nextSub    int
	booted     string // slot name booted now
	wg         sync.WaitGroup
}

// New checks cfg and fills defaults.
func New(cfg Config) (*Engine, error) {
	if cfg.Env == nil || cfg.Journal == nil || cfg.OpenSource == nil || cfg.Cmdline == nil {
		return nil, errors.New("update: Env, Journal, OpenSource and Cmdline are required")
	}
	if _, ok := cfg.Slots["A"]; !ok {
		return nil, fmt.Errorf("%w: A not configured", ErrNoSuchSlot)
	}
	if _, ok := cfg.Slots["B"]; !ok {
		return nil, fmt.Errorf("%w: B not configured", ErrNoSuchSlot)
	}
	if cfg.Log == nil {
		cfg.Log = discardLogger{}
	}
	if cfg.BootLimit <= 0 {
		cfg.BootLimit = 3
	}
	if cfg.OpenSlot == nil {
		cfg.OpenSlot = slot.Open
	}
	if cfg.OpenReadOnly == nil {
		cfg.OpenReadOnly = slot.OpenReadOnly
	}
	if cfg.VerifyReadBack == nil {
		cfg.VerifyReadBack = slot.VerifyReadBack
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Floor == nil {
		cfg.Floor = &floor.Mem{}
	}
	if cfg.MaxResumes <= 0 {
		cfg.MaxResumes = 3
	}
	if cfg.SyncBytes <= 0 {
		cfg.SyncBytes = 8 << 20
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = time.Second
	}
	e := &Engine{cfg: cfg, subs: map[int]chan Event{}}
	e.status = Status{Operation: OpIdle, Compatible: cfg.Compatible}
	e.baseCtx = context.Background()
	return e, nil
}

// Wait blocks until every background job (install, resume, confirmation)
// has returned. Tests and shutdown use it.
func (e *Engine) Wait() { e.wg.Wait() }

// Subscribe returns a channel of events and a function that ends the
// subscription. Events are dropped for a subscriber that does not keep up,
// never blocking the engine; Status is always current.
func (e *Engine) Subscribe() (<-chan Event, func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	id := e.nextSub
	e.nextSub++
	ch := make(chan Event, 256)
	e.subs[id] = ch
	return ch, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if c, ok := e.subs[id]; ok {
			delete(e.subs, id)
			close(c)
		}
	}
}

func (e *Engine) emitLocked(ev Event) {
	for _, ch := range e.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

func (e *Engine) emit(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.emitLocked(ev)
}

// setOp changes the operation (and resets progress) and tells subscribers.
func (e *Engine) setOp(op, phase string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.status.Operation == op && e.status.Progress.Phase == phase {
		return
	}
	e.status.Operation = op
	e.status.Progress = Progress{Phase: phase}
	if op == OpIdle || op == OpConfirming || op == OpRollingBack {
		e.status.Installing, e.status.Target = "", ""
	}
	e.emitLocked(Event{Kind: "operation", Tx: e.status.Tx, Message: op})
}

// setInstalling records what the running install writes where.
func (e *Engine) setInstalling(version, target string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status.Installing, e.status.Target = version, target
}

func (e *Engine) setLastError(msg string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status.LastError = msg
}

// progress records bytes done; it emits an event when the percentage moved
// or ProgressInterval passed, and never more than once per percent step
// unless a second went by.
func (e *Engine) progress(done, total int64, phase string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	pct := 0
	if total > 0 {
		pct = int(done * 100 / total)
	}
	p := &e.status.Progress
	changed := pct != p.Percent || phase != p.Phase
	p.Done, p.Total, p.Phase, p.Percent = done, total, phase, pct
	now := e.cfg.Clock.Now()
	if changed || now.Sub(e.lastEmit) >= e.cfg.ProgressInterval {
		e.lastEmit = now
		e.emitLocked(Event{Kind: "progress", Tx: e.status.Tx, Message: phase})
	}
}

// heartbeat re-sends the current progress whenever ProgressInterval passed
// without one, so a stalled download or a long read-back or health check
// still reports at least once per interval. The returned stop ends it and
// waits for its goroutine.
func (e *Engine) heartbeat() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(e.cfg.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				e.mu.Lock()
				if now := e.cfg.Clock.Now(); now.Sub(e.lastEmit) >= e.cfg.ProgressInterval && e.busy {
					e.lastEmit = now
					e.emitLocked(Event{Kind: "progress", Tx: e.status.Tx, Message: e.status.Progress.Phase})
				}
				e.mu.Unlock()
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// Status returns a snapshot, slot records included.
func (e *Engine) Status() Status {
	e.mu.Lock()
	st := e.status
	booted := e.booted
	e.mu.Unlock()
	st.Slots = nil
	for _, name := range []string{"A", "B"} {
		s := e.cfg.Slots[name]
		ss := SlotStatus{Name: name, Device: s.Device}
		if r, err := e.cfg.Journal.LoadSlot(name); err == nil {
			ss.State, ss.Version, ss.SHA256 = string(r.State), r.Version, r.SHA256
			ss.Installed, ss.Activated, ss.Reason = r.Installed, r.Activated, r.Reason
		}
		if name == booted && (ss.State == "" || ss.State == string(journal.SlotGood)) {
			ss.State = "active"
		}
		st.Slots = append(st.Slots, ss)
	}
	return st
}

// begin claims the engine for one job or returns ErrBusy.
func (e *Engine) begin(tx string) (context.Context, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.busy {
		return nil, ErrBusy
	}
	ctx, cancel := context.WithCancel(e.baseCtx)
	e.busy, e.cancel, e.userCancel = true, cancel, false
	e.stopAt = time.Time{}
	e.jobDone = make(chan struct{})
	e.status.Tx = tx
	e.status.LastError = ""
	return ctx, nil
}

func (e *Engine) end() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cancel != nil {
		e.cancel()
	}
	if e.jobDone != nil {
		close(e.jobDone)
		e.jobDone = nil
	}
	e.busy, e.cancel = false, nil
}

// canceledByUser reports whether Cancel (not shutdown) stopped the job.
func (e *Engine) canceledByUser() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.userCancel
}

// spawn runs fn in a tracked goroutine.
func (e *Engine) spawn(fn func()) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		fn()
	}()
}

// Cancel stops the running install; the target slot is left marked bad and
// disarmed, the active slot untouched. The job returns within the time the
// current read or write takes (chunks are at most 8 MiB).
func (e *Engine) Cancel() error {
	done, err := e.requestCancel()
	if err != nil {
		return err
	}
	// Return only once the failed install is on disk (target disarmed and
	// recorded bad): a power cut after Cancel returned must not resume
	// and arm the canceled install.
	select {
	case <-done:
		return nil
	case <-time.After(cancelWait):
		return errors.New("update: cancel requested; the install is still stopping")
	}
}

// RequestCancel stops the running install without waiting for it to
// record its end. For callers on the install's own path (test hooks inside
// a device write), where Cancel's wait could never finish.
func (e *Engine) RequestCancel() error {
	_, err := e.requestCancel()
	return err
}

func (e *Engine) requestCancel() (<-chan struct{}, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.busy {
		return nil, errors.New("update: nothing to cancel")
	}
	if e.status.Operation == OpConfirming || e.status.Operation == OpRollingBack {
		return nil, fmt.Errorf("update: cannot cancel %s", e.status.Operation)
	}
	e.userCancel = true
	if e.stopAt.IsZero() {
		e.stopAt = time.Now()
	}
	e.cancel()
	return e.jobDone, nil
}

// Alive reports an error while the engine is wedged: a job asked to stop
// by Cancel more than cancelWait ago is still running (a read or write
// stuck in the kernel). The daemon stops pinging the service watchdog
// then, so systemd restarts it.
func (e *Engine) Alive() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.busy && !e.stopAt.IsZero() {
		if d := time.Since(e.stopAt); d > cancelWait {
			return fmt.Errorf("update: the running job has not stopped %v after it was canceled", d.Round(time.Second))
		}
	}
	return nil
}

// cancelWait bounds how long Cancel waits for the job to record its end.
const cancelWait = 5 * time.Second

// newTx is a 128-bit random transaction id in hex: a bus peer that sees one
// cannot guess the next and aim a forged Completed at it.
func (e *Engine) newTx() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail (Go 1.24+)
	return hex.EncodeToString(b[:])
}

func (e *Engine) bootedSlot() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.booted
}

// other returns the slot name that is not name.
func other(name string) string {
	if name == "A" {
		return "B"
	}
	return "A"
}
