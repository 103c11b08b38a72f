package hawkbit

import (
	"testing"

	"github.com/otadev/otad/internal/fleet"
	"github.com/otadev/otad/internal/hawkbit/dditest"
)

// The daemon dies right after the server recorded feedback k (before it
// learned the answer), for every k of the happy path and of the rollback,
// and restarts: the server still sees exactly one final result, the right
// one. A final result resent after the restart meets a 410 (the action is
// closed on the server), which counts as delivered.
func TestKilledBetweenFeedbackOneFinal(t *testing.T) {
	for _, healthy := range []bool{true, false} {
		want := "success"
		if !healthy {
			want = "failure"
		}
		for k := 1; ; k++ {
			b := newBoard(t)
			b.kill = newKillSwitch()
			if !healthy {
				b.health = unitFailed
			}
			id := b.deploy("2.0", b.bundle("test-board", "2.0", 1, image(9, 1<<20)), "")
			fired := false
			b.srv.OnFeedback = func(n int, f dditest.Feedback) bool {
				if n == k {
					fired = true
					b.kill.fire()
					return true // the answer never reaches the device
				}
				return false
			}
			store := fleet.Store{Path: b.path("data/hawkbit-action.json")}
			b.drive(func() bool {
				a, err := store.Load()
				return len(b.srv.Finals(id)) > 0 && err == nil && a != nil && a.Delivered
			})
			fs := b.srv.Feedback()
			finals := b.srv.Finals(id)
			if len(finals) != 1 || finals[0].Finished != want {
				t.Fatalf("healthy=%v killed after feedback %d: finals %v\n%s", healthy, k, finals, feedbackText(fs))
			}
			if k <= len(fs) && fs[k-1].Final() && b.srv.Gone() == 0 {
				t.Fatalf("killed after the final result: no resend met a 410")
			}
			var notFired bool
			b.srv.Lock(func() { notFired = !fired })
			if notFired {
				// k passed the last feedback of a clean run: every gap done.
				t.Logf("healthy=%v: killed after each of feedback 1..%d; one final %s every time", healthy, k-1, want)
				break
			}
			if k > 30 {
				t.Fatalf("more than 30 feedback messages: %v", executions(fs))
			}
		}
	}
}
