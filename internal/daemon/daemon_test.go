package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	fixture "github.com/otadev/otad/internal/board"
	"github.com/otadev/otad/internal/boot/bootsim"
	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/delta"
	"github.com/otadev/otad/internal/sdsys"
	"github.com/otadev/otad/internal/testutil/loopdev"
	"github.com/otadev/otad/internal/update"
)

// board is a device on files: env files, a data dir, a keyring, a health
// check script and slots (files or loop devices).
type board struct {
	t       *testing.T
	dir     string
	cfg     *config.Config
	env     *bootenv.DeviceStore
	key     *bundle.PrivateKey
	reboots atomic.Int32
}

func newBoard(t *testing.T, slotA, slotB, slotType string) *board {
	t.Helper()
	// The same file-backed board the demo and the benches use; the slots
	// are the caller's (files or loop devices), the check wants "ok" at
	// the head of the booted slot.
	bd, err := fixture.Write(fixture.Spec{Dir: t.TempDir(), Compatible: "test-board", SlotA: slotA, SlotB: slotB,
		SlotType: slotType, HealthMarker: "ok", HealthWindow: 20 * time.Second})
	must(t, err)
	b := &board{t: t, dir: bd.Dir}
	b.env, err = bd.OpenEnv()
	must(t, err)
	t.Cleanup(func() { b.env.Close() })

	b.key, err = bundle.GenerateKey(bundle.AlgEd25519, "test", "release", rand.Reader)
	must(t, err)
	pub, err := bundle.MarshalPublicKey(b.key.Public())
	must(t, err)
	must(t, os.WriteFile(b.path("keys/test.pub"), pub, 0o644))
	b.cfg, err = config.Load(bd.Config)
	must(t, err)
	return b
}

func (b *board) path(n string) string { return filepath.Join(b.dir, n) }

func (b *board) setCmdline(slot string) {
	must(b.t, os.WriteFile(b.path("cmdline"), []byte("root=/dev/x otad.slot="+slot+"\n"), 0o644))
}

func (b *board) daemon() *Daemon {
	b.t.Helper()
	l := logrus.New()
	l.SetOutput(os.Stderr)
	l.SetLevel(logrus.WarnLevel)
	d, err := New(b.cfg, Options{Log: l, Env: b.env,
		Rebooter: rebooterFunc(func() { b.reboots.Add(1) })})
	must(b.t, err)
	return d
}

func (b *board) powerOn() string {
	s, err := bootsim.Step(b.env)
	must(b.t, err)
	b.setCmdline(s)
	return s
}

// run starts a daemon, runs fn with it, and shuts it down like SIGTERM.
func (b *board) run(fn func(d *Daemon)) {
	b.t.Helper()
	d := b.daemon()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	d.opts.Serve = func(ctx context.Context, d *Daemon) error {
		close(ready)
		<-ctx.Done()
		return nil
	}
	go func() { done <- d.Run(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		b.t.Fatalf("daemon ended: %v", err)
	}
	d.Engine.Wait()
	fn(d)
	cancel()
	if err := <-done; err != nil {
		b.t.Fatalf("daemon: %v", err)
	}
}

func (b *board) bundle(version string, secver uint64, img []byte) string {
	b.t.Helper()
	p := b.path("b-" + version + ".otab")
	f, err := os.Create(p)
	must(b.t, err)
	defer f.Close()
	_, err = bundle.Create(context.Background(), f, bundle.CreateOptions{Compatible: "test-board", Version: version,
		SecurityVersion: secver, ChunkSize: 256 << 10, TempDir: b.dir},
		[]bundle.Source{{Class: "rootfs", Encoding: bundle.EncodingZstd, Data: bytes.NewReader(img), Size: int64(len(img))}},
		[]*bundle.PrivateKey{b.key})
	must(b.t, err)
	return p
}

type rebooterFunc func()

func (f rebooterFunc) Reboot(context.Context) error { f(); return nil }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func img(ok bool, seed uint64, n int) []byte {
	b := make([]byte, n)
	r := mrand.New(mrand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32() & 0x0f)
	}
	if ok {
		copy(b, "ok")
	} else {
		copy(b, "no")
	}
	return b
}

func installAndWait(t *testing.T, d *Daemon, src string) update.Event {
	t.Helper()
	ch, stop := d.Engine.Subscribe()
	defer stop()
	if _, err := d.Engine.Install(context.Background(), src, nil); err != nil {
		t.Fatal(err)
	}
	for ev := range ch {
		if ev.Kind == "completed" {
			d.Engine.Wait()
			return ev
		}
	}
	t.Fatal("no completed event")
	return update.Event{}
}

// cycle: install good → reboot → commit; install bad → reboot → health
// fails → fallback → reboot → rollback reported.
func cycle(t *testing.T, b *board, readSlot func(name string, n int) []byte) {
	good := img(true, 2, 3<<20+999)
	bad := img(false, 3, 2<<20)
	b.run(func(d *Daemon) {
		if ev := installAndWait(t, d, b.bundle("2.0", 1, good)); ev.Result != 0 {
			t.Fatalf("install: %s", ev.Message)
		}
		if st := d.Engine.Status(); st.Operation != update.OpPendingReboot {
			t.Fatalf("status %+v", st)
		}
	})
	if !bytes.Equal(readSlot("B", len(good)), good) {
		t.Fatal("slot B content")
	}
	if s := b.powerOn(); s != "B" {
		t.Fatalf("booted %s", s)
	}
	b.run(func(d *Daemon) {
		st := d.Engine.Status()
		if st.BootSlot != "B" || st.TrialBoot || st.Version != "2.0" {
			t.Fatalf("after trial boot: %+v", st)
		}
		if ev := installAndWait(t, d, b.bundle("2.1", 2, bad)); ev.Result != 0 {
			t.Fatalf("install bad: %s", ev.Message)
		}
	})
	if s := b.powerOn(); s != "A" {
		t.Fatalf("booted %s", s)
	}
	b.run(func(d *Daemon) {
		st := d.Engine.Status()
		if st.Slots[0].State != "bad" || !strings.Contains(st.LastError, "slot A is broken") {
			t.Fatalf("after failed trial: %+v", st)
		}
	})
	if b.reboots.Load() < 3 {
		t.Fatalf("reboots %d", b.reboots.Load())
	}
	if s := b.powerOn(); s != "B" {
		t.Fatalf("after fallback booted %s", s)
	}
	b.run(func(d *Daemon) {
		if st := d.Engine.Status(); st.BootSlot != "B" || st.Version != "2.0" || st.Operation != update.OpIdle {
			t.Fatalf("after rollback: %+v", st)
		}
	})
}

func TestCycleOnFiles(t *testing.T) {
	dir := t.TempDir()
	a, bb := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, p := range []string{a, bb} {
		must(t, os.WriteFile(p, make([]byte, 8<<20), 0o644))
	}
	must(t, os.WriteFile(a, img(true, 1, 1<<20), 0o644))
	must(t, os.Truncate(a, 8<<20))
	b := newBoard(t, a, bb, "file")
	cycle(t, b, func(n string, size int) []byte {
		p := map[string]string{"A": a, "B": bb}[n]
		buf, err := os.ReadFile(p)
		must(t, err)
		return buf[:size]
	})
}

// TestCycleOnLoopDevices runs the same cycle with both slots on real loop
// devices (block type, O_DIRECT writer, active-slot check by device number).
func TestCycleOnLoopDevices(t *testing.T) {
	devs := loopSlots(t, img(true, 1, 8<<20))
	b := newBoard(t, devs["A"], devs["B"], "block")
	cycle(t, b, func(n string, size int) []byte { return readDev(t, devs[n], size) })
	// The active slot is refused by device identity, not name: a slot
	// config pointing B at A's device is caught.
	b.cfg.Slots[1].Device = devs["A"]
	b.setCmdline("B")
	b.run(func(d *Daemon) {
		ev := installAndWait(t, d, b.path("b-2.0.otab"))
		if ev.Result == 0 || !strings.Contains(ev.Message, "active slot") {
			t.Fatalf("install onto the active device: %+v", ev)
		}
	})
}

// loopSlots makes 8 MiB loop devices A (holding a) and B (zeros), detached
// when the test ends.
func loopSlots(t *testing.T, a []byte) map[string]string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	dir := t.TempDir()
	devs := map[string]string{}
	for _, n := range []string{"A", "B"} {
		f := filepath.Join(dir, n+".img")
		must(t, os.WriteFile(f, make([]byte, 8<<20), 0o644))
		if n == "A" {
			must(t, os.WriteFile(f, a, 0o644))
			must(t, os.Truncate(f, 8<<20))
		}
		devs[n] = loopdev.Attach(t, f, false)
	}
	return devs
}

func readDev(t *testing.T, dev string, size int) []byte {
	t.Helper()
	f, err := os.Open(dev)
	must(t, err)
	defer f.Close()
	buf := make([]byte, size)
	_, err = f.ReadAt(buf, 0)
	must(t, err)
	return buf
}

// TestDeltaOnLoopDevices installs a delta bundle from slot A's loop device
// into B's through the O_DIRECT writer that compares each chunk on write
// (delta.Apply checks the image SHA-256 on the way in, as the bundle reader
// does for full images), and a delta made from another source is refused
// with B left as it was.
func TestDeltaOnLoopDevices(t *testing.T) {
	old := img(true, 1, 8<<20)
	devs := loopSlots(t, old)
	b := newBoard(t, devs["A"], devs["B"], "block")
	nu := bytes.Clone(old)
	copy(nu[1<<20:], img(true, 9, 300<<10)) // a changed region
	copy(nu[5<<20+3:], old[6<<20:7<<20])    // moved data
	nu = nu[:7<<20+12345]                   // a shorter image, unaligned end
	good := b.deltaBundle("2.0", old, nu)
	other := bytes.Clone(old) // differs where the patch reads (the moved data)
	other[6<<20+4321] ^= 0x80
	wrong := b.deltaBundle("2.1", other, nu)
	b.run(func(d *Daemon) {
		if ev := installAndWait(t, d, good); ev.Result != 0 {
			t.Fatalf("delta install: %s", ev.Message)
		}
	})
	if !bytes.Equal(readDev(t, devs["B"], len(nu)), nu) {
		t.Fatal("slot B does not hold the new image")
	}
	before := readDev(t, devs["B"], 8<<20)
	b.run(func(d *Daemon) {
		_, err := d.Engine.Install(context.Background(), wrong, nil)
		if err == nil {
			d.Engine.Wait()
			err = errors.New(d.Engine.Status().LastError)
		}
		if !strings.Contains(err.Error(), "delta source mismatch") {
			t.Fatalf("delta from another source: %v", err)
		}
	})
	if !bytes.Equal(readDev(t, devs["B"], 8<<20), before) {
		t.Fatal("a refused delta changed slot B")
	}
}

func (b *board) deltaBundle(version string, oldImg, newImg []byte) string {
	b.t.Helper()
	var patch bytes.Buffer
	_, err := delta.Generate(context.Background(), bytes.NewReader(oldImg), int64(len(oldImg)),
		bytes.NewReader(newImg), int64(len(newImg)), &patch, delta.GenOptions{FullSize: -1, WindowSize: 256 << 10})
	must(b.t, err)
	p := b.path("d-" + version + ".otab")
	f, err := os.Create(p)
	must(b.t, err)
	defer f.Close()
	_, err = bundle.Create(context.Background(), f, bundle.CreateOptions{Compatible: "test-board", Version: version,
		SecurityVersion: 1, ChunkSize: 256 << 10, TempDir: b.dir},
		[]bundle.Source{{Class: "rootfs", Encoding: bundle.EncodingDelta, Data: bytes.NewReader(patch.Bytes()),
			Size: int64(patch.Len()), TargetSize: int64(len(newImg)), TargetSHA256: fmt.Sprintf("%x", sha256.Sum256(newImg)),
			Delta: &bundle.DeltaSource{SourceSHA256: fmt.Sprintf("%x", sha256.Sum256(oldImg)), SourceSize: int64(len(oldImg))}}},
		[]*bundle.PrivateKey{b.key})
	must(b.t, err)
	return p
}

func TestBadConfigPieces(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.img")
	must(t, os.WriteFile(a, make([]byte, 1<<20), 0o644))
	b := newBoard(t, a, a+"x", "file")
	cfg := *b.cfg
	cfg.Keyring.Directory = filepath.Join(dir, "nokeys")
	if _, err := New(&cfg, Options{Env: b.env}); err == nil {
		t.Error("missing keyring accepted")
	}
	cfg = *b.cfg
	cfg.EnvConfig = filepath.Join(dir, "nope.config")
	if _, err := New(&cfg, Options{}); err == nil {
		t.Error("missing env config accepted")
	}
	// Threshold from the config can only tighten the keyring policy.
	kr, err := LoadKeyring(config.Keyring{Directory: b.path("keys"), Threshold: 2})
	if err != nil || kr.Policy.Threshold != 2 {
		t.Errorf("threshold: %v %+v", err, kr)
	}
}

func TestBackendAdapter(t *testing.T) {
	for err, want := range map[error]string{
		update.ErrBusy:                              dbusapi.ErrBusy,
		fmt.Errorf("x: %w", bundle.ErrDowngrade):    dbusapi.ErrDowngrade,
		fmt.Errorf("x: %w", bundle.ErrBadSignature): dbusapi.ErrBadSignature,
		bundle.ErrIncompatible:                      dbusapi.ErrIncompatible,
		errors.New("other"):                         "",
	} {
		if got := Classify(err); got != want {
			t.Errorf("Classify(%v) = %q, want %q", err, got, want)
		}
	}
	dir := t.TempDir()
	a := filepath.Join(dir, "a.img")
	must(t, os.WriteFile(a, make([]byte, 4<<20), 0o644))
	bb := filepath.Join(dir, "b.img")
	must(t, os.WriteFile(bb, make([]byte, 4<<20), 0o644))
	b := newBoard(t, a, bb, "file")
	b.run(func(d *Daemon) {
		be := Backend{E: d.Engine}
		ch, stop := be.Subscribe()
		src := b.bundle("9.0", 0, img(true, 9, 1<<20))
		m, err := be.Inspect(context.Background(), src)
		if err != nil || m["version"] != "9.0" || m["compatible"] != "test-board" {
			t.Fatalf("Inspect %v %v", m, err)
		}
		if _, err := be.Install(context.Background(), src, map[string]any{"reboot": false}); err != nil {
			t.Fatal(err)
		}
		var kinds []string
		timeout := time.After(20 * time.Second)
	loop:
		for {
			select {
			case ev := <-ch:
				kinds = append(kinds, ev.Kind)
				if ev.Kind == "completed" {
					break loop
				}
			case <-timeout:
				t.Fatalf("events so far %v", kinds)
			}
		}
		stop()
		d.Engine.Wait()
		if kinds[0] != "status" || !strings.Contains(strings.Join(kinds, ","), "progress") {
			t.Errorf("events %v", kinds)
		}
		st := be.Status()
		if st.Operation != "pending-reboot" || st.BootSlot != "A" {
			t.Errorf("status %+v", st)
		}
		slots := be.Slots()
		if len(slots) != 2 || slots[1].Props["state"].Value() != "pending" || slots[1].Props["version"].Value() != "9.0" {
			t.Errorf("slots %+v", slots)
		}
	})
}

// READY=1 comes only after the engine settled its state, then STATUS=
// lines follow the operation, and STOPPING=1 at shutdown; over a real
// unixgram socket like systemd's.
func TestNotify(t *testing.T) {
	dir := t.TempDir()
	a, bb := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, p := range []string{a, bb} {
		must(t, os.WriteFile(p, make([]byte, 4<<20), 0o644))
	}
	b := newBoard(t, a, bb, "file")
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	must(t, err)
	defer conn.Close()
	d := b.daemon()
	t.Setenv("NOTIFY_SOCKET", sock)
	d.opts.Notifier = &sdsys.Notifier{}
	src := b.bundle("3.0", 0, img(true, 3, 1<<20))
	// Read while the daemon runs, like systemd: the socket queues only a
	// few datagrams (net.unix.max_dgram_qlen) and sd_notify blocks beyond.
	got := make(chan []string, 1)
	go func() {
		var msgs []string
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				break
			}
			msgs = append(msgs, string(buf[:n]))
			if strings.Contains(string(buf[:n]), "STOPPING=1") {
				break
			}
		}
		got <- msgs
	}()
	must(t, RunWith(context.Background(), d, func(ctx context.Context, d *Daemon) error {
		installAndWait(t, d, src)
		return nil
	}))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second)) // ends the reader if STOPPING=1 never came
	msgs := <-got
	all := strings.Join(msgs, "|")
	if !strings.HasPrefix(all, "READY=1") || !regexp.MustCompile(`STATUS=installing 3\.0 into B: writing [0-9]+%`).MatchString(all) ||
		!strings.Contains(all, "pending-reboot") || !strings.HasSuffix(all, "STOPPING=1") {
		t.Fatalf("notifications %q", msgs)
	}
}

// watchdog = otad opens the device only when a trial is confirmed, never at
// start (opening starts the hardware countdown).
func TestWatchdogOpenedOnlyForTheTrial(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "watchdog")
	c, err := NewConfirmer(config.Health{Watchdog: config.WatchdogOtad, WatchdogDevice: dev, Timeout: time.Second})
	if err != nil {
		t.Fatalf("building the confirmer touched the watchdog: %v", err)
	}
	if _, err := os.Stat(dev); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("watchdog device touched at build time")
	}
	if err := c.Confirm(context.Background()); err == nil || !strings.Contains(err.Error(), "watchdog") {
		t.Fatalf("trial without its watchdog: %v", err)
	}
}
