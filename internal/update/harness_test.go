package update

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/otadev/otad/internal/boot/bootsim"
	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/slot"
)

const (
	testCompat = "otad-test-gw"
	slotSize   = 4 << 20
	chunk      = 64 << 10
)

// device is a simulated board: two file slots, a boot env, a data dir.
// Its state survives engines (a "daemon kill" drops the engine and builds a
// new one on the same device).
type device struct {
	t       *testing.T
	dir     string
	slots   map[string]slot.Slot
	env     *cutStore
	cut     *cutter
	booted  string
	key     *bundle.PrivateKey
	keyring *bundle.Keyring
	health  *fakeHealth
	reboots int
	events  []Event
	mu      sync.Mutex
}

func newDevice(t *testing.T) *device { return newDeviceIn(t, t.TempDir()) }

// newShmDevice puts the device on tmpfs when there is one (fsync is free
// there, which matters for the sweep's hundreds of installs) and returns
// a function removing it.
func newShmDevice(t *testing.T) (*device, func()) {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "otad-update-test-")
	if err != nil {
		return newDevice(t), func() {}
	}
	rm := func() { os.RemoveAll(dir) }
	t.Cleanup(rm)
	return newDeviceIn(t, dir), rm
}

func newDeviceIn(t *testing.T, dir string) *device {
	t.Helper()
	d := &device{t: t, dir: dir, slots: map[string]slot.Slot{}, booted: "A", health: &fakeHealth{}}
	for _, n := range []string{"A", "B"} {
		p := filepath.Join(d.dir, "slot-"+n+".img")
		tg, err := slot.NewFileTarget(p, slotSize)
		if err != nil {
			t.Fatal(err)
		}
		tg.Close()
		d.slots[n] = slot.Slot{Name: n, Class: "rootfs", Device: p, Type: slot.TypeFile, Bootname: n}
	}
	// Slot A holds the factory image, committed.
	d.writeSlot("A", image(1, 3<<20))
	env := bootenv.NewEnv()
	env.Set("otad_slot", "A")
	env.Set("otad_prev", "A")
	env.Set("upgrade_available", "0")
	env.Set("bootcount", "0")
	env.Set("bootlimit", "3")
	d.cut = &cutter{}
	d.env = &cutStore{Store: bootenv.NewMemStore(env), c: d.cut}
	k, err := bundle.GenerateKey(bundle.AlgEd25519, "test-release", "release", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d.key = k
	if d.keyring, err = bundle.NewKeyring(bundle.DefaultPolicy, k.Public()); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *device) writeSlot(name string, b []byte) {
	d.t.Helper()
	f, err := os.OpenFile(d.slots[name].Device, os.O_WRONLY, 0)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		d.t.Fatal(err)
	}
}

func (d *device) slotBytes(name string, n int) []byte {
	b, err := os.ReadFile(d.slots[name].Device)
	if err != nil {
		d.t.Fatal(err)
	}
	return b[:n]
}

// image returns n deterministic bytes for version seed.
func image(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := mrand.New(mrand.NewPCG(seed, 99))
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// bundleFile writes a signed bundle of img and returns its path.
func (d *device) bundleFile(name, version string, secver uint64, img []byte, enc string) string {
	d.t.Helper()
	var buf bytes.Buffer
	_, err := bundle.Create(context.Background(), &buf,
		bundle.CreateOptions{Compatible: testCompat, Version: version, SecurityVersion: secver, ChunkSize: chunk,
			TempDir: d.dir, Created: time.Now().Add(-time.Hour)},
		[]bundle.Source{{Class: "rootfs", Encoding: enc, Data: bytes.NewReader(img), Size: int64(len(img))}},
		[]*bundle.PrivateKey{d.key})
	if err != nil {
		d.t.Fatal(err)
	}
	p := filepath.Join(d.dir, name)
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		d.t.Fatal(err)
	}
	return p
}

// engine builds a fresh engine ("daemon start") on the device.
func (d *device) engine(mods ...func(*Config)) *Engine {
	d.t.Helper()
	cfg := Config{
		Compatible: testCompat,
		Slots:      d.slots,
		Env:        d.env,
		BootLimit:  3,
		OpenSource: func(ctx context.Context, src string) (Source, error) {
			return fetch.Open(ctx, src, fetch.Options{})
		},
		Keyring:   d.keyring,
		Confirmer: d.health,
		Rebooter:  rebootFunc(func() { d.mu.Lock(); d.reboots++; d.mu.Unlock() }),
		Cmdline:   func() (string, error) { return "console=ttyS0 otad.slot=" + d.booted + " rw", nil },
		Journal:   &journal.Journal{FS: &cutFS{c: d.cut}, Dir: filepath.Join(d.dir, "data")},
		Floor:     &floor.Store{FS: &cutFS{c: d.cut}, Dir: filepath.Join(d.dir, "data")},
		SyncBytes: 4 * chunk,
	}
	os.MkdirAll(cfg.Journal.Dir, 0o755)
	for _, m := range mods {
		m(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		d.t.Fatal(err)
	}
	return e
}

// start runs the engine's Start and waits for the work it started.
func (d *device) start(e *Engine) {
	d.t.Helper()
	ch, stop := e.Subscribe()
	defer stop()
	if err := e.Start(context.Background()); err != nil {
		d.t.Fatalf("Start: %v", err)
	}
	e.Wait()
	d.drain(ch)
}

func (d *device) drain(ch <-chan Event) {
	for {
		select {
		case ev := <-ch:
			d.events = append(d.events, ev)
		default:
			return
		}
	}
}

// powerOn is one boot through the bootloader model.
func (d *device) powerOn() {
	d.t.Helper()
	s, err := bootsim.Step(d.env.Store)
	if err != nil {
		d.t.Fatalf("boot: %v", err)
	}
	d.booted = s
}

func (d *device) envVar(n string) string {
	e, err := d.env.Store.Load()
	if err != nil {
		d.t.Fatal(err)
	}
	v, _ := e.Get(n)
	return v
}

func (d *device) slotRec(n string) *journal.SlotRecord {
	r, err := (&journal.Journal{FS: journal.OSFS{}, Dir: filepath.Join(d.dir, "data")}).LoadSlot(n)
	if err != nil {
		d.t.Fatal(err)
	}
	return r
}

func (d *device) journalRec() *journal.Record {
	r, err := (&journal.Journal{FS: journal.OSFS{}, Dir: filepath.Join(d.dir, "data")}).Load()
	if err != nil {
		d.t.Fatal(err)
	}
	return r
}

type rebootFunc func()

func (f rebootFunc) Reboot(context.Context) error { f(); return nil }

// fakeHealth answers Confirm with err (nil = healthy) and counts calls.
type fakeHealth struct {
	mu    sync.Mutex
	err   error
	calls int
}

func (h *fakeHealth) Confirm(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	return h.err
}

// cutter models a power cut at the n-th state write (journal file op or env
// save): that op and every later one fail until restore.
type cutter struct {
	mu    sync.Mutex
	ops   int
	cutAt int // 0: never
	dead  bool
	fired bool
}

var errPowerCut = errors.New("test: power cut")

func (c *cutter) op() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return errPowerCut
	}
	c.ops++
	if c.cutAt > 0 && c.ops >= c.cutAt {
		c.dead, c.fired = true, true
		return errPowerCut
	}
	return nil
}

// restore powers the device back on after a cut; a cut that has not fired
// yet stays armed.
func (c *cutter) restore() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		c.dead, c.cutAt = false, 0
	}
}

type cutStore struct {
	bootenv.Store
	c *cutter
}

func (s *cutStore) Save(e *bootenv.Env) error {
	if err := s.c.op(); err != nil {
		return err
	}
	return s.Store.Save(e)
}

// cutFS counts renames and in-place writes (the durable state changes);
// reads keep working after a cut so the dying engine can still look.
type cutFS struct {
	journal.OSFS
	c *cutter
}

func (f *cutFS) OpenFile(name string, flag int, perm fs.FileMode) (journal.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		if err := f.c.op(); err != nil {
			return nil, err
		}
	}
	fl, err := f.OSFS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return noSyncFile{fl}, nil
}

// The engine tests count state writes; real fsyncs only slow them down
// (package journal tests the durable path on the real file system).
type noSyncFile struct{ journal.File }

func (noSyncFile) Sync() error { return nil }

func (f *cutFS) SyncDir(string) error { return nil }

func (f *cutFS) Rename(a, b string) error {
	if err := f.c.op(); err != nil {
		return err
	}
	return f.OSFS.Rename(a, b)
}

// gatedSource blocks reads after n bytes until released (or ctx ends),
// so a test can hold an install mid-write.
type gatedSource struct {
	Source
	ctx     context.Context
	left    int64
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gatedSource) Read(p []byte) (int, error) {
	if g.left <= 0 {
		g.once.Do(func() { close(g.reached) })
		select {
		case <-g.release:
		case <-g.ctx.Done():
			return 0, g.ctx.Err()
		}
	}
	if int64(len(p)) > g.left && g.left > 0 {
		p = p[:g.left]
	}
	n, err := g.Source.Read(p)
	g.left -= int64(n)
	return n, err
}

var _ = io.EOF

func writeTemp(t *testing.T, dir string, b []byte) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "bundle-*.otab")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
