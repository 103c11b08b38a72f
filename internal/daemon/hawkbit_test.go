package daemon

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/hawkbit/dditest"
)

// [hawkbit] wired through the daemon: token file, the token bound to the
// server's origin in the daemon's fetch credentials (the artifact comes
// through the engine's own download path), the client started by Run, and
// success reported only after the reboot and the health check.
func TestHawkbitThroughTheDaemon(t *testing.T) {
	dir := t.TempDir()
	a, bb := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	must(t, os.WriteFile(a, img(true, 1, 1<<20), 0o644))
	must(t, os.Truncate(a, 8<<20))
	must(t, os.WriteFile(bb, make([]byte, 8<<20), 0o644))
	b := newBoard(t, a, bb, "file")
	srv := dditest.New(t, "DEFAULT", "gw-1", "tok-123")
	srv.Sleep = "00:00:01"
	must(t, os.WriteFile(b.path("hawkbit.token"), []byte("tok-123\n"), 0o600))
	conf, err := os.ReadFile(b.path("system.conf"))
	must(t, err)
	conf = append(conf, []byte("[hawkbit]\nserver = "+srv.URL+"\ncontroller-id = gw-1\ntoken-file = "+b.path("hawkbit.token")+
		"\npoll-min = 20ms\npoll-max = 50ms\nattribute = site=lab\n")...)
	must(t, os.WriteFile(b.path("system.conf"), conf, 0o644))
	b.cfg, err = config.Load(b.path("system.conf"))
	must(t, err)
	data, err := os.ReadFile(b.bundle("2.0", 1, img(true, 5, 1<<20)))
	must(t, err)
	id := srv.Deploy(dditest.Action{Version: "2.0", Files: []dditest.File{{Name: "gw-2.0.otab", Data: data}}})

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second) // hang guard, not a speed check
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s; feedback %v", what, srv.Feedback())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	b.run(func(d *Daemon) {
		if d.Hawkbit == nil {
			t.Fatal("hawkBit client not started")
		}
		waitFor("the reboot request", func() bool { return b.reboots.Load() > 0 })
	})
	if len(srv.Finals(id)) != 0 {
		t.Fatal("final result before the reboot")
	}
	if s := b.powerOn(); s != "B" {
		t.Fatalf("booted %s", s)
	}
	b.run(func(d *Daemon) {
		waitFor("the final result", func() bool { return len(srv.Finals(id)) > 0 })
		if i := d.Hawkbit.Info(); i.Action != id || i.LastPoll.IsZero() {
			t.Fatalf("info %+v", i)
		}
	})
	if f := srv.Finals(id); len(f) != 1 || f[0].Finished != "success" {
		t.Fatalf("finals %v", f)
	}
	for _, r := range srv.Requests() {
		if r.Auth != "TargetToken tok-123" {
			t.Fatalf("%s %s without the token", r.Method, r.Path)
		}
	}
	cd := srv.ConfigData()
	if len(cd) == 0 || cd[0]["site"] != "lab" || cd[0]["compatible"] != "test-board" {
		t.Fatalf("configData %v", cd)
	}
}
