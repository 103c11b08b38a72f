package update

import (
	"context"
	"errors"
	"fmt"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/journal"
)

// claim runs fn as a short job under the busy flag, so it never overlaps
// an install or confirmation.
func (e *Engine) claim(fn func() error) error {
	e.mu.Lock()
	if e.busy {
		e.mu.Unlock()
		return ErrBusy
	}
	e.busy = true
	e.mu.Unlock()
	defer e.end()
	e.runMu.Lock()
	defer e.runMu.Unlock()
	return fn()
}

func (e *Engine) checkSlot(name string) error {
	if _, ok := e.cfg.Slots[name]; !ok {
		return fmt.Errorf("%w: %q (want A or B)", ErrNoSuchSlot, name)
	}
	if e.bootedSlot() == "" {
		return errors.New("update: engine not started")
	}
	return nil
}

// MarkGood marks slot good. For the booted slot in its trial boot this is
// the commit (ONE env write, floor raised); otherwise only the record.
func (e *Engine) MarkGood(name string) error {
	if err := e.checkSlot(name); err != nil {
		return err
	}
	var commit *journal.Record
	err := e.claim(func() error {
		if name == e.bootedSlot() && e.Status().TrialBoot {
			rec, err := e.cfg.Journal.Load()
			if err != nil || rec.Target != name {
				rec = &journal.Record{Tx: e.newTx(), Target: name, Active: other(name)}
			}
			commit = rec
			return nil
		}
		return e.cfg.Journal.UpdateSlot(name, func(s *journal.SlotRecord) { s.State, s.Reason = journal.SlotGood, "" })
	})
	if err != nil || commit == nil {
		return err
	}
	return e.claim(func() error { return e.finishCommit(commit) })
}

// MarkBad marks slot bad. The other slot is disarmed if it was armed; the
// booted slot can only be marked bad during its trial boot (fallback, ONE
// env write; the device boots the previous slot after the next reboot).
func (e *Engine) MarkBad(name string) error {
	if err := e.checkSlot(name); err != nil {
		return err
	}
	return e.claim(func() error {
		booted := e.bootedSlot()
		if name == booted {
			if !e.Status().TrialBoot {
				return fmt.Errorf("update: slot %s is running and committed; mark the other slot active instead", name)
			}
			if err := e.protocol().Fallback(); err != nil {
				return err
			}
			rec, err := e.cfg.Journal.Load()
			if err != nil || rec.Target != name {
				rec = &journal.Record{Tx: e.newTx(), Target: name, Active: other(name)}
			}
			e.recordRollback(rec, "marked bad by request")
			e.mu.Lock()
			e.status.TrialBoot = false
			e.mu.Unlock()
			e.setOp(OpRollingBack, "reboot into slot "+other(name))
			return nil
		}
		if err := e.protocol().Disarm(e.bootname(booted)); err != nil {
			return err
		}
		if rec, err := e.cfg.Journal.Load(); err == nil && rec.Target == name && rec.State == journal.StatePendingReboot {
			rec.State, rec.LastError, rec.Updated = journal.StateFailed, "marked bad by request", e.cfg.Clock.Now()
			if err := e.cfg.Journal.Save(rec); err != nil {
				return err
			}
		}
		e.setOp(OpIdle, "")
		return e.cfg.Journal.UpdateSlot(name, func(s *journal.SlotRecord) { s.State, s.Reason = journal.SlotBad, "marked bad by request" })
	})
}

// MarkActive makes slot the one the next boot starts. The other slot is
// armed for a trial boot (ONE env write; the booted slot stays the
// fallback); the booted slot is committed if in trial, or any pending arm
// of the other slot is undone.
func (e *Engine) MarkActive(name string) error {
	if err := e.checkSlot(name); err != nil {
		return err
	}
	booted := e.bootedSlot()
	if name == booted && e.Status().TrialBoot {
		return e.MarkGood(name)
	}
	return e.claim(func() error {
		if name == booted {
			return e.protocol().Disarm(e.bootname(booted))
		}
		r, err := e.cfg.Journal.LoadSlot(name)
		if err != nil {
			return err
		}
		if r.State == journal.SlotBad || r.SHA256 == "" {
			return fmt.Errorf("update: slot %s holds no verified image (state %q); install into it first", name, r.State)
		}
		if err := e.protocol().Arm(e.bootname(name), e.bootname(booted)); err != nil {
			return err
		}
		e.setOp(OpPendingReboot, "reboot to activate slot "+name)
		return e.cfg.Journal.UpdateSlot(name, func(s *journal.SlotRecord) { s.State = journal.SlotPending })
	})
}

// Reboot restarts the device now (e.g. with reboot = manual).
func (e *Engine) Reboot(ctx context.Context) error {
	e.mu.Lock()
	busy, op := e.busy, e.status.Operation
	e.mu.Unlock()
	if busy && op != OpRollingBack {
		return ErrBusy
	}
	if e.cfg.Rebooter == nil {
		return errors.New("update: no rebooter configured")
	}
	return e.cfg.Rebooter.Reboot(ctx)
}

// Inspect verifies a bundle's signatures and metadata against this device
// (compatible, floor, expiry) and returns its manifest; nothing is written
// and the engine's status is untouched.
func (e *Engine) Inspect(ctx context.Context, source string) (*bundle.Manifest, error) {
	src, err := e.openSource(ctx, source)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	fl, err := e.cfg.Floor.Get()
	if err != nil {
		return nil, err
	}
	br, err := bundle.NewReader(src, bundle.Options{
		Keyring: e.cfg.Keyring, Compatible: e.cfg.Compatible, SecurityFloor: fl, Now: e.cfg.Clock.Now(),
	})
	if err != nil {
		return nil, err
	}
	defer br.Close()
	return br.Manifest(), nil
}
