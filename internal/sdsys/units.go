package sdsys

import (
	"context"
	"fmt"
	"sort"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
)

// Units starts systemd units and lists failed ones over D-Bus. It
// satisfies health.UnitManager.
type Units struct {
	// Dial connects to systemd; nil means the system bus (or systemd's
	// private socket when the bus is down and otad runs as root).
	Dial func(ctx context.Context) (*sdbus.Conn, error)
}

func (u *Units) dial(ctx context.Context) (*sdbus.Conn, error) {
	if u != nil && u.Dial != nil {
		return u.Dial(ctx)
	}
	return sdbus.NewWithContext(ctx)
}

// StartUnit starts unit in "replace" mode and waits for its start job. It
// returns the job result ("done", "failed", "dependency", "timeout",
// "canceled", ...); err is set when the job could not be started or ctx
// ended first.
func (u *Units) StartUnit(ctx context.Context, unit string) (string, error) {
	conn, err := u.dial(ctx)
	if err != nil {
		return "", fmt.Errorf("connect to systemd: %w", err)
	}
	defer conn.Close()
	// Buffered: go-systemd delivers the result while holding its job lock;
	// if nobody reads any more (ctx done) an unbuffered send would block
	// that connection's signal dispatch for good.
	ch := make(chan string, 1)
	if _, err := conn.StartUnitContext(ctx, unit, "replace", ch); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("starting %s: %w", unit, ctx.Err())
		}
		return "", fmt.Errorf("start %s: %w", unit, err)
	}
	select {
	case res := <-ch:
		return res, nil
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for %s: %w", unit, ctx.Err())
	}
}

// FailedUnits lists the units in failed state, sorted.
func (u *Units) FailedUnits(ctx context.Context) ([]string, error) {
	conn, err := u.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	defer conn.Close()
	return failedUnits(ctx, conn)
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
