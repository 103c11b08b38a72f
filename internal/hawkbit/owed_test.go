package hawkbit

import (
	"net/http"
	"testing"

	"github.com/otadev/otad/internal/fleet"
)

// A final result the server cannot take yet (503) stays owed across polls
// and a restart, then arrives once; one it refuses for good (404: the
// action was deleted) is dropped rather than owed forever, which would
// block every later action.
func TestFinalResultOwedUntilAccepted(t *testing.T) {
	b := newBoard(t)
	b.autoReboot = false
	store := fleet.Store{Path: b.path("data/hawkbit-action.json")}
	id := b.deploy("9.0", b.bundle("other-board", "9.0", 1, image(30, 1<<20)), "") // refused: a quick final
	b.srv.Lock(func() { b.srv.FeedbackStatus["closed"] = http.StatusServiceUnavailable })
	r := b.powerOn()
	b.waitFor("the result to be owed", func() bool { a, _ := store.Load(); return a.Owed() })
	polls := b.basePolls()
	b.waitFor("more polls", func() bool { return b.basePolls() > polls+3 })
	r.stop()
	if a, _ := store.Load(); !a.Owed() || len(b.srv.Finals(id)) != 0 {
		t.Fatalf("owed %v, finals %v", a.Owed(), b.srv.Finals(id))
	}
	b.srv.Lock(func() { delete(b.srv.FeedbackStatus, "closed") })
	r = b.powerOn()
	b.waitFor("delivery", func() bool { a, _ := store.Load(); return a != nil && a.Delivered })
	r.stop()
	if f := b.srv.Finals(id); len(f) != 1 || f[0].Finished != "failure" {
		t.Fatalf("finals %v", f)
	}

	// Refused for good: dropped (no longer owed).
	id2 := b.deploy("9.1", b.bundle("other-board", "9.1", 1, image(31, 1<<20)), "")
	b.srv.Lock(func() { b.srv.FeedbackStatus["closed"] = http.StatusNotFound })
	r = b.powerOn()
	b.waitFor("the refused result dropped", func() bool { a, _ := store.Load(); return a != nil && a.ID == id2 && a.Delivered })
	r.stop()
	if len(b.srv.Finals(id2)) != 0 {
		t.Fatal("a refused result was recorded")
	}
}
