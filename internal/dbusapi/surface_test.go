package dbusapi

import (
	"context"
	"fmt"
	"io"
	"os"
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

	"github.com/otadev/otad/internal/fetch"
)

// openingBackend opens InspectBundle's source the way the engine does
// (fetch) and reads the first bytes, failing like the bundle reader does on
// a file that is not a bundle — its message quotes those bytes.
type openingBackend struct{ *fakeBackend }

func (o openingBackend) Inspect(ctx context.Context, src string) (map[string]any, error) {
	s, err := fetch.Open(ctx, src, fetch.Options{})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return inspectSource(s)
}

func (o openingBackend) InspectFile(_ context.Context, f *File) (map[string]any, error) {
	defer f.Close()
	s, err := fetch.FromFile(f.File, "fd", f.BlockOK, 0)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return inspectSource(s)
}

func (o openingBackend) InstallFiles(_ context.Context, _ string, bundle *File, opts map[string]any) (string, error) {
	if bundle != nil {
		bundle.Close()
	}
	if f, ok := opts[OptFallbackFile].(*File); ok {
		f.Close()
	}
	return "", fmt.Errorf("openingBackend: no installs")
}

func inspectSource(s io.Reader) (map[string]any, error) {
	var magic [8]byte
	if _, err := io.ReadFull(s, magic[:]); err != nil {
		return nil, fmt.Errorf("bundle: reading the header: %w", err)
	}
	return nil, fmt.Errorf("bundle: not a bundle (magic %q)", magic[:])
}

// procUsage is this process's threads, open descriptors and RSS.
type procUsage struct{ threads, fds, rssKiB int }

func usage(t *testing.T) procUsage {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var u procUsage
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "Threads:":
			u.threads, _ = strconv.Atoi(f[1])
		case "VmRSS:":
			u.rssKiB, _ = strconv.Atoi(f[1])
		}
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	u.fds = len(ents)
	return u
}

// Slack for "back at baseline": the Go runtime may start a few threads for
// parallel goroutines (it never pins one per call unless a syscall blocks),
// and RSS moves by heap noise.
const (
	threadSlack = 8
	rssSlackKiB = 16 << 10
)

// 200 concurrent InspectBundle calls from uid 65534 on the real
// dbus-daemon under the shipped policy — naming or passing as a descriptor
// a FIFO nobody writes, a FIFO whose write end is held open, and a regular
// file that is no bundle — leave the daemon's threads, descriptors and RSS
// at their baseline within 5 s, and show the caller no byte of the file.
func TestInspectFloodFromUnprivilegedCaller(t *testing.T) {
	requireRoot(t)
	b := openingBackend{newFake(1, time.Millisecond)}
	addr, dir := serve(t, includePolicy(t), b, nil)
	quiet, held, regular := filepath.Join(dir, "quiet.fifo"), filepath.Join(dir, "held.fifo"), filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("root:SECRETBYTES"), 0o644); err != nil {
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
	// Both ends of "held" stay open in this process, as an attacker's
	// writer would: opens return at once and reads wait for data forever.
	w, err := os.OpenFile(held, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	debug.FreeOSMemory()
	base := usage(t)
	out := runAsEnv(t, dir, addr, "inspect-flood", "OTAD_FLOOD="+quiet+":"+held+":"+regular)
	t.Logf("child: %s", out)
	var now procUsage
	deadline := time.Now().Add(5 * time.Second)
	for {
		debug.FreeOSMemory()
		now = usage(t)
		back := now.threads <= base.threads+threadSlack && now.fds <= base.fds && now.rssKiB <= base.rssKiB+rssSlackKiB
		if back || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if now.threads > base.threads+threadSlack || now.fds > base.fds || now.rssKiB > base.rssKiB+rssSlackKiB {
		t.Fatalf("5 s after 200 InspectBundle calls: threads %d (baseline %d), fds %d (baseline %d), RSS %d KiB (baseline %d KiB)",
			now.threads, base.threads, now.fds, base.fds, now.rssKiB, base.rssKiB)
	}
	if strings.Contains(out, "magic") || strings.Contains(out, "root:") {
		t.Fatalf("an unprivileged caller saw file bytes: %s", out)
	}
}

// An unprivileged caller learns nothing about a file it cannot read: not
// its first bytes, not whether it exists.
func TestInspectDoesNotLeakFiles(t *testing.T) {
	requireRoot(t)
	b := openingBackend{newFake(1, time.Millisecond)}
	addr, dir := serve(t, includePolicy(t), b, nil)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("root:SECRETBYTES"), 0o600); err != nil {
		t.Fatal(err)
	}
	exists := runAsEnv(t, dir, addr, "inspect-path", "OTAD_PATH="+secret)
	missing := runAsEnv(t, dir, addr, "inspect-path", "OTAD_PATH="+secret+".none")
	if strings.Contains(exists, "SECRET") || strings.Contains(exists, "root") {
		t.Fatalf("nobody read a root-only file through InspectBundle: %s", exists)
	}
	if exists != missing {
		t.Fatalf("existing and missing files answer differently:\n%s\n%s", exists, missing)
	}
}

// floodChild is the unprivileged side of TestInspectFloodFromUnprivilegedCaller.
// Two connections: the bus allows 128 pending calls per connection.
func floodChild(c *Client, fifos []string) string {
	c2, err := Dial(context.Background(), os.Getenv("OTAD_DBUSAPI_BUS"))
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c2.Close()
	clients := []*Client{c, c2}
	// The caller's own descriptors, opened without blocking.
	var files []*os.File
	for _, p := range fifos {
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return "open: " + err.Error()
		}
		defer f.Close()
		files = append(files, f)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(c *Client, i int) {
			defer wg.Done()
			var err error
			if k := i % (2 * len(fifos)); k < len(fifos) {
				_, err = c.Inspect(ctx, fifos[k])
			} else {
				_, err = c.InspectFile(ctx, files[k-len(fifos)])
			}
			name := "ok"
			if err != nil {
				name = err.Error()
				if re, ok := remote(err).(*RemoteError); ok {
					name = re.Name + ": " + re.Msg
				}
			}
			mu.Lock()
			counts[name]++
			mu.Unlock()
		}(clients[i%2], i)
	}
	wg.Wait()
	return fmt.Sprint(counts)
}

// runAsEnv is runAs with extra environment for the child.
func runAsEnv(t *testing.T, dir, addr, what string, env ...string) string {
	t.Helper()
	return runAsWith(t, dir, addr, what, env)
}

// otactl believes only the owner of io.otad.Update1: PropertiesChanged
// and Completed from another connection — broadcast or sent straight to
// otactl's connection, aimed at the real transaction id — are ignored.
func TestForgedSignalsIgnored(t *testing.T) {
	b := newFake(100, 20*time.Millisecond)
	started := make(chan string, 1)
	b.onInstall = func(tx string) { started <- tx }
	addr, _ := serve(t, includePolicy(t), b, nil)
	c := dialT(t, addr)
	forger, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	victim := c.conn.Names()[0]
	forge := func(tx string) {
		props := map[string]dbus.Variant{
			"Operation": dbus.MakeVariant("forged"),
			"Progress":  dbus.MakeVariant(Progress{Percent: 77, Phase: "forged"}),
		}
		for _, dest := range []string{"", victim} {
			send := func(iface, member string, body ...any) {
				msg := &dbus.Message{Type: dbus.TypeSignal, Headers: map[dbus.HeaderField]dbus.Variant{
					dbus.FieldPath:      dbus.MakeVariant(ObjectPath),
					dbus.FieldInterface: dbus.MakeVariant(iface),
					dbus.FieldMember:    dbus.MakeVariant(member),
				}, Body: body}
				if dest != "" {
					msg.Headers[dbus.FieldDestination] = dbus.MakeVariant(dest)
				}
				msg.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(body...))
				if call := forger.Send(msg, nil); call.Err != nil {
					t.Errorf("forging %s: %v", member, call.Err)
				}
			}
			send("org.freedesktop.DBus.Properties", "PropertiesChanged", Interface, props, []string{})
			send(Interface, "Completed", tx, int32(0), "forged")
		}
	}
	go func() { forge(<-started) }()
	var seen []string
	tx, res, msg, err := c.Install(context.Background(), "/tmp/b.otab", nil, func(u Update) {
		if u.Operation != "" {
			seen = append(seen, u.Operation)
		}
		if u.Progress != nil {
			seen = append(seen, u.Progress.Phase)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if msg != "installed" || res != 0 || tx != "tx-1" {
		t.Fatalf("Install returned (%s, %d, %q): a forged Completed was believed", tx, res, msg)
	}
	for _, s := range seen {
		if s == "forged" {
			t.Fatalf("a forged PropertiesChanged was reported: %v", seen)
		}
	}
}

// Descriptors are accepted only when they are regular files (block devices
// from root); a FIFO, a character device or a directory is refused before
// the backend sees it, and every received descriptor is closed again.
func TestDescriptorTypes(t *testing.T) {
	b := openingBackend{newFake(1, time.Millisecond)}
	addr, dir := serve(t, includePolicy(t), b, nil)
	c := dialT(t, addr)
	fifo := filepath.Join(dir, "p.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	reg := filepath.Join(dir, "reg")
	if err := os.WriteFile(reg, []byte("NOTABUNDLE"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := func(p string) *os.File {
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	files := map[string]*os.File{"fifo": open(fifo), "chardev": open("/dev/null"), "dir": open(dir), "regular": open(reg)}
	base := usage(t).fds
	for name, f := range files {
		_, err := c.InspectFile(context.Background(), f)
		re, _ := remote(err).(*RemoteError)
		switch {
		case re == nil:
			t.Errorf("%s: %v", name, err)
		case name == "regular" && (re.Name != ErrFailed || !strings.Contains(re.Msg, "NOTABUN")):
			// Root is privileged: it sees the backend's own error.
			t.Errorf("regular file: %v, want the backend's verdict", re)
		case name != "regular" && (re.Name != ErrInvalidArgs || !strings.Contains(re.Msg, "not a regular file")):
			t.Errorf("%s: %v, want InvalidArguments", name, re)
		}
		var tx string
		err = c.obj.Call(Interface+".InstallFD", 0, dbus.UnixFD(f.Fd()), map[string]dbus.Variant{}).Store(&tx)
		if re, _ := remote(err).(*RemoteError); name != "regular" && (re == nil || re.Name != ErrInvalidArgs) {
			t.Errorf("InstallFD %s: %v, want InvalidArguments", name, err)
		}
	}
	// Descriptors sent where no handler takes them: a method without an
	// "h" argument, a signal.
	for i := 0; i < 20; i++ {
		_ = c.obj.Call(Interface+".GetSlotStatus", 0, dbus.UnixFD(files["regular"].Fd())).Err
		_ = c.conn.Emit(ObjectPath, Interface+".Completed", dbus.UnixFD(files["regular"].Fd()))
	}
	if err := c.obj.Call("org.freedesktop.DBus.Peer.Ping", 0).Err; err != nil {
		t.Fatal(err)
	}
	if now := usage(t).fds; now > base {
		t.Fatalf("%d descriptors open after the calls, %d before", now, base)
	}
}

// At most MaxUnprivilegedInspects inspects from unprivileged callers run at
// once; the others are answered Busy without reaching the backend.
func TestUnprivilegedInspectLimit(t *testing.T) {
	requireRoot(t)
	b := &gatedBackend{openingBackend: openingBackend{newFake(1, time.Millisecond)}, release: make(chan struct{})}
	addr, dir := startBus(t, includePolicy(t))
	conn, err := dbus.Connect(addr, dbus.WithIncomingInterceptor(CloseStrayFDs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	// The gate opens once the server has refused the 6 calls beyond the
	// limit (it logs each refusal), so no call can slip in late.
	var refused atomic.Int32
	logf := func(format string, args ...any) {
		if strings.Contains(format, "unprivileged inspects already running") && refused.Add(1) == 6 {
			close(b.release)
		}
	}
	srv, err := Export(context.Background(), conn, b, Options{Classify: classifyFake, Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	reg := filepath.Join(dir, "reg")
	if err := os.WriteFile(reg, []byte("NOTABUNDLE"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := runAsEnv(t, dir, addr, "inspect-n", "OTAD_PATH="+reg, "OTAD_N=8")
	if got := b.entered.Load(); got != MaxUnprivilegedInspects {
		t.Fatalf("%d inspects reached the backend at once, want %d (child: %s)", got, MaxUnprivilegedInspects, out)
	}
	if !strings.Contains(out, ErrBusy+":6") {
		t.Fatalf("child saw %s, want 6 Busy", out)
	}
}

type gatedBackend struct {
	openingBackend
	entered atomic.Int32
	release chan struct{}
}

func (g *gatedBackend) InspectFile(ctx context.Context, f *File) (map[string]any, error) {
	g.entered.Add(1)
	<-g.release
	return g.openingBackend.InspectFile(ctx, f)
}

// inspectN is the child of TestUnprivilegedInspectLimit: N concurrent
// InspectBundleFD calls of one file, counted by error name.
func inspectN(c *Client, path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "open: " + err.Error()
	}
	defer f.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.InspectFile(context.Background(), f)
			name := "ok"
			if re, ok := remote(err).(*RemoteError); ok {
				name = re.Name
			} else if err != nil {
				name = err.Error()
			}
			mu.Lock()
			counts[name]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return fmt.Sprint(counts)
}
