package health

import (
	"context"
	"errors"
	"github.com/otadev/otad/internal/sdsys/sdsystest"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestTargetCheckerJobResults(t *testing.T) {
	results := map[string]string{
		"done.target":       "done",
		"failed.target":     "failed",
		"dependency.target": "dependency",
		"timeout.target":    "timeout",
		"canceled.target":   "canceled",
		"missing.target":    "no-such-unit",
	}
	fake := sdsystest.Start(t, results, "app.service", "modem.service")

	cases := []struct {
		unit      string
		ok        bool
		inReason  []string
		wantUnits []string
	}{
		{unit: "done.target", ok: true},
		{unit: "failed.target", inReason: []string{`"failed"`, "app.service", "modem.service"}, wantUnits: []string{"app.service", "modem.service"}},
		{unit: "dependency.target", inReason: []string{`"dependency"`, "app.service"}, wantUnits: []string{"app.service", "modem.service"}},
		{unit: "timeout.target", inReason: []string{`"timeout"`}, wantUnits: []string{"app.service", "modem.service"}},
		{unit: "canceled.target", inReason: []string{`"canceled"`}, wantUnits: []string{"app.service", "modem.service"}},
		{unit: "missing.target", inReason: []string{"start missing.target", "not found"}},
	}
	for _, tc := range cases {
		t.Run(tc.unit, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := (&TargetChecker{Unit: tc.unit, Systemd: fake.Units()}).Check(ctx)
			if tc.ok {
				if err != nil {
					t.Fatalf("want healthy, got %v", err)
				}
				return
			}
			var f *Failure
			if !errors.As(err, &f) {
				t.Fatalf("want *Failure, got %T %v", err, err)
			}
			if f.Check != "target "+tc.unit {
				t.Errorf("Check = %q", f.Check)
			}
			for _, s := range tc.inReason {
				if !strings.Contains(f.Reason, s) && !strings.Contains(err.Error(), s) {
					t.Errorf("reason %q lacks %q", f.Reason, s)
				}
			}
			if tc.wantUnits != nil && !reflect.DeepEqual(f.Units, tc.wantUnits) {
				t.Errorf("Units = %v, want %v", f.Units, tc.wantUnits)
			}
		})
	}
	// Every check went through StartUnit in replace mode, in order.
	got := fake.StartedUnits()
	if len(got) != len(cases) || got[0] != "done.target replace" {
		t.Errorf("StartUnit calls = %v", got)
	}
}

func TestTargetCheckerDefaultsToBootComplete(t *testing.T) {
	fake := sdsystest.Start(t, map[string]string{DefaultTarget: "done"})
	if err := (&TargetChecker{Systemd: fake.Units()}).Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := fake.StartedUnits(); !reflect.DeepEqual(got, []string{"boot-complete.target replace"}) {
		t.Fatalf("started %v", got)
	}
}

func TestTargetCheckerNoFailedUnits(t *testing.T) {
	fake := sdsystest.Start(t, map[string]string{DefaultTarget: "done"}, "sensor.service")

	// Without the option a failed unit outside the target does not matter.
	if err := (&TargetChecker{Systemd: fake.Units()}).Check(context.Background()); err != nil {
		t.Fatalf("without NoFailedUnits: %v", err)
	}
	err := (&TargetChecker{Systemd: fake.Units(), NoFailedUnits: true}).Check(context.Background())
	var f *Failure
	if !errors.As(err, &f) || !reflect.DeepEqual(f.Units, []string{"sensor.service"}) || !strings.Contains(f.Reason, "sensor.service") {
		t.Fatalf("want failure naming sensor.service, got %#v", err)
	}
}

// A start job that never finishes ends when the context does, with the
// context's error (the Confirmer turns that into a window failure).
func TestTargetCheckerJobNeverFinishes(t *testing.T) {
	fake := sdsystest.Start(t, map[string]string{}) // no result: no JobRemoved
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := (&TargetChecker{Unit: "stuck.target", Systemd: fake.Units()}).Check(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "stuck.target") {
		t.Fatalf("got %v", err)
	}
}

func TestTargetCheckerNoBus(t *testing.T) {
	err := (&TargetChecker{Systemd: sdsystest.UnitsAt("unix:path=/nonexistent/otad-test-bus")}).Check(context.Background())
	var f *Failure
	if !errors.As(err, &f) || !strings.Contains(f.Reason, "connect to systemd") {
		t.Fatalf("got %v", err)
	}
}
