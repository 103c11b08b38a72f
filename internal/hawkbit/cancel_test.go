package hawkbit

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/otadev/otad/internal/hawkbit/dditest"
)

// cancelFeedback returns the feedback sent on cancel actions.
func cancelFeedback(fs []dditest.Feedback) []dditest.Feedback {
	var out []dditest.Feedback
	for _, f := range fs {
		if f.Cancel != "" {
			out = append(out, f)
		}
	}
	return out
}

func hasExec(fs []dditest.Feedback, exec string) bool {
	for _, f := range fs {
		if f.Execution == exec {
			return true
		}
	}
	return false
}

// Phase 1: the action waits (maintenance window) when the cancel comes:
// accepted, nothing touched.
func TestCancelBeforeWriting(t *testing.T) {
	b := newBoard(t)
	before := b.readSlot("B", slotSize)
	id := b.deploy("2.0", b.bundle("test-board", "2.0", 1, image(4, 1<<20)), "unavailable")
	r := b.powerOn()
	b.waitFor("scheduled", func() bool { return hasExec(b.srv.Feedback(), "scheduled") })
	cid := b.srv.Cancel(id)
	b.waitFor("cancel accepted", func() bool { return len(cancelFeedback(b.srv.Feedback())) > 0 })
	b.srv.SetWindow(id, "available") // the action is canceled: no install follows
	polls := b.basePolls()
	b.waitFor("more polls", func() bool { return b.basePolls() > polls+3 })
	r.stop()
	fs := b.srv.Feedback()
	printSequence(t, "cancel before writing", fs)
	cf := cancelFeedback(fs)
	if len(cf) != 1 || cf[0].Cancel != cid || cf[0].Execution != "closed" || cf[0].Finished != "success" {
		t.Fatalf("cancel feedback %v", cf)
	}
	if len(b.srv.Finals(id)) != 1 || hasExec(fs, "proceeding") {
		t.Fatalf("feedback %v", executions(fs))
	}
	if !bytes.Equal(b.readSlot("B", slotSize), before) || b.envVar("upgrade_available") != "0" {
		t.Fatal("slot or env touched")
	}
}

// Phase 2: the engine is writing the slot: its Cancel stops it, the
// target is left bad and unarmed, the cancel accepted.
func TestCancelWhileWriting(t *testing.T) {
	b := newBoard(t)
	id := b.deploy("2.0", b.bundle("test-board", "2.0", 1, image(5, 2<<20)), "")
	held := make(chan struct{})
	var once sync.Once
	b.hold = func(ctx context.Context, off int64) {
		if off >= 1<<20 {
			once.Do(func() { close(held) })
			<-ctx.Done() // a stalled link, until the install is canceled
		}
	}
	r := b.powerOn()
	<-held
	cid := b.srv.Cancel(id)
	b.waitFor("cancel accepted", func() bool { return len(cancelFeedback(b.srv.Feedback())) > 0 })
	st := r.e.Status()
	r.stop()
	fs := b.srv.Feedback()
	printSequence(t, "cancel while writing", fs)
	cf := cancelFeedback(fs)
	if len(cf) != 1 || cf[0].Cancel != cid || cf[0].Execution != "closed" || !strings.Contains(strings.Join(cf[0].Details, " "), "while writing") {
		t.Fatalf("cancel feedback %v", cf)
	}
	if slotState(st, "B") != "bad" || b.envVar("otad_slot") != "A" || b.envVar("upgrade_available") != "0" {
		t.Fatalf("after cancel: slot B %q, env slot %s", slotState(st, "B"), b.envVar("otad_slot"))
	}
	if hasExec(fs, "downloaded") {
		t.Fatal("downloaded reported for a canceled install")
	}
}

// Phase 3: written and armed, not rebooted (reboot = manual): disarmed
// with one env write back to the running slot, accepted.
func TestCancelArmedBeforeReboot(t *testing.T) {
	b := newBoard(t)
	b.autoReboot = false
	id := b.deploy("2.0", b.bundle("test-board", "2.0", 1, image(6, 1<<20)), "")
	r := b.powerOn()
	b.waitFor("downloaded", func() bool { return hasExec(b.srv.Feedback(), "downloaded") })
	if b.envVar("otad_slot") != "B" || b.envVar("upgrade_available") != "1" {
		t.Fatal("not armed")
	}
	writes := b.env.Writes()
	cid := b.srv.Cancel(id)
	b.waitFor("cancel accepted", func() bool { return len(cancelFeedback(b.srv.Feedback())) > 0 })
	st := r.e.Status()
	r.stop()
	fs := b.srv.Feedback()
	printSequence(t, "cancel armed before reboot", fs)
	cf := cancelFeedback(fs)
	if len(cf) != 1 || cf[0].Cancel != cid || cf[0].Execution != "closed" || !strings.Contains(strings.Join(cf[0].Details, " "), "disarmed") {
		t.Fatalf("cancel feedback %v", cf)
	}
	if n := b.env.Writes() - writes; n != 1 {
		t.Fatalf("disarm took %d env writes, want 1", n)
	}
	if b.envVar("otad_slot") != "A" || b.envVar("upgrade_available") != "0" || slotState(st, "B") != "bad" {
		t.Fatalf("after disarm: env slot %s, B %q", b.envVar("otad_slot"), slotState(st, "B"))
	}
	// The next boot stays on A and nothing more is reported.
	n := len(fs)
	if s := b.reboot(); s != "A" {
		t.Fatalf("booted %s", s)
	}
	r = b.powerOn()
	polls := b.basePolls()
	b.waitFor("polls", func() bool { return b.basePolls() > polls+2 })
	r.stop()
	if got := b.srv.Feedback(); len(got) != n {
		t.Fatalf("more feedback after the cancel: %v", got[n:])
	}
}

// Phase 4: booted into the new slot: too late, rejected; the health
// check decides and the action ends with its result.
func TestCancelAfterRebootRejected(t *testing.T) {
	b := newBoard(t)
	id := b.deploy("2.0", b.bundle("test-board", "2.0", 1, image(7, 1<<20)), "")
	var cid string
	b.health = func(ctx context.Context, slot string) error {
		if cid == "" {
			cid = b.srv.Cancel(id)
		}
		b.waitFor("cancel answered", func() bool { return len(cancelFeedback(b.srv.Feedback())) > 0 })
		return nil
	}
	b.drive(b.hasFinal(id))
	fs := b.srv.Feedback()
	printSequence(t, "cancel after reboot", fs)
	cf := cancelFeedback(fs)
	if len(cf) != 1 || cf[0].Cancel != cid || cf[0].Execution != "rejected" {
		t.Fatalf("cancel feedback %v", cf)
	}
	if f := b.srv.Finals(id); len(f) != 1 || f[0].Finished != "success" || f[0].Cancel != "" {
		t.Fatalf("finals %v", f)
	}
}
