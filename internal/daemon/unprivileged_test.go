package daemon

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/privbus"
)

// Unprivileged callers against the real engine under the shipped bus
// policy: 200 concurrent calls from one uid 65534 process — paths to a
// root-only file and a FIFO, descriptors of a FIFO, of a file that is no
// bundle and of a real bundle, InstallFD — get answers at once, never a
// byte of a file, and leave the daemon's descriptors and threads at their
// baseline within 5 s.
func TestUnprivilegedCallersAgainstTheEngine(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run busctl as another UID")
	}
	dir := t.TempDir()
	a, bb := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, p := range []string{a, bb} {
		must(t, os.WriteFile(p, make([]byte, 4<<20), 0o644))
	}
	b := newBoard(t, a, bb, "file")
	world, err := os.MkdirTemp("", "otad-np-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(world) })
	must(t, os.Chmod(world, 0o755))
	policy, err := filepath.Abs("../../systemd/io.otad.Update1.conf")
	must(t, err)
	bus, err := privbus.Start(context.Background(), world, privbus.Include(policy))
	must(t, err)
	t.Cleanup(bus.Stop)

	secret := filepath.Join(world, "secret")
	must(t, os.WriteFile(secret, []byte("root:SECRETBYTES"), 0o600))
	junk := filepath.Join(world, "junk")
	must(t, os.WriteFile(junk, []byte("JUNKBYTES that are no bundle"), 0o644))
	fifo := filepath.Join(world, "fifo")
	must(t, syscall.Mkfifo(fifo, 0o666))
	// The caller's own copy of a real bundle, readable by it.
	src, err := os.ReadFile(b.bundle("7.0", 0, img(true, 7, 1<<20)))
	must(t, err)
	good := filepath.Join(world, "good.otab")
	must(t, os.WriteFile(good, src, 0o644))
	client := filepath.Join(world, "unprivclient")
	if out, err := exec.Command("go", "build", "-o", client, "./testdata/unprivclient").CombinedOutput(); err != nil {
		t.Fatalf("building the client: %v\n%s", err, out)
	}

	b.run(func(d *Daemon) {
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- ServeBus(bus.Address)(ctx, d) }()
		defer func() {
			cancel()
			if err := <-served; err != nil {
				t.Errorf("ServeBus: %v", err)
			}
		}()
		for i := 0; ; i++ {
			c, err := dbusapi.Dial(ctx, bus.Address)
			if err == nil {
				_, err = c.Status(ctx)
				c.Close()
				if err == nil {
					break
				}
			}
			if i > 100 {
				t.Fatalf("daemon not on the bus: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		base := threadsAndFDs(t)
		// One unprivileged process makes all the calls, so this process
		// starts no thread per call itself.
		cmd := exec.Command(client, bus.Address, "200", secret, fifo, junk, good)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client: %v\n%s", err, out)
		}
		all := string(out)
		t.Logf("answers:\n%s", all)
		for _, leak := range []string{"SECRET", "root:", "JUNK"} {
			if strings.Contains(all, leak) {
				t.Fatalf("an unprivileged caller saw %q", leak)
			}
		}
		for _, want := range []string{"version 7.0", "AccessDenied", "may name only an https URL", "not a regular file", "not a valid bundle"} {
			if !strings.Contains(all, want) {
				t.Errorf("no answer says %q", want)
			}
		}
		var now [2]int
		deadline := time.Now().Add(5 * time.Second)
		for {
			now = threadsAndFDs(t)
			if now[0] <= base[0]+8 && now[1] <= base[1] || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if now[0] > base[0]+8 || now[1] > base[1] {
			t.Fatalf("5 s after the calls: %d threads (baseline %d), %d descriptors (baseline %d)", now[0], base[0], now[1], base[1])
		}
	})
}

// threadsAndFDs reads this process's OS thread and descriptor counts.
func threadsAndFDs(t *testing.T) [2]int {
	t.Helper()
	runtime.GC()
	ents, err := os.ReadDir("/proc/self/task")
	must(t, err)
	return [2]int{len(ents), openFDs(t)}
}
