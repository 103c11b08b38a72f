package hawkbit

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/otadev/otad/internal/boot/bootsim"
	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/fleet"
	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/hawkbit/dditest"
	"github.com/otadev/otad/internal/health"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/slot"
	"github.com/otadev/otad/internal/update"
)

const (
	testToken  = "s3cret-device-token"
	slotSize   = 4 << 20
	testTenant = "DEFAULT"
	testID     = "dev01"
)

// board is one device on files: slots, a data dir, an in-memory U-Boot
// env that survives "power cycles", a keyring, and the DDI test server.
// Each powerOn builds a fresh engine and client from what is on disk,
// like a boot does.
type board struct {
	t     *testing.T
	dir   string
	env   *bootenv.MemStore
	key   *bundle.PrivateKey
	kr    *bundle.Keyring
	floor *floor.Mem
	srv   *dditest.Server
	clock *fakeClock
	slot  string // slot the next boot's cmdline names

	autoReboot bool
	maxResumes int
	jitter     func() float64
	// health decides the trial boot of a slot (nil: healthy).
	health func(ctx context.Context, slot string) error
	// hold, when set, is consulted for every artifact read offset; it may
	// block (a slow network) until its ctx ends.
	hold func(ctx context.Context, off int64)
	// transport wraps the client's DDI transport (kill switch).
	kill *killSwitch
}

func newBoard(t *testing.T) *board {
	t.Helper()
	b := &board{t: t, dir: t.TempDir(), floor: &floor.Mem{}, slot: "A", autoReboot: true, maxResumes: 3,
		clock: &fakeClock{now: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC), auto: true}}
	e := bootenv.NewEnv()
	for k, v := range map[string]string{"otad_slot": "A", "otad_prev": "A", "upgrade_available": "0", "bootcount": "0"} {
		e.Set(k, v)
	}
	b.env = bootenv.NewMemStore(e)
	var err error
	b.key, err = bundle.GenerateKey(bundle.AlgEd25519, "test", "release", rand.Reader)
	must(t, err)
	pub, err := bundle.MarshalPublicKey(b.key.Public())
	must(t, err)
	must(t, os.MkdirAll(b.path("keys"), 0o755))
	must(t, os.WriteFile(b.path("keys/test.pub"), pub, 0o644))
	b.kr, err = bundle.LoadKeyring(b.path("keys"))
	must(t, err)
	for _, n := range []string{"slotA", "slotB"} {
		tg, err := slot.NewFileTarget(b.path(n), slotSize)
		must(t, err)
		tg.Close()
	}
	b.srv = dditest.New(t, testTenant, testID, testToken)
	b.srv.Sleep = "00:00:30"
	b.jitter = func() float64 { return 0 }
	return b
}

func (b *board) path(n string) string { return filepath.Join(b.dir, n) }

// bundle builds a signed bundle of img for compatible and returns it.
func (b *board) bundle(compatible, version string, secver uint64, img []byte) []byte {
	b.t.Helper()
	var buf bytes.Buffer
	_, err := bundle.Create(context.Background(), &buf, bundle.CreateOptions{Compatible: compatible, Version: version,
		SecurityVersion: secver, ChunkSize: 256 << 10, TempDir: b.dir},
		[]bundle.Source{{Class: "rootfs", Encoding: bundle.EncodingRaw, Data: bytes.NewReader(img), Size: int64(len(img))}},
		[]*bundle.PrivateKey{b.key})
	must(b.t, err)
	return buf.Bytes()
}

func image(seed uint64, n int) []byte {
	out := make([]byte, n)
	r := mrand.New(mrand.NewPCG(seed, 7))
	for i := range out {
		out[i] = byte(r.Uint32())
	}
	return out
}

// deploy offers version as one .otab artifact and returns the action id.
func (b *board) deploy(version string, data []byte, window string) string {
	return b.srv.Deploy(dditest.Action{Version: version, MaintenanceWindow: window,
		Files: []dditest.File{{Name: "update-" + version + ".otab", Data: data}}})
}

func (b *board) readSlot(name string, n int) []byte {
	f, err := os.ReadFile(b.path("slot" + name))
	must(b.t, err)
	return f[:n]
}

func (b *board) envVar(k string) string {
	e, err := b.env.Load()
	must(b.t, err)
	v, _ := e.Get(k)
	return v
}

// running is one boot: the engine and the client.
type running struct {
	e        *update.Engine
	c        *Client
	cancel   context.CancelFunc
	done     chan error
	rebooted chan struct{}
	once     sync.Once
}

type confirmFunc func(ctx context.Context) error

func (f confirmFunc) Confirm(ctx context.Context) error { return f(ctx) }

type rebootFunc func()

func (f rebootFunc) Reboot(context.Context) error { f(); return nil }

// powerOn boots b.slot: engine Start (settles its journal), then the client.
func (b *board) powerOn() *running {
	b.t.Helper()
	r := &running{done: make(chan error, 1), rebooted: make(chan struct{})}
	j, err := journal.New(b.path("data"))
	must(b.t, err)
	booted := b.slot
	// The daemon's credential table, alive for the whole run; [fetch]
	// redirects = any, so a CDN redirect is followed (without the token).
	creds := &fetch.Credentials{}
	fo := fetch.Options{MinRate: -1, Credentials: creds, Redirects: fetch.RedirectAny,
		Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }}
	e, err := update.New(update.Config{
		Compatible: "test-board",
		Slots: map[string]slot.Slot{
			"A": {Name: "A", Class: "rootfs", Device: b.path("slotA"), Type: slot.TypeFile},
			"B": {Name: "B", Class: "rootfs", Device: b.path("slotB"), Type: slot.TypeFile},
		},
		Env: b.env,
		OpenSource: func(ctx context.Context, src string) (update.Source, error) {
			// What the daemon's openSource does.
			var s update.Source
			var err error
			if d, ok := update.SourceOptions(ctx).(*Download); ok {
				s, err = d.Open(ctx, src, fo)
			} else {
				s, err = fetch.Open(ctx, src, fo)
			}
			if err != nil || b.hold == nil {
				return s, err
			}
			return &heldSource{Source: s, ctx: ctx, hold: b.hold}, nil
		},
		Keyring: b.kr,
		Confirmer: confirmFunc(func(ctx context.Context) error {
			if b.health == nil {
				return nil
			}
			return b.health(ctx, booted)
		}),
		Rebooter:  rebootFunc(func() { r.once.Do(func() { close(r.rebooted) }) }),
		Cmdline:   func() (string, error) { return "root=/dev/x otad.slot=" + booted, nil },
		Journal:   j,
		Floor:     b.floor,
		SyncBytes: 256 << 10,
	})
	must(b.t, err)
	var tr http.RoundTripper = http.DefaultTransport
	if b.kill != nil {
		b.kill.base = http.DefaultTransport
		tr = b.kill
	}
	c, err := New(Config{Server: b.srv.URL, Tenant: testTenant, ControllerID: testID, TokenType: TokenTarget, Token: testToken,
		PollMin: 10 * time.Second, PollMax: time.Hour, Attributes: [][2]string{{"site", "lab"}},
		MaxResumes: b.maxResumes, AutoReboot: b.autoReboot, OtadVersion: "test",
		Store:     fleet.Store{Path: b.path("data/hawkbit-action.json")},
		Transport: tr, Credentials: creds, Clock: b.clock, Jitter: b.jitter,
		Log: func(level slog.Level, msg string, kv ...any) {
			b.t.Logf("%s %s %v", level, msg, kv)
		}}, fleet.EngineUpdater{Engine: e, Journal: j})
	must(b.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	must(b.t, e.Start(ctx))
	r.e, r.c, r.cancel = e, c, cancel
	go func() { r.done <- c.Run(ctx) }()
	return r
}

// stop is SIGTERM (or the power going, as far as our files are
// concerned: every state file is written atomically).
func (r *running) stop() {
	r.cancel()
	<-r.done
	r.e.Wait()
}

// drive boots, reboots on request and restarts after a kill until done()
// holds; it returns the number of boots.
func (b *board) drive(done func() bool) int {
	b.t.Helper()
	for n := 1; n <= 12; n++ {
		r := b.powerOn()
		rebooted, killed := false, false
		deadline := time.Now().Add(60 * time.Second) // a hang guard, not a speed check
	wait:
		for !done() {
			select {
			case <-r.rebooted:
				rebooted = true
				break wait
			case <-b.kill.fired():
				killed = true
				break wait
			case <-time.After(5 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				r.stop()
				b.t.Fatalf("boot %d: nothing happened for 60 s; feedback so far:\n%s", n, feedbackText(b.srv.Feedback()))
			}
		}
		r.stop()
		if done() {
			return n
		}
		if killed {
			b.kill.reset()
			continue // same slot: the daemon restarts, the device did not reboot
		}
		if rebooted {
			s, err := bootsim.Step(b.env)
			must(b.t, err)
			b.slot = s
		}
	}
	b.t.Fatalf("not done after 12 boots; feedback:\n%s", feedbackText(b.srv.Feedback()))
	return 0
}

// waitFor polls cond (a hang guard of 60 s, not a speed check).
func (b *board) waitFor(what string, cond func() bool) {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			b.t.Fatalf("waiting for %s; feedback:\n%s", what, feedbackText(b.srv.Feedback()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (b *board) hasFinal(id string) func() bool {
	return func() bool { return len(b.srv.Finals(id)) > 0 }
}

func feedbackText(fs []dditest.Feedback) string {
	var sb strings.Builder
	for i, f := range fs {
		fmt.Fprintf(&sb, "%2d. %s\n", i+1, f)
	}
	return sb.String()
}

// heldSource lets a test stall a download at an offset (a slow link).
type heldSource struct {
	update.Source
	ctx  context.Context
	hold func(ctx context.Context, off int64)
	off  int64
}

func (h *heldSource) Read(p []byte) (int, error) {
	h.hold(h.ctx, h.off)
	if err := h.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := h.Source.Read(p)
	h.off += int64(n)
	return n, err
}

func (h *heldSource) Seek(off int64, whence int) (int64, error) {
	p, err := h.Source.Seek(off, whence)
	if err == nil {
		h.off = p
	}
	return p, err
}

// killSwitch freezes the client's DDI requests once fired: the daemon is
// gone from the server's point of view until the harness restarts it.
type killSwitch struct {
	base http.RoundTripper
	mu   sync.Mutex
	ch   chan struct{}
	dead bool
}

func newKillSwitch() *killSwitch { return &killSwitch{ch: make(chan struct{})} }

func (k *killSwitch) fire() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.dead {
		k.dead = true
		close(k.ch)
	}
}

func (k *killSwitch) fired() <-chan struct{} {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.ch
}

func (k *killSwitch) reset() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dead, k.ch = false, make(chan struct{})
}

func (k *killSwitch) RoundTrip(req *http.Request) (*http.Response, error) {
	k.mu.Lock()
	dead := k.dead
	k.mu.Unlock()
	if dead {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	return k.base.RoundTrip(req)
}

// fakeClock: Now moves only when a wait ends. auto: every wait ends after
// a few real milliseconds (so polls follow each other quickly); manual:
// the test releases each wait with fire and reads what was asked.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	auto    bool
	waits   []time.Duration
	pending []pendingWait
}

type pendingWait struct {
	ch chan time.Time
	d  time.Duration
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.waits = append(f.waits, d)
	ch := make(chan time.Time, 1)
	if f.auto {
		time.AfterFunc(3*time.Millisecond, func() {
			f.mu.Lock()
			f.now = f.now.Add(d)
			now := f.now
			f.mu.Unlock()
			ch <- now
		})
		return ch
	}
	f.pending = append(f.pending, pendingWait{ch, d})
	return ch
}

// fire ends the oldest pending wait, moving the clock by its length.
func (f *fakeClock) fire() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pending) == 0 {
		return false
	}
	w := f.pending[0]
	f.pending = f.pending[1:]
	f.now = f.now.Add(w.d)
	w.ch <- f.now
	return true
}

func (f *fakeClock) asked() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.waits...)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// basePolls counts the polls the server answered (GET of the base).
func (b *board) basePolls() int {
	n := 0
	for _, r := range b.srv.Requests() {
		if r.Method == http.MethodGet && strings.HasSuffix(r.Path, "/controller/v1/"+testID) {
			n++
		}
	}
	return n
}

// reboot is one power-on through the boot script's rules.
func (b *board) reboot() string {
	s, err := bootsim.Step(b.env)
	must(b.t, err)
	b.slot = s
	return s
}

// unitFailed is what the health check reports when a unit RequiredBy
// boot-complete.target failed (health.TargetChecker's words).
func unitFailed(ctx context.Context, slot string) error {
	return &health.Failure{Check: "target boot-complete.target", Units: []string{"app.service"},
		Reason: `start job for boot-complete.target finished with result "dependency"; failed units: app.service`}
}
