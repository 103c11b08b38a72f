// Package fleet is what every fleet client (the hawkBit DDI client, the
// static-channel client) shares: the small interface through which a client
// drives the engine, the persisted action with the result still owed to
// the server, and the rule that turns the engine's state after a reboot
// into that result.
//
// API:
//   - Updater: Install, Cancel, Status, Subscribe, Disarm, Reboot,
//     JournalState. EngineUpdater adapts *update.Engine (Disarm = MarkBad
//     of the armed, not yet booted target: ONE env write back to the
//     running slot; JournalState reads the engine's install journal).
//   - Action, Phase, Outcome: one server action as a client tracks it.
//   - Store: the action on disk (Load, Save), written power-fail safe.
//   - Decide: after the reboot, from update.Status, success (target slot
//     booted and committed), failure (target recorded bad, with the
//     engine's reason) or not yet (trial running, reboot pending).
//   - FromCompleted: the outcome of an install that ended before arming.
//
// Invariants:
//   - A client saves the action BEFORE each side effect (Install, Disarm,
//     Reboot, sending the final result) so that after a power cut it can
//     always tell what may have happened; the engine's journal says what
//     did happen, and Decide reads it through Status.
//   - The final result is owed from the moment Outcome is saved until
//     Delivered is saved: a restart at any point sends it again, and only
//     a server that acknowledged it (or said the action is gone) ends it.
//     So the server sees one final result per action, never zero.
//   - Success is never decided before the target slot is committed: the
//     engine records the slot good only after the health check passed and
//     the commit was written.
//
// The store file is replaced with journal.WriteFileAtomic (temp, fsync,
// rename, fsync dir): after a power cut it holds the old or the new action,
// never a mix. This package does not log.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/update"
)

// Updater is the engine as a fleet client drives it; the same backend the
// D-Bus API uses. *update.Engine satisfies all but Disarm; EngineUpdater
// adds it.
type Updater interface {
	// Install starts an install and returns its transaction id.
	Install(ctx context.Context, source string, opts map[string]any) (string, error)
	// Cancel stops the running install (target left bad and disarmed).
	Cancel() error
	// Status is the engine's current state, slot records included.
	Status() update.Status
	// Subscribe streams engine events until the returned stop is called.
	Subscribe() (<-chan update.Event, func())
	// Disarm undoes the arm of target before the device rebooted into it:
	// one env write back to the running slot; target is recorded bad.
	Disarm(target string) error
	// Reboot restarts the device now.
	Reboot(ctx context.Context) error
	// JournalState is the state the engine's install journal records for
	// transaction tx, or "" when the journal is about another install (or
	// unreadable). After a restart it tells a client what became of the
	// install it started: writing (the engine resumes it), written or
	// pending-reboot (verified, armed or about to be), failed, ...
	JournalState(tx string) journal.State
}

// EngineUpdater adapts the engine to Updater. Journal is the engine's
// install journal (nil: JournalState always answers "").
type EngineUpdater struct {
	*update.Engine
	Journal *journal.Journal
}

// JournalState reads the engine's journal record for tx.
func (u EngineUpdater) JournalState(tx string) journal.State {
	if u.Journal == nil || tx == "" {
		return ""
	}
	rec, err := u.Journal.Load()
	if err != nil || rec.Tx != tx {
		return ""
	}
	return rec.State
}

var _ Updater = EngineUpdater{}

// Disarm marks the armed target bad. For a slot that is not the booted one
// the engine writes the env back to the booted slot (ONE write) and, if its
// journal was waiting for the reboot, records the install failed.
func (u EngineUpdater) Disarm(target string) error {
	if st := u.Engine.Status(); st.BootSlot == target {
		return fmt.Errorf("fleet: slot %s is already running; too late to disarm", target)
	}
	return u.Engine.MarkBad(target)
}

// Phase is where a client stands with one action. Each is saved before
// the step it names is taken.
type Phase string

// Phases in the order an action passes through them.
const (
	// PhaseReceived: accepted from the server; nothing on the device touched.
	PhaseReceived Phase = "received"
	// PhaseInstalling: Install is being called or runs (Tx may still be
	// empty after a cut right after the call).
	PhaseInstalling Phase = "installing"
	// PhaseArmed: the engine verified and armed the target; no reboot asked.
	PhaseArmed Phase = "armed"
	// PhaseRebooting: a reboot into the target was requested.
	PhaseRebooting Phase = "rebooting"
	// PhaseFinal: Outcome is decided; it is owed until Delivered.
	PhaseFinal Phase = "final"
)

// Outcome kinds.
const (
	Success = "success"
	Failure = "failure"
	// Canceled: the server's cancel request was accepted.
	Canceled = "canceled"
)

// Outcome is the final result of one action.
type Outcome struct {
	Kind   string `json:"kind"`
	Reason string `json:"reason,omitempty"`
	// Refused: the bundle was refused before anything was written
	// (signature, compatible, downgrade, expiry).
	Refused bool `json:"refused,omitempty"`
}

// Action is one server action as a client tracks it across restarts.
type Action struct {
	// ID is the server's action id.
	ID    string `json:"id"`
	Phase Phase  `json:"phase"`
	// Source is what was handed to Install (artifact URL or path).
	Source  string `json:"source,omitempty"`
	Version string `json:"version,omitempty"`
	// Tx is the engine's transaction for this action; PrevTx the engine's
	// transaction before Install was called, so a cut between the call and
	// saving Tx can still tell whether the engine took the install.
	Tx     string `json:"tx,omitempty"`
	PrevTx string `json:"prev_tx,omitempty"`
	// Booted is the slot that ran when the action was received, Target
	// the slot the install writes.
	Booted string `json:"booted,omitempty"`
	Target string `json:"target,omitempty"`
	// Attempts counts installs started for this action, restarts of the
	// daemon during one included (the client's max-resumes bound).
	Attempts int `json:"attempts,omitempty"`
	// CancelID is a server cancel request being handled for this action.
	CancelID string `json:"cancel_id,omitempty"`
	// Notes holds client-specific progress (e.g. which non-final feedback
	// was sent) that must survive a restart.
	Notes map[string]string `json:"notes,omitempty"`
	// Outcome is the final result once decided; Delivered is set once the
	// server acknowledged it (or said the action no longer exists).
	Outcome   *Outcome  `json:"outcome,omitempty"`
	Delivered bool      `json:"delivered,omitempty"`
	Received  time.Time `json:"received"`
	Updated   time.Time `json:"updated"`
}

// Owed reports whether a final result still has to reach the server.
func (a *Action) Owed() bool { return a != nil && a.Outcome != nil && !a.Delivered }

// Open reports whether the action still needs work (not final).
func (a *Action) Open() bool { return a != nil && a.Phase != PhaseFinal }

// Note returns a note ("" if unset).
func (a *Action) Note(k string) string { return a.Notes[k] }

// SetNote sets a note.
func (a *Action) SetNote(k, v string) {
	if a.Notes == nil {
		a.Notes = map[string]string{}
	}
	a.Notes[k] = v
}

// Finish records the final outcome; the caller saves the action next.
func (a *Action) Finish(o Outcome) {
	a.Phase, a.Outcome, a.Delivered = PhaseFinal, &o, false
}

// ErrCorrupt: the store file exists but does not parse.
var ErrCorrupt = errors.New("fleet: action record corrupt")

// Store keeps one action in a file (in otad's data dir).
type Store struct {
	FS   journal.FS
	Path string
}

// Load returns the stored action, or nil with no error when there is none.
func (s Store) Load() (*Action, error) {
	b, err := journal.ReadFile(s.fs(), s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	var a Action
	if err := json.Unmarshal(b, &a); err != nil || a.ID == "" {
		return nil, fmt.Errorf("%w: %s", ErrCorrupt, s.Path)
	}
	return &a, nil
}

// Save replaces the stored action atomically.
func (s Store) Save(a *Action) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	if err := journal.WriteFileAtomic(s.fs(), s.Path, append(b, '\n')); err != nil {
		return fmt.Errorf("fleet: saving the action: %w", err)
	}
	return nil
}

func (s Store) fs() journal.FS {
	if s.FS == nil {
		return journal.OSFS{}
	}
	return s.FS
}

// Other returns the slot that is not name (the install target).
func Other(name string) string {
	if name == "A" {
		return "B"
	}
	return "A"
}

// Decide turns the engine's state into the final outcome of an armed or
// rebooting action. ok is false while there is nothing to tell yet: the
// reboot has not happened, or the trial boot is still being checked.
//
//	target slot recorded bad                    → failure (the engine's reason)
//	target booted, not on trial, slot good      → success
//	another install replaced ours in the engine → failure
func Decide(a *Action, st update.Status) (o Outcome, ok bool) {
	var target *update.SlotStatus
	for i := range st.Slots {
		if st.Slots[i].Name == a.Target {
			target = &st.Slots[i]
		}
	}
	if target == nil {
		return Outcome{Kind: Failure, Reason: "slot " + a.Target + " is not configured"}, true
	}
	if a.Tx != "" && st.Tx != "" && st.Tx != a.Tx {
		return Outcome{Kind: Failure, Reason: "another install (transaction " + st.Tx + ") replaced this one"}, true
	}
	switch {
	case target.State == "bad":
		reason := target.Reason
		if reason == "" {
			reason = st.LastError
		}
		if reason == "" {
			reason = "slot " + a.Target + " was marked bad"
		}
		return Outcome{Kind: Failure, Reason: reason}, true
	case st.BootSlot == a.Target && !st.TrialBoot && st.Operation != update.OpConfirming &&
		(target.State == "active" || target.State == "good"):
		return Outcome{Kind: Success, Reason: "slot " + a.Target + " booted, health check passed, committed"}, true
	}
	return Outcome{}, false
}

// FromCompleted is the outcome of an install that ended without arming
// (a "completed" event with a non-zero result).
func FromCompleted(ev update.Event) Outcome {
	switch ev.Result {
	case update.ResultRefused:
		return Outcome{Kind: Failure, Reason: "bundle refused: " + ev.Message, Refused: true}
	case update.ResultCanceled:
		return Outcome{Kind: Failure, Reason: "install canceled: " + ev.Message}
	}
	return Outcome{Kind: Failure, Reason: ev.Message}
}
