// Package boot is otad's side of the A/B boot protocol. U-Boot decides what
// boots (the boot script, or CONFIG_BOOTCOUNT_LIMIT with altbootcmd); otad
// only arms a trial, commits it, or gives up on it, each with exactly one
// environment write through a bootenv.Store.
//
// Variables (U-Boot's bootcount names plus otad's own):
//
//	otad_slot          slot U-Boot boots: "A" or "B"
//	otad_prev          slot to fall back to when the trial fails
//	upgrade_available  "1" while otad_slot is on trial
//	bootcount          trial boots so far, hexadecimal as U-Boot writes it
//	bootlimit          trial boots allowed (1..9, so hex and decimal agree)
//	altbootcmd         native-bootcount fallback, same effect as the script's
//	otad_failed        slot the last fallback gave up on (rollback report)
//
// Invariants: Arm, Commit, Disarm and Fallback each change the environment
// in one bootenv.Update, i.e. one write that a power cut leaves either done
// or not done; calls that would change nothing write nothing, so a normal
// boot never writes. Slot names are validated before anything is written.
package boot

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/otadev/otad/internal/bootenv"
)

// Variable names shared with boot.cmd and bootsim.
const (
	VarSlot       = "otad_slot"
	VarPrev       = "otad_prev"
	VarUpgrade    = "upgrade_available"
	VarBootCount  = "bootcount"
	VarBootLimit  = "bootlimit"
	VarAltBootCmd = "altbootcmd"
	VarFailed     = "otad_failed"
)

// DefaultBootLimit is used when Protocol.BootLimit is 0 and when the
// environment has no bootlimit (the boot script uses the same default).
const DefaultBootLimit = 3

// DefaultSlot is what the boot script boots when otad_slot is unset.
const DefaultSlot = "A"

// AltBootCmd is written by Arm when the board has no altbootcmd: with
// U-Boot's native CONFIG_BOOTCOUNT_LIMIT it does the boot script's fallback.
const AltBootCmd = "setenv otad_failed ${otad_slot}; setenv otad_slot ${otad_prev}; " +
	"setenv upgrade_available 0; setenv bootcount 0; saveenv; run bootcmd"

// Errors callers branch on.
var (
	ErrBadSlot    = errors.New("boot: slot must be A or B")
	ErrNoSlot     = errors.New("boot: no otad.slot= on the kernel command line")
	ErrCanary     = errors.New("boot: environment canary failed")
	ErrNoFallback = errors.New("boot: no slot to fall back to")
	ErrBadValue   = errors.New("boot: malformed boot variable")
)

// ValidSlot reports whether s names a slot.
func ValidSlot(s string) bool { return s == "A" || s == "B" }

// Protocol arms, commits and rolls back trial boots.
type Protocol struct {
	Store     bootenv.Store
	BootLimit int // trial boots before U-Boot falls back; 0 = DefaultBootLimit
}

// State is the protocol's view of the environment.
type State struct {
	Slot, Prev       string
	UpgradeAvailable bool
	BootCount        int
	BootLimit        int
	Failed           string // slot a fallback gave up on, "" if none since the last Arm
}

// State reads the environment.
func (p *Protocol) State() (State, error) {
	e, err := p.Store.Load()
	if err != nil {
		return State{}, err
	}
	return stateOf(e)
}

func stateOf(e *bootenv.Env) (State, error) {
	st := State{Slot: DefaultSlot, BootLimit: DefaultBootLimit}
	if v, ok := e.Get(VarSlot); ok {
		st.Slot = v
	}
	st.Prev, _ = e.Get(VarPrev)
	st.Failed, _ = e.Get(VarFailed)
	up, _ := e.Get(VarUpgrade)
	st.UpgradeAvailable = up == "1"
	if v, ok := e.Get(VarBootCount); ok {
		// U-Boot's setexpr and bootcount driver write hex without 0x.
		n, err := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 31)
		if err != nil {
			return st, fmt.Errorf("%w: bootcount=%q", ErrBadValue, v)
		}
		st.BootCount = int(n)
	}
	if v, ok := e.Get(VarBootLimit); ok {
		n, err := strconv.ParseUint(v, 10, 31)
		if err != nil {
			return st, fmt.Errorf("%w: bootlimit=%q", ErrBadValue, v)
		}
		st.BootLimit = int(n)
	}
	return st, nil
}

// ArmRisk is nil when the store may arm a trial: a store that knows its
// medium makes arming unsafe (bootenv.DeviceStore on a single-copy FAT env,
// bootenv.ErrSingleCopyFAT) says so here, and Arm refuses before writing.
// Callers check it early too, before a download.
func (p *Protocol) ArmRisk() error {
	if r, ok := p.Store.(interface{ ArmRisk() error }); ok {
		return r.ArmRisk()
	}
	return nil
}

func (p *Protocol) limit() (int, error) {
	l := p.BootLimit
	if l == 0 {
		l = DefaultBootLimit
	}
	if l < 1 || l > 9 {
		// itest in the script compares in hex, U-Boot's bootcount driver
		// reads bootlimit in decimal: only 1..9 mean the same to both.
		return 0, fmt.Errorf("boot: bootlimit %d outside 1..9", l)
	}
	return l, nil
}

// Arm makes the next boot a trial of target, falling back to current:
// otad_prev=current otad_slot=target upgrade_available=1 bootcount=0
// bootlimit=N, altbootcmd if the board has none. One write.
func (p *Protocol) Arm(target, current string) error {
	if !ValidSlot(target) || !ValidSlot(current) {
		return fmt.Errorf("%w: arm %q from %q", ErrBadSlot, target, current)
	}
	if target == current {
		return fmt.Errorf("boot: cannot arm the running slot %s as its own trial", target)
	}
	if err := p.ArmRisk(); err != nil {
		return err
	}
	l, err := p.limit()
	if err != nil {
		return err
	}
	return bootenv.Update(p.Store, func(e *bootenv.Env) error {
		e.Set(VarPrev, current)
		e.Set(VarSlot, target)
		e.Set(VarUpgrade, "1")
		e.Set(VarBootCount, "0")
		e.Set(VarBootLimit, strconv.Itoa(l))
		e.Unset(VarFailed)
		if _, ok := e.Get(VarAltBootCmd); !ok {
			e.Set(VarAltBootCmd, AltBootCmd)
		}
		return nil
	})
}

// Commit ends a successful trial: upgrade_available=0 bootcount=0. One
// write; none if there is no trial to end.
func (p *Protocol) Commit() error {
	return bootenv.Update(p.Store, func(e *bootenv.Env) error {
		st, err := stateOf(e)
		if err != nil {
			return err
		}
		if !st.UpgradeAvailable && st.BootCount == 0 {
			return nil
		}
		e.Set(VarUpgrade, "0")
		e.Set(VarBootCount, "0")
		return nil
	})
}

// Disarm makes the next boot the running slot active: it cancels a trial
// armed against active that has not booted yet, and equally a committed
// pointer at the other slot (a fallback whose reboot has not happened, a
// manual fw_setenv), since callers disarm before they overwrite the other
// slot: otad_slot=active upgrade_available=0 bootcount=0. No write if the
// env already boots active (including active's own trial).
func (p *Protocol) Disarm(active string) error {
	if !ValidSlot(active) {
		return fmt.Errorf("%w: %q", ErrBadSlot, active)
	}
	return bootenv.Update(p.Store, func(e *bootenv.Env) error {
		st, err := stateOf(e)
		if err != nil {
			return err
		}
		if st.Slot == active {
			return nil
		}
		e.Set(VarSlot, active)
		e.Set(VarUpgrade, "0")
		e.Set(VarBootCount, "0")
		return nil
	})
}

// Fallback gives up on the running trial (its health check failed):
// otad_failed=otad_slot otad_slot=otad_prev upgrade_available=0 bootcount=0,
// in one write; the next boot is the previous slot.
func (p *Protocol) Fallback() error {
	return bootenv.Update(p.Store, func(e *bootenv.Env) error {
		st, err := stateOf(e)
		if err != nil {
			return err
		}
		if !ValidSlot(st.Prev) || st.Prev == st.Slot {
			return fmt.Errorf("%w: otad_slot=%q otad_prev=%q", ErrNoFallback, st.Slot, st.Prev)
		}
		e.Set(VarFailed, st.Slot)
		e.Set(VarSlot, st.Prev)
		e.Set(VarUpgrade, "0")
		e.Set(VarBootCount, "0")
		return nil
	})
}

// BootedSlot returns the otad.slot= value of a kernel command line (the
// last one wins, as for any repeated kernel parameter).
func BootedSlot(cmdline string) (string, error) {
	slot, found := "", false
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "otad.slot="); ok {
			slot, found = v, true
		}
	}
	if !found {
		return "", ErrNoSlot
	}
	if !ValidSlot(slot) {
		return "", fmt.Errorf("%w: otad.slot=%q", ErrBadSlot, slot)
	}
	return slot, nil
}

// CheckCanary proves that the environment otad reads is the one U-Boot
// wrote: in a trial boot (booted == otad_slot, upgrade_available=1) the
// boot script (or U-Boot's bootcount) has counted this boot, so bootcount
// is at least 1. If it is 0, otad and U-Boot look at different
// environments (wrong fw_env.config offset, size or device, or a stale
// copy) or the boot script did not run; arming updates would then be a
// gamble, so the daemon refuses to.
func (p *Protocol) CheckCanary(booted string) error {
	st, err := p.State()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCanary, err)
	}
	if st.UpgradeAvailable && booted == st.Slot && st.BootCount < 1 {
		return fmt.Errorf("%w: trial boot of slot %s but bootcount=0: the environment otad reads is not the one U-Boot counted this boot in (check /etc/fw_env.config device, offset and size against U-Boot's CONFIG_ENV_OFFSET/SIZE) or the boot script did not run", ErrCanary, booted)
	}
	return nil
}

// ProcCmdline is where the running kernel's command line is read.
const ProcCmdline = "/proc/cmdline"

// ReadBootedSlot is BootedSlot of the command line in path (ProcCmdline on
// a device; a file in tests).
func ReadBootedSlot(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("boot: %w", err)
	}
	return BootedSlot(string(b))
}
