package channel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"time"

	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/fleet"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/update"
)

// Engine is the part of the update engine the agent drives (fleet.Updater
// satisfies it; the fleet benchmark replaces it with a recorder).
type Engine interface {
	Install(ctx context.Context, source string, opts map[string]any) (string, error)
	Status() update.Status
	Subscribe() (<-chan update.Event, func())
}

// Clock is the agent's time source; tests and the benchmark inject one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now is time.Now.
func (SystemClock) Now() time.Time { return time.Now() }

// After is time.After.
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Retry policy for releases that did not take on this device.
const (
	// MaxFailures: a release whose install failed this often is not tried
	// again until a new release id is published.
	MaxFailures = 3
	maxSkipped  = 16
)

// Agent is the device side: it polls, decides, installs through the
// engine, follows the install across the reboot (fleet.Action in Actions)
// and reports the outcome. An action is saved before every side effect.
type Agent struct {
	Poller    *Poller
	Engine    Engine
	DeviceID  string
	Actions   fleet.Store // the install in flight (one at a time)
	FS        journal.FS
	Dir       string  // data dir for the skip list
	Outbox    *Outbox // nil: no reports
	ReportURL string
	Client    Doer // reports (nil: http.DefaultClient)
	Interval  time.Duration
	Jitter    time.Duration
	Clock     Clock
	Rand      *rand.Rand
	Logf      func(format string, a ...any)
}

// skipped is how often a release failed here, and whether it rolled back.
type skipped struct {
	Failures int  `json:"failures"`
	Rollback bool `json:"rollback,omitempty"`
}

func (a *Agent) now() time.Time {
	if a.Clock == nil {
		return time.Now()
	}
	return a.Clock.Now()
}

func (a *Agent) logf(format string, args ...any) {
	if a.Logf != nil {
		a.Logf(format, args...)
	}
}

// Delay is the next poll's delay: Interval ± Jitter, drawn uniformly, so
// a fleet that booted together spreads out over the interval.
func (a *Agent) Delay() time.Duration {
	d := a.Interval
	if a.Jitter > 0 && a.Rand != nil {
		d += time.Duration(a.Rand.Int64N(int64(2*a.Jitter)+1)) - a.Jitter
	}
	if d < time.Second {
		d = time.Second
	}
	return d
}

// Run polls until ctx ends: first after a random share of the jitter, then
// every Delay. Engine events settle the install in flight as they come;
// reports are flushed after every poll and every outcome.
func (a *Agent) Run(ctx context.Context) error {
	events, stop := a.Engine.Subscribe()
	defer stop()
	first := time.Duration(0)
	if a.Jitter > 0 && a.Rand != nil {
		first = time.Duration(a.Rand.Int64N(int64(a.Jitter) + 1))
	}
	timer := a.Clock.After(first)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			var err error
			switch ev.Kind {
			case "completed":
				err = a.completed(ev)
			case "operation", "rolledback":
				// A commit or a rollback after the reboot ends an armed
				// action now, not at the next poll an interval away.
				err = a.settleArmed()
			default:
				continue
			}
			if err != nil {
				a.logf("channel: %v", err)
			}
			a.flush(ctx)
		case <-timer:
			dec, err := a.Step(ctx)
			if err != nil {
				a.logf("channel: %v", err)
			} else if dec.Action != None {
				a.logf("channel: %s %s: %s", dec.Action, releaseID(dec), dec.Reason)
			}
			a.flush(ctx)
			timer = a.Clock.After(a.Delay())
		}
	}
}

func releaseID(d Decision) string {
	if d.Release == nil {
		return ""
	}
	return d.Release.ID
}

func (a *Agent) flush(ctx context.Context) {
	if a.Outbox == nil || a.ReportURL == "" {
		return
	}
	if _, err := a.Outbox.Flush(ctx, a.Client, a.ReportURL); err != nil {
		a.logf("channel: %v (kept in the spool, retried at the next poll)", err)
	}
}

// Step is one poll: settle the install in flight, fetch and verify the
// document, decide, and start an install when the decision says so.
func (a *Agent) Step(ctx context.Context) (Decision, error) {
	act, err := a.Actions.Load()
	if err != nil {
		return Decision{}, err
	}
	if act.Open() {
		if err := a.settle(act); err != nil {
			return Decision{}, err
		}
		if act.Open() {
			return Decision{Reason: "install of " + act.Note("release") + " in flight"}, nil
		}
	}
	if act.Owed() {
		if err := a.spool(act); err != nil {
			return Decision{}, err
		}
	}
	st := a.Engine.Status()
	now := a.now()
	f, err := a.Poller.Fetch(ctx, now)
	if err != nil {
		return Decision{}, err
	}
	skip, err := a.loadSkipped()
	if err != nil {
		return Decision{}, err
	}
	dev := Device{ID: a.DeviceID, Version: st.Version, ImageSHA256: activeImage(st), Now: now}
	for id, s := range skip {
		if s.Rollback || s.Failures >= MaxFailures {
			dev.Skip = append(dev.Skip, id)
		}
	}
	dec := Decide(f.Doc, dev)
	if dec.Action != Install {
		return dec, nil
	}
	if st.Operation != update.OpIdle || st.TrialBoot {
		dec.Action, dec.Reason = Wait, dec.Reason+"; engine busy ("+st.Operation+")"
		return dec, nil
	}
	return dec, a.install(ctx, st, dec, now)
}

func activeImage(st update.Status) string {
	for _, s := range st.Slots {
		if s.Name == st.BootSlot {
			return s.SHA256
		}
	}
	return ""
}

func (a *Agent) install(ctx context.Context, st update.Status, dec Decision, now time.Time) error {
	src, err := a.Poller.Resolve(dec.File)
	if err != nil {
		return err
	}
	so := SourceOptions{Files: map[string]File{src: dec.File}}
	opts := map[string]any{"source-options": so}
	if dec.Fallback != nil {
		fb, err := a.Poller.Resolve(*dec.Fallback)
		if err != nil {
			return err
		}
		opts["fallback"] = fb
		so.Files[fb] = *dec.Fallback
	}
	r := dec.Release
	act := &fleet.Action{ID: r.ID + "/" + strconv.FormatInt(now.UnixNano(), 36), Phase: fleet.PhaseInstalling,
		Source: src, Version: r.Version, PrevTx: st.Tx, Booted: st.BootSlot, Target: fleet.Other(st.BootSlot),
		Attempts: 1, Received: now, Updated: now}
	act.SetNote("release", r.ID)
	act.SetNote("from", st.Version)
	act.SetNote("started", now.UTC().Format(time.RFC3339Nano))
	if err := a.Actions.Save(act); err != nil { // before the side effect
		return err
	}
	tx, err := a.Engine.Install(ctx, src, opts)
	if errors.Is(err, update.ErrBusy) || ctx.Err() != nil {
		// Not this release's fault (another install runs, or otad stops):
		// close the action without a report; the next poll decides again.
		act.Finish(fleet.Outcome{Kind: fleet.Failure, Reason: "not started: " + err.Error()})
		act.Delivered, act.Updated = true, a.now()
		return a.Actions.Save(act)
	}
	if err != nil {
		act.Finish(fleet.Outcome{Kind: fleet.Failure, Reason: "install not started: " + err.Error()})
		return a.finish(act)
	}
	act.Tx, act.Updated = tx, a.now()
	return a.Actions.Save(act)
}

// completed handles the engine's end of an install.
func (a *Agent) completed(ev update.Event) error {
	act, err := a.Actions.Load()
	if err != nil || act == nil || act.Phase != fleet.PhaseInstalling || (act.Tx != "" && act.Tx != ev.Tx) {
		return err
	}
	act.Tx, act.Updated = ev.Tx, a.now()
	if ev.Result == update.ResultOK {
		act.Phase = fleet.PhaseArmed
		act.SetNote("armed", act.Updated.UTC().Format(time.RFC3339Nano))
		return a.Actions.Save(act)
	}
	act.Finish(fleet.FromCompleted(ev))
	return a.finish(act)
}

// settleArmed settles an armed action from the engine's state.
func (a *Agent) settleArmed() error {
	act, err := a.Actions.Load()
	if err != nil || !act.Open() || act.Phase == fleet.PhaseInstalling {
		return err
	}
	return a.settle(act)
}

// settle decides an open action from the engine's state, after a restart
// or a reboot.
func (a *Agent) settle(act *fleet.Action) error {
	st := a.Engine.Status()
	if act.Phase == fleet.PhaseInstalling && act.Tx == "" {
		if st.Tx == act.PrevTx {
			act.Finish(fleet.Outcome{Kind: fleet.Failure, Reason: "interrupted before the install started"})
			return a.finish(act)
		}
		act.Tx = st.Tx
	}
	busy := st.Operation == update.OpDownloading || st.Operation == update.OpVerifying || st.Operation == update.OpWriting
	if busy && st.Tx == act.Tx {
		return nil // the completed event will come
	}
	if o, ok := fleet.Decide(act, st); ok {
		if act.Phase == fleet.PhaseInstalling && o.Kind == fleet.Failure && st.BootSlot != act.Target && !armedSince(st, act) {
			o.Reason = "install failed: " + o.Reason
		} else if act.Phase == fleet.PhaseInstalling {
			// Armed before the cut (the completed event was lost with it):
			// the outcome is a success or a rollback.
			act.Phase = fleet.PhaseArmed
			act.SetNote("armed", a.armedAt(st, act).UTC().Format(time.RFC3339Nano))
		}
		act.Finish(o)
		return a.finish(act)
	}
	if act.Phase == fleet.PhaseInstalling {
		if st.Operation == update.OpPendingReboot || slotState(st, act.Target) == "pending" {
			act.Phase = fleet.PhaseArmed
			act.SetNote("armed", a.armedAt(st, act).UTC().Format(time.RFC3339Nano))
			return a.Actions.Save(act)
		}
		if st.Operation == update.OpIdle {
			reason := st.LastError
			if reason == "" {
				reason = "install ended without arming slot " + act.Target
			}
			act.Finish(fleet.Outcome{Kind: fleet.Failure, Reason: reason})
			return a.finish(act)
		}
	}
	return nil
}

func slotState(st update.Status, name string) string {
	for _, s := range st.Slots {
		if s.Name == name {
			return s.State
		}
	}
	return ""
}

// armedSince: the target was activated (armed) after the action started.
func armedSince(st update.Status, act *fleet.Action) bool {
	for _, s := range st.Slots {
		if s.Name == act.Target {
			return !s.Activated.IsZero() && !s.Activated.Before(act.Received.Add(-time.Second))
		}
	}
	return false
}

// armedAt is when the engine armed the target (its slot record), or now.
func (a *Agent) armedAt(st update.Status, act *fleet.Action) time.Time {
	for _, s := range st.Slots {
		if s.Name == act.Target && !s.Activated.IsZero() {
			return s.Activated
		}
	}
	return a.now()
}

// finish saves the final outcome, then spools its report.
func (a *Agent) finish(act *fleet.Action) error {
	act.Updated = a.now()
	if err := a.Actions.Save(act); err != nil {
		return err
	}
	return a.spool(act)
}

// spool turns a decided action into a report in the outbox, then marks it
// delivered. A cut between the two re-spools it: Outbox.Add is a no-op for
// an id it has seen.
func (a *Agent) spool(act *fleet.Action) error {
	result := ResultFailure
	switch {
	case act.Outcome.Kind == fleet.Success:
		result = ResultSuccess
	case act.Note("armed") != "":
		result = ResultRollback
	}
	if result != ResultSuccess {
		if err := a.markSkipped(act.Note("release"), result == ResultRollback); err != nil {
			return err
		}
	}
	if a.Outbox != nil {
		phases := map[string]float64{}
		start, _ := time.Parse(time.RFC3339Nano, act.Note("started"))
		if armed, err := time.Parse(time.RFC3339Nano, act.Note("armed")); err == nil {
			phases["install"] = armed.Sub(start).Seconds()
			phases["activate"] = act.Updated.Sub(armed).Seconds()
		} else if !start.IsZero() {
			phases["install"] = act.Updated.Sub(start).Seconds()
		}
		pseudo := Pseudonym(a.DeviceID)
		// Engine reasons may quote a URL: never send its userinfo or query.
		r := Report{ID: pseudo + "/" + act.ID, Device: pseudo, Release: act.Note("release"), From: act.Note("from"),
			To: act.Version, Result: result, Reason: fetch.RedactText(act.Outcome.Reason), Phases: phases, Time: act.Updated.UTC()}
		if err := a.Outbox.Add(r); err != nil {
			return err
		}
	}
	act.Delivered = true
	return a.Actions.Save(act)
}

func (a *Agent) skipPath() string { return filepath.Join(a.Dir, "skipped.json") }

func (a *Agent) loadSkipped() (map[string]skipped, error) {
	m := map[string]skipped{}
	if a.FS == nil {
		return m, nil
	}
	b, err := journal.ReadFile(a.FS, a.skipPath())
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return map[string]skipped{}, nil // forget a corrupt list: at worst a release is tried again
	}
	return m, nil
}

func (a *Agent) markSkipped(id string, rollback bool) error {
	if a.FS == nil || id == "" {
		return nil
	}
	m, err := a.loadSkipped()
	if err != nil {
		return err
	}
	s := m[id]
	s.Failures++
	s.Rollback = s.Rollback || rollback
	m[id] = s
	for k := range m { // bounded: drop arbitrary old entries
		if len(m) <= maxSkipped {
			break
		}
		if k != id {
			delete(m, k)
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("channel: %w", err)
	}
	if err := a.FS.MkdirAll(a.Dir, 0o755); err != nil {
		return fmt.Errorf("channel: %w", err)
	}
	return journal.WriteFileAtomic(a.FS, a.skipPath(), b)
}
