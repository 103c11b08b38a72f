package channel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otadev/otad/internal/boot/bootsim"
	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/delta"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/slot"
	"github.com/otadev/otad/internal/update"
)

const (
	testCompat = "otad-test-gw"
	slotSize   = 2 << 20
	imgSize    = 1 << 20
)

// testKeys: a release key and a channel key, both in the device keyring.
type testKeys struct {
	release, channel *bundle.PrivateKey
	kr, ckr          *bundle.Keyring
}

func newKeys(t testing.TB) testKeys {
	t.Helper()
	rel, err := bundle.GenerateKey(bundle.AlgEd25519, "rel-1", "release", rand.Reader)
	must(t, err)
	ch, err := bundle.GenerateKey(bundle.AlgEd25519, "chan-1", RoleChannel, rand.Reader)
	must(t, err)
	kr, err := bundle.NewKeyring(bundle.DefaultPolicy, rel.Public(), ch.Public())
	must(t, err)
	ckr, err := Keyring(kr)
	must(t, err)
	return testKeys{release: rel, channel: ch, kr: kr, ckr: ckr}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// testImage returns n deterministic bytes for seed.
func testImage(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := mrand.New(mrand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func hexSum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// writeBundle writes a signed full bundle of img.
func writeBundle(t *testing.T, path, version string, img []byte, k *bundle.PrivateKey) {
	t.Helper()
	var buf bytes.Buffer
	_, err := bundle.Create(context.Background(), &buf, bundle.CreateOptions{Compatible: testCompat, Version: version,
		SecurityVersion: 1, ChunkSize: 64 << 10, TempDir: filepath.Dir(path), Created: time.Now().Add(-time.Hour)},
		[]bundle.Source{{Class: "rootfs", Encoding: bundle.EncodingRaw, Data: bytes.NewReader(img), Size: int64(len(img))}},
		[]*bundle.PrivateKey{k})
	must(t, err)
	must(t, os.WriteFile(path, buf.Bytes(), 0o644))
}

// writeDeltaBundle writes a signed delta bundle from oldImg to newImg.
func writeDeltaBundle(t *testing.T, path, version string, oldImg, newImg []byte, k *bundle.PrivateKey) {
	t.Helper()
	var patch bytes.Buffer
	_, err := delta.Generate(context.Background(), bytes.NewReader(oldImg), int64(len(oldImg)),
		bytes.NewReader(newImg), int64(len(newImg)), &patch, delta.GenOptions{FullSize: -1})
	must(t, err)
	var buf bytes.Buffer
	_, err = bundle.Create(context.Background(), &buf, bundle.CreateOptions{Compatible: testCompat, Version: version,
		SecurityVersion: 1, ChunkSize: 64 << 10, TempDir: filepath.Dir(path), Created: time.Now().Add(-time.Hour)},
		[]bundle.Source{{Class: "rootfs", Encoding: bundle.EncodingDelta, Data: bytes.NewReader(patch.Bytes()),
			Size: int64(patch.Len()), TargetSize: int64(len(newImg)), TargetSHA256: hexSum(newImg),
			Delta: &bundle.DeltaSource{SourceSHA256: hexSum(oldImg), SourceSize: int64(len(oldImg))}}},
		[]*bundle.PrivateKey{k})
	must(t, err)
	must(t, os.WriteFile(path, buf.Bytes(), 0o644))
}

// countingClient counts the 2xx answers to the requests it sends.
type countingClient struct{ ok atomic.Int64 }

func (c *countingClient) Do(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultClient.Do(r)
	if err == nil && resp.StatusCode < 300 {
		c.ok.Add(1)
	}
	return resp, err
}

// board is a simulated device: two file slots, a boot env the bootloader
// model boots from, a data dir that survives "power cuts" (new engines).
type board struct {
	t      *testing.T
	dir    string
	slots  map[string]slot.Slot
	env    *bootenv.MemStore
	booted string
	kr     *bundle.Keyring
	health *okHealth
	fs     journal.FS
	// ignoreChecks: the engine opens sources without the channel's file
	// check (as after a restart, when source-options are gone).
	ignoreChecks bool
	mu           sync.Mutex
	opened       []string
}

type okHealth struct{ err error }

func (h *okHealth) Confirm(context.Context) error { return h.err }

type noReboot struct{}

func (noReboot) Reboot(context.Context) error { return nil }

func newBoard(t *testing.T, kr *bundle.Keyring, factory []byte) *board {
	t.Helper()
	b := &board{t: t, dir: t.TempDir(), slots: map[string]slot.Slot{}, booted: "A", kr: kr, health: &okHealth{}, fs: journal.OSFS{}}
	for _, n := range []string{"A", "B"} {
		p := filepath.Join(b.dir, "slot-"+n+".img")
		tg, err := slot.NewFileTarget(p, slotSize)
		must(t, err)
		tg.Close()
		b.slots[n] = slot.Slot{Name: n, Class: "rootfs", Device: p, Type: slot.TypeFile, Bootname: n}
	}
	f, err := os.OpenFile(b.slots["A"].Device, os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt(factory, 0)
	must(t, err)
	f.Close()
	env := bootenv.NewEnv()
	for k, v := range map[string]string{"otad_slot": "A", "otad_prev": "A", "upgrade_available": "0", "bootcount": "0", "bootlimit": "3"} {
		env.Set(k, v)
	}
	b.env = bootenv.NewMemStore(env)
	must(t, os.MkdirAll(b.data(), 0o755))
	return b
}

func (b *board) data() string { return filepath.Join(b.dir, "data") }

// engine starts a fresh engine (a daemon start) and waits for its start work
// (confirming a trial boot, for example).
func (b *board) engine() *update.Engine {
	b.t.Helper()
	e, err := update.New(update.Config{
		Compatible: testCompat, Slots: b.slots, Env: b.env, BootLimit: 3,
		OpenSource: func(ctx context.Context, src string) (update.Source, error) {
			b.mu.Lock()
			b.opened = append(b.opened, src)
			b.mu.Unlock()
			s, err := fetch.Open(ctx, src, fetch.Options{})
			if err != nil {
				return nil, err
			}
			// What the daemon's OpenSource does with the channel's options.
			if so, ok := update.SourceOptions(ctx).(SourceOptions); ok && !b.ignoreChecks {
				return so.CheckSource(src, s)
			}
			return s, nil
		},
		Keyring: b.kr, Confirmer: b.health, Rebooter: noReboot{},
		Cmdline: func() (string, error) { return "otad.slot=" + b.booted, nil },
		Journal: &journal.Journal{FS: journal.OSFS{}, Dir: b.data()},
		Floor:   &floor.Store{FS: journal.OSFS{}, Dir: b.data()},
	})
	must(b.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	b.t.Cleanup(func() { cancel(); e.Wait() })
	must(b.t, e.Start(ctx))
	e.Wait()
	return e
}

// reboot is one boot through the bootloader model.
func (b *board) reboot() {
	b.t.Helper()
	s, err := bootsim.Step(b.env)
	must(b.t, err)
	b.booted = s
}

func (b *board) sources() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.opened...)
}

// fixedClock is a settable clock.
type fixedClock struct {
	mu sync.Mutex
	t  time.Time
	// advanceOnInstall moves the clock on while stepInstall waits for an
	// install (the time the install phase takes).
	advanceOnInstall time.Duration
}

func (c *fixedClock) Now() time.Time                       { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fixedClock) set(t time.Time)                      { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *fixedClock) After(time.Duration) <-chan time.Time { return make(chan time.Time) }

// cutFS fails every mutating operation from the cutAt-th on (a power cut:
// nothing after it reaches the disk); 0 never cuts.
type cutFS struct {
	journal.FS
	mu    sync.Mutex
	ops   int
	cutAt int
}

var errCut = fmt.Errorf("test: power cut")

func (c *cutFS) op() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ops++
	if c.cutAt > 0 && c.ops >= c.cutAt {
		return errCut
	}
	return nil
}

func (c *cutFS) OpenFile(name string, flag int, perm fs.FileMode) (journal.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC) != 0 {
		if err := c.op(); err != nil {
			return nil, err
		}
	}
	return c.FS.OpenFile(name, flag, perm)
}

func (c *cutFS) Rename(o, n string) error {
	if err := c.op(); err != nil {
		return err
	}
	return c.FS.Rename(o, n)
}

func (c *cutFS) Remove(n string) error {
	if err := c.op(); err != nil {
		return err
	}
	return c.FS.Remove(n)
}

func (c *cutFS) SyncDir(d string) error {
	if err := c.op(); err != nil {
		return err
	}
	return c.FS.SyncDir(d)
}
