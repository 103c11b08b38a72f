package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/hawkbit/dditest"
	"github.com/otadev/otad/internal/privbus"
)

// otactl poll and otactl status against a real otad serve with [hawkbit]
// on a private bus: poll reaches the DDI server at once, status shows the
// fleet lines.
func TestPollAndStatusShowFleet(t *testing.T) {
	dir, err := os.MkdirTemp("", "otad-fleet-") // short: the bus socket path is limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := func(n string) string { return filepath.Join(dir, n) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	policy, err := filepath.Abs("../../systemd/io.otad.Update1.conf")
	if err != nil {
		t.Fatal(err)
	}
	bus, err := privbus.Start(ctx, dir, privbus.Include(policy))
	if err != nil {
		t.Skip(err)
	}
	defer bus.Stop()

	for _, n := range []string{"env0", "env1"} {
		mustWrite(t, p(n), make([]byte, 0x4000), 0o644)
	}
	mustWrite(t, p("fw_env.config"), fmt.Appendf(nil, "%s 0x0 0x4000\n%s 0x0 0x4000\n", p("env0"), p("env1")), 0o644)
	ec, err := bootenv.LoadConfig(p("fw_env.config"))
	if err != nil {
		t.Fatal(err)
	}
	ec.LockPath = p("env.lock")
	st, err := bootenv.OpenStore(ec)
	if err != nil {
		t.Fatal(err)
	}
	e := bootenv.NewEnv()
	for k, v := range map[string]string{"otad_slot": "A", "otad_prev": "A", "upgrade_available": "0", "bootcount": "0"} {
		e.Set(k, v)
	}
	if err := st.Init(e); err != nil {
		t.Fatal(err)
	}
	st.Close()
	key, err := bundle.GenerateKey(bundle.AlgEd25519, "k", "release", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := bundle.MarshalPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p("keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, p("keys/k.pub"), pub, 0o644)
	mustWrite(t, p("cmdline"), []byte("otad.slot=A\n"), 0o644)
	mustWrite(t, p("token"), []byte("tok\n"), 0o600)
	srv := dditest.New(t, "DEFAULT", "gw-9", "tok")
	srv.Sleep = "01:00:00" // the next poll is an hour away unless asked
	mustWrite(t, p("system.conf"), fmt.Appendf(nil, `[system]
compatible = test-board
data-dir = %[1]s/data
env-config = %[1]s/fw_env.config
env-lock = %[1]s/env.lock
cmdline = %[1]s/cmdline
[keyring]
directory = %[1]s/keys
[slot.rootfs.0]
name = A
device = %[1]s/a.img
type = file
size = 1M
[slot.rootfs.1]
name = B
device = %[1]s/b.img
type = file
size = 1M
[health]
target =
watchdog = none
[hawkbit]
server = %[2]s
controller-id = gw-9
token-file = %[1]s/token
poll-min = 1h
`, dir, srv.URL), 0o644)

	served := make(chan error, 1)
	var serveOut bytes.Buffer
	go func() {
		served <- Run(ctx, []string{"otad", "serve", "-config", p("system.conf"), "-bus", bus.Address, "-log-level", "warning"},
			nil, &serveOut, &serveOut)
	}()
	polls := func() int {
		n := 0
		for _, r := range srv.Requests() {
			if r.Method == "GET" && strings.HasSuffix(r.Path, "/controller/v1/gw-9") {
				n++
			}
		}
		return n
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second) // hang guard
		for !cond() {
			select {
			case err := <-served:
				t.Fatalf("otad serve ended: %v\n%s", err, serveOut.String())
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s", what)
			}
		}
	}
	waitFor("the first poll", func() bool { return polls() == 1 })
	var out bytes.Buffer
	waitFor("the bus name", func() bool {
		out.Reset()
		return Run(ctx, []string{"otactl", "status", "-bus", bus.Address}, nil, &out, &out) == nil
	})
	t.Logf("otactl status:\n%s", out.String())
	if !strings.Contains(out.String(), "fleet:      "+srv.URL) || !strings.Contains(out.String(), "next poll:") {
		t.Fatalf("status:\n%s", out.String())
	}
	out.Reset()
	if err := Run(ctx, []string{"otactl", "poll", "-bus", bus.Address}, nil, &out, &out); err != nil {
		t.Fatalf("poll: %v\n%s", err, out.String())
	}
	waitFor("the requested poll", func() bool { return polls() == 2 })
	out.Reset()
	if err := Run(ctx, []string{"otactl", "status", "-json", "-bus", bus.Address}, nil, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"fleet"`) || !strings.Contains(out.String(), `"last_poll"`) {
		t.Fatalf("status -json:\n%s", out.String())
	}
	cancel()
	<-served
}

func mustWrite(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}
