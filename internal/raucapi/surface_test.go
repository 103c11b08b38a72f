package raucapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/privbus"
)

// openingBackend inspects the way the engine does: fetch opens the source
// (O_NONBLOCK|O_NOFOLLOW, regular files only) and the bundle reader fails
// on a file that is no bundle with a message quoting its first bytes.
// An https source is held until release is closed (held counts them) and
// then fails with a text that must not reach an unprivileged caller.
type openingBackend struct {
	release chan struct{}
	held    atomic.Int32
}

func (b *openingBackend) Inspect(ctx context.Context, src string, _ Access) (map[string]any, error) {
	if strings.HasPrefix(src, "https://") {
		b.held.Add(1)
		select {
		case <-b.release:
		case <-ctx.Done():
		}
		return nil, errors.New("fetch: server said SERVERSECRET")
	}
	s, err := fetch.Open(ctx, src, fetch.Options{})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var magic [8]byte
	if _, err := io.ReadFull(s, magic[:]); err != nil {
		return nil, fmt.Errorf("bundle: reading the header: %w", err)
	}
	return nil, fmt.Errorf("bundle: not a bundle (magic %q)", magic[:])
}

func (*openingBackend) Install(context.Context, string, Access) (string, error) {
	return "", errors.New("openingBackend: no installs")
}
func (*openingBackend) MarkGood(string) error   { return nil }
func (*openingBackend) MarkBad(string) error    { return nil }
func (*openingBackend) MarkActive(string) error { return nil }
func (*openingBackend) Status() dbusapi.Status {
	return dbusapi.Status{Operation: "idle", BootSlot: "A"}
}
func (*openingBackend) Slots() []dbusapi.SlotStatus { return nil }
func (*openingBackend) Primary() (string, error)    { return "A", nil }
func (*openingBackend) Subscribe() (<-chan dbusapi.Event, func()) {
	return make(chan dbusapi.Event), func() {}
}

// serveShipped starts a private system-like dbus-daemon with both shipped
// policy files and serves openingBackend on it as root, under BusName.
func serveShipped(t *testing.T) (addr, dir string, b *openingBackend, log *syncLog) {
	t.Helper()
	var extra []string
	for _, p := range []string{"../../systemd/io.otad.Update1.conf", "../../systemd/de.pengutronix.rauc.conf"} {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("bus policy missing: %v", err)
		}
		extra = append(extra, privbus.Include(abs))
	}
	dir, err := os.MkdirTemp("", "otad-rauc-bus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The unprivileged child must reach the socket and its binary.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bus, err := privbus.Start(context.Background(), dir, strings.Join(extra, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bus.Stop()
		if t.Failed() {
			t.Logf("dbus-daemon stderr:\n%s", bus.Stderr())
		}
	})
	conn, err := dbus.Connect(bus.Address, dbus.WithIncomingInterceptor(dbusapi.CloseStrayFDs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	b = &openingBackend{release: make(chan struct{})}
	log = &syncLog{}
	srv, err := Export(context.Background(), conn, b, Options{Slots: testSlots, Logf: log.logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return bus.Address, dir, b, log
}

// syncLog keeps the server's log lines.
type syncLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *syncLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

// count is the number of lines containing sub.
func (l *syncLog) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, sub) {
			n++
		}
	}
	return n
}

const childEnv = "OTAD_RAUCAPI_CHILD"

func TestMain(m *testing.M) {
	if what := os.Getenv(childEnv); what != "" {
		os.Exit(childMain(what, os.Getenv("OTAD_RAUCAPI_BUS")))
	}
	os.Exit(m.Run())
}

// call makes one RAUC call ("info" or "inspect") and describes the answer:
// "ok" or the error's name and message.
func call(ctx context.Context, conn *dbus.Conn, what, path string) string {
	obj := conn.Object(BusName, ObjectPath)
	var err error
	switch what {
	case "info":
		var c, v string
		err = obj.CallWithContext(ctx, Interface+".Info", 0, path).Store(&c, &v)
	default:
		var m map[string]dbus.Variant
		err = obj.CallWithContext(ctx, Interface+".InspectBundle", 0, path, map[string]dbus.Variant{}).Store(&m)
	}
	var de dbus.Error
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &de):
		return de.Name + ": " + fmt.Sprint(de.Body...)
	}
	return "error: " + err.Error()
}

// childMain runs as uid 65534: "probe" answers Info and InspectBundle on
// OTAD_PATH; "flood" makes 200 concurrent calls over OTAD_FLOOD's paths.
func childMain(what, addr string) int {
	var conns []*dbus.Conn
	// Two connections: the bus allows 128 pending calls per connection.
	for i := 0; i < 2; i++ {
		c, err := dbus.Connect(addr)
		if err != nil {
			fmt.Println("dial:", err)
			return 1
		}
		defer c.Close()
		conns = append(conns, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	switch what {
	case "probe":
		p := os.Getenv("OTAD_PATH")
		fmt.Println("Info:", call(ctx, conns[0], "info", p))
		fmt.Println("InspectBundle:", call(ctx, conns[0], "inspect", p))
	case "https-n":
		n, _ := strconv.Atoi(os.Getenv("OTAD_N"))
		var wg sync.WaitGroup
		var mu sync.Mutex
		counts := map[string]int{}
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				ans := call(ctx, conns[i%2], "inspect", "https://127.0.0.1:1/b.otab")
				mu.Lock()
				counts[ans]++
				mu.Unlock()
			}(i)
		}
		wg.Wait()
		fmt.Println(counts)
	case "flood":
		paths := strings.Split(os.Getenv("OTAD_FLOOD"), ":")
		var wg sync.WaitGroup
		var mu sync.Mutex
		counts := map[string]int{}
		for i := 0; i < 200; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				m := "inspect"
				if i%2 == 1 {
					m = "info"
				}
				ans := call(ctx, conns[i%2], m, paths[i%len(paths)])
				mu.Lock()
				counts[ans]++
				mu.Unlock()
			}(i)
		}
		wg.Wait()
		fmt.Println(counts)
	}
	return 0
}

// runAsNoFatal is runAs for a goroutine other than the test's: failures
// come back as text.
func runAsNoFatal(dir, addr, what string, env ...string) string {
	cmd := exec.Command(filepath.Join(dir, "child.test"))
	cmd.Env = append([]string{childEnv + "=" + what, "OTAD_RAUCAPI_BUS=" + addr}, env...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("child %s: %v: %s", what, err, out)
	}
	return strings.TrimSpace(string(out))
}

// runAs runs this test binary as uid/gid 65534 (nobody) doing what.
func runAs(t *testing.T, dir, addr, what string, env ...string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "child.test")
	if _, err := os.Stat(bin); err != nil {
		data, err := os.ReadFile(self)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin)
	cmd.Env = append([]string{childEnv + "=" + what, "OTAD_RAUCAPI_BUS=" + addr}, env...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", what, err, out)
	}
	return strings.TrimSpace(string(out))
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child as another UID")
	}
}

// An unprivileged caller of RAUC's Info and InspectBundle learns nothing
// of a file it cannot read — not its bytes, not whether it exists — and a
// FIFO does not hold the call: a local path from it is refused before
// anything is opened.
func TestRAUCInspectDoesNotLeakFiles(t *testing.T) {
	requireRoot(t)
	addr, dir, _, log := serveShipped(t)
	secret := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(secret, []byte("root:SECRETBYTES"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "quiet.fifo")
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	exists := runAs(t, dir, addr, "probe", "OTAD_PATH="+secret)
	missing := runAs(t, dir, addr, "probe", "OTAD_PATH="+secret+".none")
	fifoOut := runAs(t, dir, addr, "probe", "OTAD_PATH="+fifo)
	t.Logf("existing: %s\nmissing: %s\nfifo: %s", exists, missing, fifoOut)
	for _, out := range []string{exists, missing, fifoOut} {
		if strings.Contains(out, "SECRET") || strings.Contains(out, "root:") || strings.Contains(out, "magic") {
			t.Fatalf("an unprivileged caller saw file bytes: %s", out)
		}
		if strings.Contains(out, "Info: ok") || strings.Contains(out, "InspectBundle: ok") {
			t.Fatalf("an unprivileged caller's path was accepted: %s", out)
		}
	}
	if exists != missing || exists != fifoOut {
		t.Fatalf("existing file, missing file and FIFO answer differently:\n%s\n%s\n%s", exists, missing, fifoOut)
	}
	for _, line := range strings.Split(exists, "\n") {
		if !strings.Contains(line, dbusapi.ErrNotAuthorized) {
			t.Errorf("want %s for a path from uid 65534, got %s", dbusapi.ErrNotAuthorized, line)
		}
	}
	if n := log.count("from uid 65534 refused"); n != 6 {
		t.Errorf("%d of 6 refusals logged with the caller's UID", n)
	}
}

// At most two inspects from unprivileged callers run at once: with two
// held in the backend, the others are answered Busy at once; the held
// ones' failure reaches the caller as a fixed sentence, not the backend's
// text.
func TestRAUCUnprivilegedInspectsBounded(t *testing.T) {
	requireRoot(t)
	addr, dir, b, log := serveShipped(t)
	const n = 20
	runAs(t, dir, addr, "noop") // copies the test binary where nobody can run it
	out := make(chan string, 1)
	go func() { out <- runAsNoFatal(dir, addr, "https-n", "OTAD_N="+strconv.Itoa(n)) }()
	// Wait (no clock) until two are held and the rest were refused.
	for b.held.Load() < dbusapi.MaxUnprivilegedInspects || log.count("refused: too many inspects") < n-dbusapi.MaxUnprivilegedInspects {
		select {
		case got := <-out:
			close(b.release)
			t.Fatalf("child ended before two inspects were held and the rest refused: %s", got)
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(b.release)
	got := <-out
	t.Logf("child: %s", got)
	if strings.Contains(got, "SERVERSECRET") {
		t.Fatalf("an unprivileged caller saw the backend's text: %s", got)
	}
	// fmt prints map keys sorted: Busy before Failed.
	want := fmt.Sprintf("map[%s: too many calls in progress; try again:%d %s: %s:%d]", dbusapi.ErrBusy, n-dbusapi.MaxUnprivilegedInspects,
		dbusapi.ErrFailed, dbusapi.PublicInspectError(dbusapi.ErrFailed), dbusapi.MaxUnprivilegedInspects)
	if got != want {
		t.Fatalf("answers %s\nwant %s", got, want)
	}
	if h := b.held.Load(); h != dbusapi.MaxUnprivilegedInspects {
		t.Fatalf("%d inspects reached the backend, want %d", h, dbusapi.MaxUnprivilegedInspects)
	}
}

// procUsage is this process's threads and open descriptors.
type procUsage struct{ threads, fds int }

func usage(t *testing.T) procUsage {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var u procUsage
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Threads:" {
			u.threads, _ = strconv.Atoi(f[1])
		}
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	u.fds = len(ents)
	return u
}

// threadSlack: the Go runtime may start a few threads for parallel
// goroutines; it pins one per call only when a syscall blocks.
const threadSlack = 8

// 200 concurrent Info and InspectBundle calls from uid 65534 on the real
// dbus-daemon under the shipped policies — naming a FIFO nobody writes, a
// FIFO whose write end is held open, a root-only file and a missing one —
// leave the daemon's threads and descriptors at their baseline within 5 s.
func TestRAUCInspectFloodFromUnprivilegedCaller(t *testing.T) {
	requireRoot(t)
	addr, dir, _, _ := serveShipped(t)
	quiet, held, secret := filepath.Join(dir, "quiet.fifo"), filepath.Join(dir, "held.fifo"), filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("root:SECRETBYTES"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{quiet, held} {
		if err := syscall.Mkfifo(p, 0o666); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	// Both ends of "held" stay open here, as an attacker's writer would:
	// opens return at once and reads wait for data forever.
	w, err := os.OpenFile(held, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	debug.FreeOSMemory()
	base := usage(t)
	out := runAs(t, dir, addr, "flood", "OTAD_FLOOD="+strings.Join([]string{quiet, held, secret, secret + ".none"}, ":"))
	t.Logf("child: %s", out)
	var now procUsage
	deadline := time.Now().Add(5 * time.Second)
	for {
		now = usage(t)
		if now.threads <= base.threads+threadSlack && now.fds <= base.fds || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if now.threads > base.threads+threadSlack || now.fds > base.fds {
		t.Fatalf("5 s after 200 calls: threads %d (baseline %d), fds %d (baseline %d)", now.threads, base.threads, now.fds, base.fds)
	}
	if strings.Contains(out, "SECRET") || strings.Contains(out, "root:") || strings.Contains(out, "magic") {
		t.Fatalf("an unprivileged caller saw file bytes: %s", out)
	}
	if strings.Contains(out, "ok:") || strings.Contains(out, "error:") {
		t.Fatalf("want every call refused by name, got %s", out)
	}
}
