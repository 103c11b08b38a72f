package health

import (
	"context"
	"fmt"
	"sort"
	"strings"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
)

// DefaultTarget is the unit a trial boot must reach. Services join the
// confirmation with RequiredBy=boot-complete.target and Before= it (see
// systemd/otad-health-example.service).
const DefaultTarget = "boot-complete.target"

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
	// Dial connects to systemd; nil means the system bus (or systemd's
	// private socket when the bus is down and otad runs as root).
	Dial func() (*sdbus.Conn, error)
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
	conn, err := t.dial(ctx)
	if err != nil {
		return &Failure{Check: t.Name(), Reason: fmt.Sprintf("connect to systemd: %v", err)}
	}
	defer conn.Close()

	// Buffered: go-systemd delivers the result while holding its job lock;
	// if nobody reads any more (ctx done) an unbuffered send would block
	// that connection's signal dispatch for good.
	result := make(chan string, 1)
	if _, err := conn.StartUnitContext(ctx, unit, "replace", result); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("health: starting %s: %w", unit, ctx.Err())
		}
		return &Failure{Check: t.Name(), Reason: fmt.Sprintf("start %s: %v", unit, err)}
	}

	var res string
	select {
	case res = <-result:
	case <-ctx.Done():
		return fmt.Errorf("health: waiting for %s: %w", unit, ctx.Err())
	}

	if res != "done" {
		failed, lerr := failedUnits(ctx, conn)
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
		failed, err := failedUnits(ctx, conn)
		if err != nil {
			return &Failure{Check: t.Name(), Reason: fmt.Sprintf("%s is active, but listing failed units: %v", unit, err)}
		}
		if len(failed) > 0 {
			return &Failure{Check: t.Name(), Units: failed, Reason: fmt.Sprintf("%s is active, but units failed: %s", unit, strings.Join(failed, ", "))}
		}
	}
	return nil
}

func (t *TargetChecker) dial(ctx context.Context) (*sdbus.Conn, error) {
	if t.Dial != nil {
		return t.Dial()
	}
	return sdbus.NewWithContext(ctx)
}

func failedUnits(ctx context.Context, conn *sdbus.Conn) ([]string, error) {
	units, err := conn.ListUnitsFilteredContext(ctx, []string{"failed"})
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(units))
	for _, u := range units {
		names = append(names, u.Name)
	}
	sort.Strings(names)
	return names, nil
}
