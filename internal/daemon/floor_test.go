package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// TestFloorDamageAtStart: after a committed install raised the floor, one
// damaged copy is logged at start and changes nothing; with both copies
// damaged the start logs why, and an install is refused with LastError
// naming the operator's way out.
func TestFloorDamageAtStart(t *testing.T) {
	dir := t.TempDir()
	a, bb := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	must(t, os.WriteFile(a, img(true, 1, 4<<20), 0o644))
	must(t, os.WriteFile(bb, make([]byte, 4<<20), 0o644))
	b := newBoard(t, a, bb, "file")
	b.run(func(d *Daemon) {
		if ev := installAndWait(t, d, b.bundle("2.0", 3, img(true, 2, 1<<20))); ev.Result != 0 {
			t.Fatalf("install: %s", ev.Message)
		}
	})
	if s := b.powerOn(); s != "B" {
		t.Fatalf("booted %s", s)
	}
	b.run(func(d *Daemon) {}) // trial boot confirmed and committed: floor 3
	var logs bytes.Buffer
	start := func() *Daemon {
		logs.Reset()
		l := logrus.New()
		l.SetOutput(&logs)
		d, err := New(b.cfg, Options{Log: l, Env: b.env, Rebooter: rebooterFunc(func() {})})
		must(t, err)
		return d
	}
	must(t, os.WriteFile(b.path("data/floor.1"), []byte("junk"), 0o644))
	d := start()
	if v, err := d.Engine.Inspect(t.Context(), b.bundle("1.9", 2, img(true, 4, 1<<20))); err == nil {
		t.Fatalf("a bundle below the floor passed with one damaged copy: %+v", v)
	}
	if !strings.Contains(logs.String(), "anti-rollback floor copy damaged") || !strings.Contains(logs.String(), "floor.1: 4 bytes") {
		t.Fatalf("one damaged copy not logged at start:\n%s", logs.String())
	}
	must(t, os.WriteFile(b.path("data/floor.0"), []byte("junk"), 0o644))
	start()
	if !strings.Contains(logs.String(), "anti-rollback floor unreadable") {
		t.Fatalf("no valid copy not logged at start:\n%s", logs.String())
	}
	b.run(func(d *Daemon) {
		ev := installAndWait(t, d, b.bundle("3.0", 4, img(true, 5, 1<<20)))
		if ev.Result == 0 || !strings.Contains(d.Engine.Status().LastError, "otad floor reset --to N") {
			t.Fatalf("install with no valid floor copy: %+v, last error %q", ev, d.Engine.Status().LastError)
		}
	})
}
