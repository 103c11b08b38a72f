package health

import (
	"context"
	"fmt"
	"strings"
)

// DefaultTarget is the unit a trial boot must reach. Services join the
// confirmation with RequiredBy=boot-complete.target and Before= it (see
// systemd/otad-health-example.service).
const DefaultTarget = "boot-complete.target"

// UnitManager is the systemd boundary a TargetChecker needs (sdsys.Units
// over D-Bus in the daemon).
type UnitManager interface {
	// StartUnit starts unit in "replace" mode and waits for its start job;
	// it returns the job result ("done", "failed", ...). An error means the
	// job could not be started or ctx ended first.
	StartUnit(ctx context.Context, unit string) (string, error)
	// FailedUnits lists the units in failed state, sorted.
	FailedUnits(ctx context.Context) ([]string, error)
}

// TargetChecker starts a systemd unit (normally a target) and waits for its
// start job. Job result "done" is healthy; "failed", "dependency",
// "timeout", "canceled" (and anything else) fail, naming the units found in
// failed state.
type TargetChecker struct {
	// Unit to start; "" means DefaultTarget.
	Unit string
	// NoFailedUnits additionally requires that no unit at all is in failed
	// state once the target is active.
	NoFailedUnits bool
	// Systemd starts the unit; nil fails the check (no way to reach systemd).
	Systemd UnitManager
}

func (t *TargetChecker) unit() string {
	if t.Unit == "" {
		return DefaultTarget
	}
	return t.Unit
}

// Name is "target <unit>", shown in reports.
func (t *TargetChecker) Name() string { return "target " + t.unit() }

// Check starts the unit in "replace" mode and waits for its job, or for ctx.
func (t *TargetChecker) Check(ctx context.Context) error {
	unit := t.unit()
	if t.Systemd == nil {
		return &Failure{Check: t.Name(), Reason: "no connection to systemd configured"}
	}
	res, err := t.Systemd.StartUnit(ctx, unit)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("health: %w", err)
		}
		return &Failure{Check: t.Name(), Reason: err.Error()}
	}
	if res != "done" {
		failed, lerr := t.Systemd.FailedUnits(ctx)
		f := &Failure{Check: t.Name(), Units: failed, Reason: fmt.Sprintf("start job for %s finished with result %q", unit, res)}
		switch {
		case lerr != nil:
			f.Reason += fmt.Sprintf(" (listing failed units: %v)", lerr)
		case len(failed) > 0:
			f.Reason += "; failed units: " + strings.Join(failed, ", ")
		}
		return f
	}
	if t.NoFailedUnits {
		failed, err := t.Systemd.FailedUnits(ctx)
		if err != nil {
			return &Failure{Check: t.Name(), Reason: fmt.Sprintf("%s is active, but listing failed units: %v", unit, err)}
		}
		if len(failed) > 0 {
			return &Failure{Check: t.Name(), Units: failed, Reason: fmt.Sprintf("%s is active, but units failed: %s", unit, strings.Join(failed, ", "))}
		}
	}
	return nil
}
