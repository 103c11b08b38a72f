package powercut

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestPowerCutViewCache: the cached slot view follows every counted
// write and every power-on (what an unsynced cache leaves behind), and
// recheckView reports content that changed behind the counter's back.
func TestPowerCutViewCache(t *testing.T) {
	f := loadFixtures(t)
	for _, m := range media {
		b := newBoard(t, f, m, KeepUnsynced, 3)
		if got := b.settled("B"); got != f.factory {
			t.Fatalf("%s: factory slot B identified as %v", m.name, got)
		}
		w, err := b.slots["B"].target().OpenWriter(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(f.v2.data[:64<<10]); err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
		if got := b.view("B"); !bytes.Equal(got[:64<<10], f.v2.data[:64<<10]) {
			t.Errorf("%s: view misses a synced write", m.name)
		}
		// Unsynced, then a clean reboot: the flush makes it durable with
		// no write operation counted.
		if _, err := w.Write(f.v2.data[64<<10 : 96<<10]); err != nil {
			t.Fatal(err)
		}
		before := b.view("B")
		b.dom.CleanReboot()
		if got, want := b.view("B"), b.slots["B"].durable(); !bytes.Equal(got, want) {
			t.Errorf("%s: view after a clean reboot is stale", m.name)
		} else if m.name == "file" && bytes.Equal(got, before) {
			t.Errorf("%s: the clean reboot changed nothing; the case tests nothing", m.name)
		}
		// Unsynced, then a cut: KeepUnsynced keeps it at the power-on.
		if _, err := w.Write(f.v2.data[96<<10 : 128<<10]); err != nil {
			t.Fatal(err)
		}
		before = b.view("B")
		b.dom.CutAt(b.dom.Ops() + 1)
		if _, err := w.Write(f.v2.data[128<<10 : 132<<10]); err == nil {
			t.Fatalf("%s: write after the cut point succeeded", m.name)
		}
		b.dom.PowerOn()
		if got, want := b.view("B"), b.slots["B"].durable(); !bytes.Equal(got, want) {
			t.Errorf("%s: view after a power-on is stale", m.name)
		} else if m.name == "file" && bytes.Equal(got, before) {
			t.Errorf("%s: the power-on changed nothing; the case tests nothing", m.name)
		}
	}

	// Content changed without a counted operation (a factory poke): the
	// cache cannot see it, the recheck must.
	b := newBoard(t, f, mediumNamed(t, "file"), LoseUnsynced, 1)
	b.recheckView = true
	b.view("A")
	b.slots["A"].factory(f.v3.data)
	b.view("A")
	if err := b.violation(); err == nil || !strings.Contains(err.Error(), "stale cached view of slot A") {
		t.Errorf("recheck of a stale view: %v", err)
	}
}
