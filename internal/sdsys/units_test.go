package sdsys_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/sdsys/sdsystest"
)

// StartUnit returns the job result systemd reports in JobRemoved, over a
// real bus and go-systemd's client; FailedUnits lists failed units sorted.
func TestUnitsStartAndList(t *testing.T) {
	fake := sdsystest.Start(t, map[string]string{"a.target": "done", "b.target": "dependency", "gone.target": "no-such-unit"},
		"z.service", "m.service")
	u := fake.Units()
	ctx := context.Background()
	for unit, want := range map[string]string{"a.target": "done", "b.target": "dependency"} {
		if got, err := u.StartUnit(ctx, unit); err != nil || got != want {
			t.Errorf("StartUnit(%s) = %q, %v; want %q", unit, got, err, want)
		}
	}
	if _, err := u.StartUnit(ctx, "gone.target"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("StartUnit of a missing unit: %v", err)
	}
	if got, err := u.FailedUnits(ctx); err != nil || !reflect.DeepEqual(got, []string{"m.service", "z.service"}) {
		t.Errorf("FailedUnits = %v, %v", got, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := u.StartUnit(cctx, "stuck.target"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a job that never ends: %v", err)
	}
}
