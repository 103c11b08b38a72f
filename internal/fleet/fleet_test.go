package fleet

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otadev/otad/internal/update"
)

func TestStoreRoundTrip(t *testing.T) {
	s := Store{Path: filepath.Join(t.TempDir(), "fleet.json")}
	a, err := s.Load()
	if err != nil || a != nil {
		t.Fatalf("empty store: %v %v", a, err)
	}
	want := &Action{ID: "7", Phase: PhaseInstalling, Source: "https://h/a.otab", Tx: "1-1", Booted: "A", Target: "B",
		Attempts: 2, Received: time.Unix(100, 0).UTC(), Updated: time.Unix(200, 0).UTC()}
	want.SetNote("downloaded", "sent")
	if err := s.Save(want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "7" || got.Phase != PhaseInstalling || got.Tx != "1-1" || got.Attempts != 2 || got.Note("downloaded") != "sent" || !got.Received.Equal(want.Received) {
		t.Fatalf("round trip: %+v", got)
	}
	if got.Owed() || !got.Open() {
		t.Fatal("an installing action owes nothing yet and is open")
	}
	got.Finish(Outcome{Kind: Failure, Reason: "x"})
	if !got.Owed() || got.Open() {
		t.Fatal("a finished action owes its result and is not open")
	}
	if err := os.WriteFile(s.Path, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt file: %v", err)
	}
}

func slots(a, b update.SlotStatus) []update.SlotStatus {
	a.Name, b.Name = "A", "B"
	return []update.SlotStatus{a, b}
}

func TestDecide(t *testing.T) {
	act := &Action{ID: "1", Phase: PhaseRebooting, Tx: "t1", Booted: "A", Target: "B"}
	cases := []struct {
		name   string
		st     update.Status
		ok     bool
		kind   string
		reason string
	}{
		{"armed, no reboot yet", update.Status{Tx: "t1", BootSlot: "A", Operation: update.OpPendingReboot,
			Slots: slots(update.SlotStatus{State: "active"}, update.SlotStatus{State: "pending"})}, false, "", ""},
		{"trial running", update.Status{Tx: "t1", BootSlot: "B", TrialBoot: true, Operation: update.OpConfirming,
			Slots: slots(update.SlotStatus{State: "good"}, update.SlotStatus{State: "pending"})}, false, "", ""},
		{"committed", update.Status{Tx: "t1", BootSlot: "B", Operation: update.OpIdle,
			Slots: slots(update.SlotStatus{State: "good"}, update.SlotStatus{State: "active"})}, true, Success, ""},
		{"health failed, before the fallback reboot", update.Status{Tx: "t1", BootSlot: "B", Operation: update.OpRollingBack,
			Slots: slots(update.SlotStatus{State: "good"}, update.SlotStatus{State: "bad", Reason: "health check failed: unit app.service failed"})},
			true, Failure, "health check failed: unit app.service failed"},
		{"rolled back by the bootloader", update.Status{Tx: "t1", BootSlot: "A", Operation: update.OpIdle, LastError: "rolled back: x",
			Slots: slots(update.SlotStatus{State: "active"}, update.SlotStatus{State: "bad", Reason: "slot B did not boot successfully"})},
			true, Failure, "slot B did not boot successfully"},
		{"another install replaced ours", update.Status{Tx: "t2", BootSlot: "A", Operation: update.OpIdle,
			Slots: slots(update.SlotStatus{State: "active"}, update.SlotStatus{State: "pending"})}, true, Failure, "another install (transaction t2) replaced this one"},
	}
	for _, c := range cases {
		o, ok := Decide(act, c.st)
		if ok != c.ok || o.Kind != c.kind || (c.reason != "" && o.Reason != c.reason) {
			t.Errorf("%s: got %+v %v", c.name, o, ok)
		}
	}
}

func TestFromCompleted(t *testing.T) {
	o := FromCompleted(update.Event{Kind: "completed", Result: update.ResultRefused, Message: "bundle: signature"})
	if o.Kind != Failure || !o.Refused || o.Reason != "bundle refused: bundle: signature" {
		t.Fatalf("%+v", o)
	}
	if o := FromCompleted(update.Event{Result: update.ResultFailed, Message: "io"}); o.Refused || o.Reason != "io" {
		t.Fatalf("%+v", o)
	}
}
