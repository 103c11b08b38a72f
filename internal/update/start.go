package update

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/journal"
)

// Start reads the booted slot, the boot env and the journal, settles what
// an interruption left behind, and starts the background work that is due
// (resuming an interrupted write, or confirming a trial boot). It returns
// once the state is loaded (the daemon then reports READY). ctx is the
// daemon's lifetime: when it ends, running work stops and is resumed by
// the next Start.
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	e.baseCtx = ctx
	e.mu.Unlock()
	job, tx, err := e.recoverState(ctx)
	if err != nil || job == nil {
		return err
	}
	jctx, err := e.begin(tx)
	if err != nil {
		return err
	}
	e.spawn(func() {
		defer e.end()
		_ = job(jctx) // logged and reported inside
	})
	return nil
}

// recoverState is Start's synchronous part. It returns the job to run next
// (nil: none) and its transaction id. The boot env decides, the journal
// explains:
//
//	booted == otad_slot, upgrade_available=1      trial boot: confirm
//	journal in flight, target booted, env on it   commit written, journal not: finish commit
//	journal in flight, target booted, env not     fallback written, no reboot yet: record, reboot
//	journal in flight, env armed for the target   waiting for the reboot
//	journal "written", otad_failed != target      arm never took effect: read back, arm
//	journal in flight, otherwise                  U-Boot (or a fallback) rolled back: record
//	journal "writing"                             resume the write (MaxResumes cap) or fail it
//
// "In flight" is written, pending-reboot or confirming.
func (e *Engine) recoverState(ctx context.Context) (func(context.Context) error, string, error) {
	e.runMu.Lock()
	defer e.runMu.Unlock()
	booted, st, rec, err := e.loadState()
	if err != nil {
		return nil, "", err
	}
	envSlot := e.slotName(st.Slot)
	trial := st.UpgradeAvailable && envSlot == booted
	armed := st.UpgradeAvailable && envSlot != booted
	e.mu.Lock()
	e.status.TrialBoot = trial
	e.mu.Unlock()
	log := e.logger("booted", booted, "journal", string(rec.State))

	inFlight := rec.State == journal.StateWritten || rec.State == journal.StatePendingReboot || rec.State == journal.StateConfirming
	switch {
	case trial:
		log.info("trial boot of a new slot: confirming its health")
		if rec.Target != booted || !inFlight {
			// Armed by something other than this journal (or the journal was
			// lost): confirm all the same, with what we know.
			rec = &journal.Record{Tx: e.newTx(), Target: booted, Active: e.slotName(st.Prev)}
		}
		e.setOp(OpConfirming, "health check of slot "+booted)
		return func(ctx context.Context) error { return e.confirm(ctx, rec) }, rec.Tx, nil

	case inFlight && rec.Target == booted && envSlot == booted:
		// Committed in the env, cut before the journal said so.
		log.info("commit was written before the last stop; finishing it")
		return nil, "", e.finishCommit(rec)

	case inFlight && rec.Target == booted:
		// Fallback was written (health failed), the reboot did not happen.
		log.info("fallback was written before the last stop; rebooting into the previous slot")
		e.recordRollback(rec, rollbackReason(rec, booted))
		e.setOp(OpRollingBack, "reboot into slot "+envSlot)
		e.doReboot(ctx, "fall back to slot "+envSlot)
		return nil, "", nil

	case inFlight && armed && envSlot == rec.Target:
		if rec.State == journal.StateWritten {
			rec.State, rec.Updated = journal.StatePendingReboot, e.cfg.Clock.Now()
			if err := e.cfg.Journal.Save(rec); err != nil {
				return nil, "", err
			}
		}
		log.info("slot " + rec.Target + " is armed; waiting for the reboot")
		e.setOp(OpPendingReboot, "reboot to activate slot "+rec.Target)
		return nil, "", nil

	case rec.State == journal.StateWritten && st.Failed != rec.Target:
		// Verified, and the arm never took effect: an Arm that reached the
		// env clears otad_failed, and only a fallback from the target sets
		// it to the target. Read back once more, then arm.
		log.info("slot " + rec.Target + " was written and verified but not armed; arming it now")
		return func(ctx context.Context) error { return e.rearm(ctx, rec) }, rec.Tx, nil

	case inFlight:
		e.recordRollback(rec, rollbackReason(rec, rec.Target))
		return nil, "", nil

	case rec.State == journal.StateWriting:
		return e.resumeJob(rec, booted)
	}
	e.setOp(OpIdle, "")
	return nil, "", nil
}

// loadState reads the booted slot (kernel command line), the boot env and
// the journal, and records what Status shows of them.
func (e *Engine) loadState() (string, boot.State, *journal.Record, error) {
	cmdline, err := e.cfg.Cmdline()
	if err != nil {
		return "", boot.State{}, nil, fmt.Errorf("update: reading the kernel command line: %w", err)
	}
	bn, err := boot.BootedSlot(cmdline)
	if err != nil {
		return "", boot.State{}, nil, err
	}
	booted := e.slotName(bn)
	if booted == "" {
		return "", boot.State{}, nil, fmt.Errorf("%w: booted slot %q is not configured", ErrNoSuchSlot, bn)
	}
	st, err := e.protocol().State()
	if err != nil {
		return "", boot.State{}, nil, err
	}
	rec, err := e.cfg.Journal.Load()
	if err != nil {
		// The boot env is authoritative; a damaged journal only loses the
		// history of the last install.
		e.logger().withErr(err).error("install journal unreadable; starting from the boot env alone")
		rec = &journal.Record{State: journal.StateIdle}
	}
	e.mu.Lock()
	e.booted = booted
	e.status.BootSlot = booted
	e.status.Tx = rec.Tx
	e.status.LastError = rec.LastError
	e.mu.Unlock()
	if r, err := e.cfg.Journal.LoadSlot(booted); err == nil {
		e.mu.Lock()
		e.status.Version = r.Version
		e.mu.Unlock()
	}
	return booted, st, rec, nil
}

// rearm finishes an install that stopped between "written" and the arm.
func (e *Engine) rearm(ctx context.Context, rec *journal.Record) error {
	e.runMu.Lock()
	defer e.runMu.Unlock()
	err := e.verifyTarget(ctx, rec)
	if err == nil {
		err = e.armAndFinish(ctx, rec, e.cfg.AutoReboot)
	}
	if err != nil && (ctx.Err() == nil || e.canceledByUser()) {
		e.logger(KeyTx, rec.Tx, KeySlot, rec.Target, KeyEvent, EventInstallFailed).withErr(err).error("arming the verified slot failed")
		e.failRecord(rec, err)
	}
	return err
}

// verifyTarget reads the target slot back against the journaled image hash.
func (e *Engine) verifyTarget(ctx context.Context, rec *journal.Record) error {
	sum, err := hex.DecodeString(rec.Bundle.ImageSHA256)
	if err != nil || len(sum) != 32 {
		return fmt.Errorf("update: journal has no valid image hash for slot %s", rec.Target)
	}
	t, err := e.cfg.OpenReadOnly(e.cfg.Slots[rec.Target])
	if err != nil {
		return err
	}
	defer t.Close()
	e.setOp(OpWriting, "reading back slot "+rec.Target)
	return e.cfg.VerifyReadBack(ctx, t, rec.Bundle.ImageSize, sum)
}

// resumeJob decides whether an interrupted write is resumed or failed.
func (e *Engine) resumeJob(rec *journal.Record, booted string) (func(context.Context) error, string, error) {
	log := e.logger(KeyTx, rec.Tx)
	var err error
	switch {
	case rec.Target == booted:
		err = errors.New("update: booted the slot an interrupted install was writing; abandoning that install")
	case rec.Resumes >= e.cfg.MaxResumes:
		err = fmt.Errorf("%w (%d times); last source %s", ErrTooManyRuns, rec.Resumes, rec.Bundle.Source)
	case rec.Bundle.Source == "-" || rec.Bundle.Source == "":
		err = errors.New("update: an install read from stdin cannot be resumed; install again")
	}
	if err != nil {
		log.withErr(err).with(KeySlot, rec.Target, KeyEvent, EventInstallFailed).error("interrupted install failed")
		e.failRecord(rec, err)
		return nil, "", nil
	}
	rec.Resumes++
	rec.Updated = e.cfg.Clock.Now()
	if err := e.cfg.Journal.Save(rec); err != nil {
		return nil, "", err
	}
	log.with("resume", rec.Resumes, "chunk", rec.Resume.Chunks).info("resuming interrupted install")
	req := &installReq{tx: rec.Tx, source: rec.Bundle.Source, reboot: e.cfg.AutoReboot, resume: rec}
	return func(ctx context.Context) error { return e.runInstall(ctx, req) }, rec.Tx, nil
}

// failRecord ends an interrupted install as failed.
func (e *Engine) failRecord(rec *journal.Record, cause error) {
	e.failInstall(rec.Tx, cause)
	e.setLastError(cause.Error())
	e.setOp(OpIdle, "")
	e.emit(Event{Kind: "completed", Tx: rec.Tx, Result: 1, Message: cause.Error()})
}

func rollbackReason(rec *journal.Record, slot string) string {
	if rec.Reason != "" {
		return rec.Reason
	}
	return fmt.Sprintf("slot %s did not boot successfully; the bootloader fell back to slot %s", slot, rec.Active)
}

// recordRollback notes a rolled-back install: target bad, journal
// rolled-back, a rolledback event.
func (e *Engine) recordRollback(rec *journal.Record, reason string) {
	log := e.logger(KeyTx, rec.Tx, KeySlot, rec.Target, KeyVersion, rec.Bundle.Version)
	log.with(KeyEvent, EventRolledBack, KeyReason, reason).error("update rolled back")
	if err := e.cfg.Journal.UpdateSlot(rec.Target, func(s *journal.SlotRecord) {
		s.State, s.Reason = journal.SlotBad, reason
	}); err != nil {
		log.withErr(err).error("recording the slot bad")
	}
	rec.State, rec.Reason, rec.LastError, rec.Updated = journal.StateRolledBack, reason, reason, e.cfg.Clock.Now()
	if err := e.cfg.Journal.Save(rec); err != nil {
		log.withErr(err).error("recording the rollback")
	}
	e.setLastError("rolled back: " + reason)
	e.setOp(OpIdle, "")
	e.emit(Event{Kind: "rolledback", Tx: rec.Tx, Slot: rec.Target, Reason: reason, Result: 1, Message: reason})
}

// confirm runs the health confirmation of a trial boot and commits or
// falls back.
func (e *Engine) confirm(ctx context.Context, rec *journal.Record) error {
	e.runMu.Lock()
	defer e.runMu.Unlock()
	defer e.heartbeat()()
	booted := e.bootedSlot()
	log := e.logger(KeyTx, rec.Tx, KeySlot, booted)
	e.setOp(OpConfirming, "health check of slot "+booted)
	now := e.cfg.Clock.Now()
	rec.State, rec.Updated = journal.StateConfirming, now
	if err := e.cfg.Journal.Save(rec); err != nil {
		log.withErr(err).error("journal")
		return err
	}
	if err := e.cfg.Journal.UpdateSlot(booted, func(s *journal.SlotRecord) {
		if s.Activated.IsZero() || s.State != journal.SlotPending {
			s.Activated = now
		}
		s.State = journal.SlotPending
	}); err != nil {
		log.withErr(err).error("journal")
		return err
	}

	err := e.protocol().CheckCanary(e.bootname(booted))
	if err == nil && e.cfg.Confirmer != nil {
		err = e.cfg.Confirmer.Confirm(ctx)
	} else if err == nil {
		log.warn("no health checks configured; committing the trial boot")
	}
	if healthyAnyway(err) {
		// Healthy; only the watchdog's magic close failed. The board may
		// reset once, into the slot committed below.
		log.withErr(err).warn("health checks passed; committing")
		err = nil
	}
	if ctx.Err() != nil && !e.canceledByUser() {
		// Shutdown mid-check: still a trial boot; the next start checks again
		// and the bootcount bounds how often.
		log.info("confirmation interrupted by shutdown")
		return ctx.Err()
	}
	if err == nil {
		return e.finishCommit(rec)
	}
	return e.fallback(ctx, rec, err)
}

// finishCommit makes the booted trial slot permanent. Every step is
// idempotent, so a restart after a cut at any point finishes it.
func (e *Engine) finishCommit(rec *journal.Record) error {
	booted := e.bootedSlot()
	log := e.logger(KeyTx, rec.Tx, KeySlot, booted)
	if err := e.protocol().Commit(); err != nil {
		log.withErr(err).error("commit")
		e.setLastError("commit: " + err.Error())
		return err
	}
	// Only now may the floor go up: the committed slot holds the bundle.
	if v := rec.Bundle.SecurityVersion; v > 0 {
		if err := e.cfg.Floor.Raise(v); err != nil {
			log.withErr(err).error("raising the anti-rollback floor")
			e.setLastError("floor: " + err.Error())
			return err
		}
		log.with(KeyEvent, EventFloorRaised, "floor", v).info("anti-rollback floor raised")
	}
	if err := e.cfg.Journal.UpdateSlot(booted, func(s *journal.SlotRecord) {
		s.State, s.Reason = journal.SlotGood, ""
		// A lower bound of the floor raised above (floor.JournalBound).
		s.CommittedSecurityVersion = max(s.CommittedSecurityVersion, rec.Bundle.SecurityVersion)
		if s.Activated.IsZero() {
			s.Activated = e.cfg.Clock.Now()
		}
	}); err != nil {
		log.withErr(err).error("journal")
		return err
	}
	rec.State, rec.Updated, rec.LastError = journal.StateCommitted, e.cfg.Clock.Now(), ""
	if err := e.cfg.Journal.Save(rec); err != nil {
		log.withErr(err).error("journal")
		return err
	}
	log.with(KeyVersion, rec.Bundle.Version, KeyEvent, EventCommitted).info("trial boot confirmed and committed")
	e.mu.Lock()
	e.status.TrialBoot = false
	if r, err := e.cfg.Journal.LoadSlot(booted); err == nil {
		e.status.Version = r.Version
	}
	e.mu.Unlock()
	e.setOp(OpIdle, "")
	e.emit(Event{Kind: "completed", Tx: rec.Tx, Slot: booted, Message: "slot " + booted + " confirmed and committed"})
	return nil
}

// fallback marks the trial slot bad, points the env back at the previous
// slot (ONE write) and reboots into it.
func (e *Engine) fallback(ctx context.Context, rec *journal.Record, cause error) error {
	booted := e.bootedSlot()
	log := e.logger(KeyTx, rec.Tx, KeySlot, booted)
	reason := "health check failed: " + cause.Error()
	var hf interface{ OutputTail() string }
	if errors.As(cause, &hf) && strings.TrimSpace(hf.OutputTail()) != "" {
		// The last line of the check's output usually says why.
		out := strings.Split(strings.TrimSpace(hf.OutputTail()), "\n")
		reason += ": " + strings.TrimSpace(out[len(out)-1])
	}
	log.with(KeyReason, reason).warn("trial boot failed; falling back")
	e.setOp(OpRollingBack, "falling back from slot "+booted)
	// The reason goes to the journal first so it survives the reboot.
	rec.Reason, rec.Updated = reason, e.cfg.Clock.Now()
	if err := e.cfg.Journal.Save(rec); err != nil {
		log.withErr(err).error("journal")
	}
	if err := e.protocol().Fallback(); err != nil {
		log.withErr(err).error("writing the fallback; the bootcount limit will still fall back")
		e.setLastError("fallback: " + err.Error())
		return err
	}
	e.recordRollback(rec, reason)
	e.mu.Lock()
	e.status.TrialBoot = false
	e.mu.Unlock()
	e.setOp(OpRollingBack, "reboot into the previous slot")
	e.doReboot(ctx, "fall back from slot "+booted)
	return cause
}

// healthyAnyway reports whether a Confirmer's error says the slot passed
// (see Confirmer).
func healthyAnyway(err error) bool {
	var h interface{ Healthy() bool }
	return errors.As(err, &h) && h.Healthy()
}
