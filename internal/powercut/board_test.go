package powercut

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/otadev/otad/internal/boot/bootsim"
	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/mtd"
	"github.com/otadev/otad/internal/slot"
	"github.com/otadev/otad/internal/update"
)

const (
	compat    = "otad-powercut"
	slotSize  = 256 << 10
	chunkSize = 16 << 10
	bootLimit = 3
	envSize   = 4 << 10
	dataDir   = "/data"
)

var epoch = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// kind is what the kernel model does with an image.
type kind int

const (
	good   kind = iota
	panics      // kernel panic: never reaches userspace
	sick        // boots, but the health check fails
)

type image struct {
	name   string
	data   []byte
	kind   kind
	secver uint64
	bundle []byte
	// delta images: the image the patch applies to, and where the patch
	// (the bundle's only payload) starts in the bundle and how long it is.
	base              *image
	patchAt, patchLen int64
}

// fixtures are the signed bundles every board shares (built once).
type fixtures struct {
	keyring                          *bundle.Keyring
	factory, v2, v3, bad, ill, final *image
	delta                            *image // a delta bundle from factory
	enc                              *image // an encrypted bundle (crypt_test.go)
	all                              []*image
	byName                           map[string]*image
}

var (
	fxOnce sync.Once
	fx     *fixtures
	fxErr  error
)

func loadFixtures(t testing.TB) *fixtures {
	t.Helper()
	fxOnce.Do(func() { fx, fxErr = buildFixtures() })
	if fxErr != nil {
		t.Fatal(fxErr)
	}
	return fx
}

func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := mrand.New(mrand.NewPCG(seed, 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func buildFixtures() (*fixtures, error) {
	k, err := bundle.GenerateKey(bundle.AlgEd25519, "powercut", "release", rand.Reader)
	if err != nil {
		return nil, err
	}
	f := &fixtures{byName: map[string]*image{}}
	if f.keyring, err = bundle.NewKeyring(bundle.DefaultPolicy, k.Public()); err != nil {
		return nil, err
	}
	mk := func(name string, seed uint64, size int, kd kind, secver uint64, enc string) (*image, error) {
		img := &image{name: name, data: pattern(seed, size), kind: kd, secver: secver}
		var buf bytes.Buffer
		_, err := bundle.Create(context.Background(), &buf, bundle.CreateOptions{
			Compatible: compat, Version: name, SecurityVersion: secver, ChunkSize: chunkSize,
			Created: epoch.Add(-time.Hour)},
			[]bundle.Source{{Class: update.RootfsClass, Encoding: enc, Data: bytes.NewReader(img.data), Size: int64(size)}},
			[]*bundle.PrivateKey{k})
		if err != nil {
			return nil, fmt.Errorf("bundle %s: %w", name, err)
		}
		img.bundle = buf.Bytes()
		f.all = append(f.all, img)
		f.byName[name] = img
		return img, nil
	}
	for _, s := range []struct {
		dst    **image
		name   string
		size   int
		kd     kind
		secver uint64
		enc    string
	}{
		{&f.factory, "1.0-factory", 200<<10 + 100, good, 1, bundle.EncodingRaw},
		{&f.v2, "2.0", 210<<10 + 333, good, 2, bundle.EncodingRaw},
		{&f.v3, "3.0", 190<<10 + 5, good, 3, bundle.EncodingZstd},
		{&f.bad, "2.1-panics", 205 << 10, panics, 2, bundle.EncodingRaw},
		{&f.ill, "2.2-unhealthy", 199<<10 + 17, sick, 2, bundle.EncodingRaw},
		{&f.final, "9.0-final", 180 << 10, good, 3, bundle.EncodingRaw},
	} {
		img, err := mk(s.name, uint64(len(f.all)+1), s.size, s.kd, s.secver, s.enc)
		if err != nil {
			return nil, err
		}
		*s.dst = img
	}
	if f.delta, err = buildDelta(f, k); err != nil {
		return nil, err
	}
	if f.enc, err = buildEncrypted(f, k); err != nil {
		return nil, err
	}
	return f, nil
}

// slotDev is one slot's storage.
type slotDev interface {
	target() slot.Target
	durable() []byte
	factory(p []byte)
}

// flashSlot is a raw flash partition; bad blocks are skipped, as the
// slot writer and the bootloader's reader skip them.
type flashSlot struct {
	f   *Flash
	bad map[int64]bool // erase block index
}

func (s flashSlot) target() slot.Target { return slot.NewMTDTarget(s.f) }

// durable is the logical content: good blocks only, in order.
func (s flashSlot) durable() []byte {
	raw := s.f.Durable()
	if len(s.bad) == 0 {
		return raw
	}
	es := s.f.Info().EraseSize
	out := make([]byte, 0, len(raw))
	for off := int64(0); off < int64(len(raw)); off += es {
		if !s.bad[off/es] {
			out = append(out, raw[off:off+es]...)
		}
	}
	return append(out, make([]byte, len(raw)-len(out))...) // reads past the good blocks: never an image
}

func (s flashSlot) factory(p []byte) {
	es := s.f.Info().EraseSize
	for off, blk := int64(0), int64(0); off < int64(len(p)); blk++ {
		if s.bad[blk] {
			continue
		}
		n := min(es, int64(len(p))-off)
		if err := s.f.Sim().Poke(blk*es, p[off:off+n]); err != nil {
			panic(err)
		}
		off += n
	}
}

type blockSlot struct{ b *BlockDev }

func (s blockSlot) target() slot.Target { return s.b.Target() }
func (s blockSlot) durable() []byte     { return s.b.Durable() }
func (s blockSlot) factory(p []byte)    { s.b.Poke(0, p) }

// medium is one way to build a board's slots and env.
type medium struct {
	name  string
	build func(d *Domain) (map[string]slotDev, bootenv.Store)
}

var media = []medium{
	{"nand", func(d *Domain) (map[string]slotDev, bootenv.Store) { return flashBoard(d, mtd.NAND, 512, nil) }},
	{"nor", func(d *Domain) (map[string]slotDev, bootenv.Store) { return flashBoard(d, mtd.NOR, 1, nil) }},
	// Factory bad blocks inside both slots, where images live.
	{"nand-bb", func(d *Domain) (map[string]slotDev, bootenv.Store) {
		return flashBoard(d, mtd.NAND, 512, map[string][]int{"A": {3, 20}, "B": {0, 31}})
	}},
	{"file", func(d *Domain) (map[string]slotDev, bootenv.Store) {
		env := NewBlockDev(d, 2*envSize)
		return map[string]slotDev{"A": blockSlot{NewBlockDev(d, slotSize)}, "B": blockSlot{NewBlockDev(d, slotSize)}},
			bootenv.NewMediumStore([]bootenv.Medium{env, env}, []int64{0, envSize}, envSize, bootenv.FlagsIncrement)
	}},
}

func flashBoard(d *Domain, k mtd.Kind, ws int64, bad map[string][]int) (map[string]slotDev, bootenv.Store) {
	info := mtd.Info{Kind: k, Size: slotSize, EraseSize: 4 << 10, WriteSize: ws}
	scheme := bootenv.FlagsIncrement
	if k == mtd.NOR {
		scheme = bootenv.FlagsBoolean
	}
	env := NewFlash(d, mtd.Info{Kind: k, Size: 4 * envSize, EraseSize: envSize, WriteSize: ws})
	slots := map[string]slotDev{}
	for _, n := range []string{"A", "B"} {
		s := flashSlot{f: NewFlash(d, info), bad: map[int64]bool{}}
		for _, blk := range bad[n] {
			s.f.Sim().MarkBad(blk)
			s.bad[int64(blk)] = true
		}
		slots[n] = s
	}
	return slots,
		bootenv.NewMediumStore([]bootenv.Medium{env, env}, []int64{0, envSize}, envSize, scheme)
}

// clock is the engine's deterministic time: 1 ms per reading.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

// board is one simulated gateway: slots, env, data file system on one
// power domain, plus the bootloader and kernel models.
type board struct {
	fx     *fixtures
	dom    *Domain
	fs     *CrashFS
	slots  map[string]slotDev
	env    bootenv.Store // the raw store; the engine gets a probe around it
	clock  *clock
	booted string

	// mods change the engine's configuration (fault injection in the
	// tests that prove the campaign's checks can fail).
	mods []func(*update.Config)
	// again are further cuts: after each power-on the next one is armed
	// that many operations later (cuts during recovery).
	again []int

	// afterIRQ, if set, sees the board right after an install attempt
	// that a goal's interrupt stopped (no power cut): tests of the
	// cycles themselves check where the interrupt landed.
	afterIRQ func(g goal)

	mu         sync.Mutex
	installing *image // what the operator asked to install (nil: nothing)
	inBoot     bool   // the bootloader is running (its env writes are counts, not arms)
	rebootReq  bool
	viol       error
	all        []string // every violation, in order
	hook       func(pos int64)
	// whook sees the end offset of every write into the slot being
	// installed; only a slot opened while it is set reports to it.
	whook func(pos int64)
	// power-ons so far, and the slot contents last read at (powerOns, op
	// count): see view.
	powerOns  int
	viewAt    [2]int
	viewCache map[string][]byte
	// recheckView reads the slot again on every cache hit of view and
	// reports a difference (the recovery test proves the cache that way).
	recheckView bool
}

func newBoard(t testing.TB, fx *fixtures, m medium, mode TearMode, seed uint64) *board {
	t.Helper()
	b, err := makeBoard(fx, m, mode, seed)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// makeBoard builds a board in its factory state: both slots hold the
// factory image, A is committed, the data directory exists; the op count
// starts at 0.
func makeBoard(fx *fixtures, m medium, mode TearMode, seed uint64) (*board, error) {
	d := NewDomain(mode, seed)
	b := &board{fx: fx, dom: d, fs: NewCrashFS(d), clock: &clock{t: epoch}}
	b.slots, b.env = m.build(d)
	for _, s := range b.slots {
		s.factory(fx.factory.data)
	}
	e := bootenv.NewEnv()
	for k, v := range map[string]string{"otad_slot": "A", "otad_prev": "A", "upgrade_available": "0",
		"bootcount": "0", "bootlimit": fmt.Sprint(bootLimit)} {
		e.Set(k, v)
	}
	for range 2 { // both copies valid
		if err := b.env.Save(e); err != nil {
			return nil, err
		}
	}
	if err := b.fs.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	d.CleanReboot()
	d.ResetOps()
	d.add(powerWatch{b})
	return b, nil
}

// powerWatch counts the board's power-ons (a cut's or a clean reboot's),
// where a block device's durable content may change without a write.
type powerWatch struct{ b *board }

func (w powerWatch) powerOn(bool) {
	w.b.mu.Lock()
	w.b.powerOns++
	w.b.mu.Unlock()
}

// view is a slot's durable content for the campaign's own checks, which
// run while no install writes (between daemon runs, in the bootloader).
// Copying whole slots for every check was most of a run's time, so view
// caches them: durable content changes only through a counted write
// operation (counted before the write, hence "while no install writes")
// or at a power-on. The slice is shared: never modify it.
func (b *board) view(name string) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	at := [2]int{b.powerOns, b.dom.Ops()}
	if at != b.viewAt || b.viewCache == nil {
		b.viewAt, b.viewCache = at, map[string][]byte{}
	}
	d, ok := b.viewCache[name]
	if !ok {
		d = b.slots[name].durable()
		b.viewCache[name] = d
	} else if b.recheckView && !bytes.Equal(d, b.slots[name].durable()) {
		err := fmt.Errorf("stale cached view of slot %s at power-on %d, op %d", name, at[0], at[1])
		if b.viol == nil {
			b.viol = err
		}
		b.all = append(b.all, err.Error())
	}
	return d
}

// violate records the first invariant violation of a run.
func (b *board) violate(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := fmt.Errorf(format, args...)
	if b.viol == nil {
		b.viol = err
	}
	b.all = append(b.all, err.Error())
}

func (b *board) violation() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.viol
}

// identify is the kernel model's view of a slot: the known image whose
// every byte the slot holds, or nil.
func (b *board) identify(name string) *image { return b.fx.match(b.slots[name].durable()) }

// settled is identify for the campaign's own checks (see view).
func (b *board) settled(name string) *image { return b.fx.match(b.view(name)) }

func (f *fixtures) match(d []byte) *image {
	for _, img := range f.all {
		if bytes.Equal(d[:len(img.data)], img.data) {
			return img
		}
	}
	return nil
}

func (b *board) envState() (*bootenv.Env, error) { return b.env.Load() }

// probe checks every env write: an armed slot must already hold a
// complete image, durably.
type probe struct {
	bootenv.Store
	b *board
}

func (p *probe) Save(e *bootenv.Env) error {
	if err := p.Store.Save(e); err != nil {
		return err
	}
	if up, _ := e.Get("upgrade_available"); up == "1" {
		s, _ := e.Get("otad_slot")
		p.b.mu.Lock()
		want, inBoot := p.b.installing, p.b.inBoot
		p.b.mu.Unlock()
		id := p.b.identify
		if inBoot {
			id = p.b.settled
		}
		if _, ok := p.b.slots[s]; !ok {
			p.b.violate("env armed an unknown slot %q", s)
		} else if img := id(s); img == nil {
			p.b.violate("env armed slot %s, which holds no complete verified image", s)
		} else if !inBoot && want != nil && img != want {
			p.b.violate("env armed slot %s, which durably holds %s, not the image being installed (%s)", s, img.name, want.name)
		}
	}
	return nil
}

type memSource struct {
	*bytes.Reader
	hook func(pos int64)
}

func (s *memSource) Read(p []byte) (int, error) {
	n, err := s.Reader.Read(p)
	if s.hook != nil && n > 0 {
		s.hook(s.Reader.Size() - int64(s.Reader.Len()))
	}
	return n, err
}
func (s *memSource) Close() error { return nil }

type rebooter struct{ b *board }

func (r rebooter) Reboot(context.Context) error {
	if err := r.b.dom.alive(); err != nil {
		return err
	}
	r.b.mu.Lock()
	r.b.rebootReq = true
	r.b.mu.Unlock()
	return nil
}

// health is the kernel model's health check: a "sick" image fails it.
type health struct{ b *board }

func (h health) Confirm(context.Context) error {
	if img := h.b.identify(h.b.booted); img == nil || img.kind != good {
		return errors.New("service otad-app failed")
	}
	return nil
}

var slotCfg = map[string]slot.Slot{
	"A": {Name: "A", Class: "rootfs", Device: "sim:A", Type: "mtd", Bootname: "A"},
	"B": {Name: "B", Class: "rootfs", Device: "sim:B", Type: "mtd", Bootname: "B"},
}

// engine is a daemon start: a new engine on the same board.
func (b *board) engine() *update.Engine {
	cfg := update.Config{
		Compatible: compat,
		Slots:      slotCfg,
		Env:        &probe{Store: b.env, b: b},
		BootLimit:  bootLimit,
		OpenSlot: func(target, active slot.Slot) (slot.Target, error) {
			if target.Name == active.Name {
				b.violate("engine opened the active slot %s for writing", active.Name)
				return nil, slot.ErrActiveSlot
			}
			t := b.slots[target.Name].target()
			b.mu.Lock()
			h := b.whook
			b.mu.Unlock()
			if h != nil {
				t = watchTarget{Target: t, hook: h}
			}
			return t, nil
		},
		// The engine reads the active slot through this (a delta's
		// source): a kernel read-only open cannot write.
		OpenReadOnly: func(s slot.Slot) (slot.Target, error) {
			if _, ok := b.slots[s.Name]; !ok {
				return nil, fmt.Errorf("no slot %q", s.Name)
			}
			return readOnly{Target: b.slots[s.Name].target(), b: b, name: s.Name}, nil
		},
		OpenSource: func(ctx context.Context, src string) (update.Source, error) {
			img := b.fx.byName[src]
			if img == nil {
				return nil, fmt.Errorf("no bundle %q", src)
			}
			b.mu.Lock()
			h := b.hook
			b.mu.Unlock()
			return &memSource{Reader: bytes.NewReader(img.bundle), hook: h}, nil
		},
		Keyring:    b.fx.keyring,
		Confirmer:  health{b},
		Rebooter:   rebooter{b},
		AutoReboot: true,
		Clock:      b.clock,
		Cmdline:    func() (string, error) { return "console=ttyS0 otad.slot=" + b.booted + " ro", nil },
		Journal:    &journal.Journal{FS: b.fs, Dir: dataDir},
		Floor:      b.floorStore(),
		SyncBytes:  2 * chunkSize,
	}
	for _, m := range b.mods {
		m(&cfg)
	}
	e, err := update.New(cfg)
	if err != nil {
		panic(err) // configuration bug in the test
	}
	return e
}

// floorStore is the floor as the daemon wires it: both copies on the
// board's CrashFS, the journal's committed security version as the lower
// bound (internal/daemon checkedFloor).
func (b *board) floorStore() *floor.Store {
	j := &journal.Journal{FS: b.fs, Dir: dataDir}
	return &floor.Store{FS: b.fs, Dir: dataDir, Lower: floor.JournalBound(j, "A", "B")}
}

func (b *board) floor() (uint64, error) {
	return b.floorStore().Get()
}

// bootOnce is one power-on through the bootloader model. It returns the
// slot the kernel runs, or "" if the boot did not reach userspace (cut
// during U-Boot's env write, or a panicking kernel).
func (b *board) bootOnce() (string, *image, error) {
	b.mu.Lock()
	b.inBoot = true
	b.mu.Unlock()
	s, err := bootsim.Step(&probe{Store: b.env, b: b})
	b.mu.Lock()
	b.inBoot = false
	b.mu.Unlock()
	if err != nil {
		if b.dom.IsCut() {
			return "", nil, nil
		}
		return "", nil, fmt.Errorf("bootloader: %w", err)
	}
	img := b.settled(s)
	if img == nil {
		return "", nil, fmt.Errorf("bootloader booted slot %s, which holds no complete verified image", s)
	}
	return s, img, nil
}

func sum(p []byte) [32]byte { return sha256.Sum256(p) }

// readOnly is a slot opened read-only: opening a writer on it is a
// violation (the kernel would refuse the write).
type readOnly struct {
	slot.Target
	b    *board
	name string
}

func (r readOnly) OpenWriter(context.Context, int64) (slot.Writer, error) {
	r.b.violate("engine wrote slot %s through a read-only open", r.name)
	return nil, fmt.Errorf("slot %s opened read-only", r.name)
}

// watchTarget reports the progress of the slot write to a goal's
// interrupt (the daemon stop that lands mid-write whatever the encoding
// reads ahead of it).
type watchTarget struct {
	slot.Target
	hook func(pos int64)
}

func (t watchTarget) OpenWriter(ctx context.Context, off int64) (slot.Writer, error) {
	w, err := t.Target.OpenWriter(ctx, off)
	if err != nil {
		return nil, err
	}
	return &watchWriter{Writer: w, off: off, hook: t.hook}, nil
}

type watchWriter struct {
	slot.Writer
	off  int64
	hook func(pos int64)
}

func (w *watchWriter) Write(p []byte) (int, error) {
	n, err := w.Writer.Write(p)
	w.off += int64(n)
	if n > 0 {
		w.hook(w.off)
	}
	return n, err
}
