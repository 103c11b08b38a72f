package daemon

import (
	"testing"
	"time"

	"github.com/otadev/otad/internal/update"
)

// The STATUS= line names what is installed where and how far it got; the
// throttle passes operation changes and every tenth percent, not every step.
func TestStatusLineAndThrottle(t *testing.T) {
	st := update.Status{Operation: update.OpWriting, BootSlot: "A", Installing: "2.0", Target: "B",
		Progress: update.Progress{Percent: 47, Done: 47, Total: 100, Phase: "writing slot B"}}
	if got := statusLine(st); got != "installing 2.0 into B: writing 47%" {
		t.Fatalf("statusLine = %q", got)
	}
	idle := update.Status{Operation: update.OpIdle, BootSlot: "B", Version: "2.0", LastError: "rolled back: x"}
	if got := statusLine(idle); got != "idle; booted slot B, version 2.0; last error: rolled back: x" {
		t.Fatalf("idle statusLine = %q", got)
	}

	var th statusThrottle
	now := time.Now()
	sent := 0
	st.Progress = update.Progress{Phase: "writing slot B"}
	if th.due(st, statusLine(st), now) {
		sent++
	}
	for pct := 0; pct <= 100; pct++ {
		st.Progress = update.Progress{Percent: pct, Done: int64(pct), Total: 100, Phase: "writing slot B"}
		if th.due(st, statusLine(st), now) {
			sent++
		}
	}
	if sent < 11 || sent > 13 {
		t.Fatalf("%d lines for one pass of 0..100%%, want about one per 10 points", sent)
	}
	if !th.due(update.Status{Operation: update.OpPendingReboot, BootSlot: "A"}, "booted slot A: pending-reboot", now) {
		t.Fatal("an operation change was held back")
	}
	st.Progress.Percent = 3
	th = statusThrottle{op: update.OpWriting, pct: 2, at: now.Add(-2 * time.Second), line: "x"}
	if !th.due(st, statusLine(st), now) {
		t.Fatal("a line a second after the last was held back")
	}
}
