package update

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/health"
	"github.com/otadev/otad/internal/journal"
)

func TestFullCycleCommitThenHealthRollback(t *testing.T) {
	d := newDevice(t)
	img2 := image(2, 3<<20+12345)
	b2 := d.bundleFile("v2.otab", "2.0", 4, img2, bundle.EncodingZstd)

	e := d.engine()
	d.start(e)
	if st := e.Status(); st.BootSlot != "A" || st.Operation != OpIdle || st.TrialBoot {
		t.Fatalf("fresh status %+v", st)
	}
	ch, stop := e.Subscribe()
	tx, err := e.installNow(b2, map[string]any{"reboot": true})
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	stop()
	if !bytes.Equal(d.slotBytes("B", len(img2)), img2) {
		t.Fatal("slot B does not hold the image")
	}
	if d.envVar("otad_slot") != "B" || d.envVar("upgrade_available") != "1" || d.envVar("otad_prev") != "A" {
		t.Fatalf("env not armed: slot=%s ua=%s", d.envVar("otad_slot"), d.envVar("upgrade_available"))
	}
	if r := d.slotRec("B"); r.State != journal.SlotPending || r.Version != "2.0" {
		t.Fatalf("slot B record %+v", r)
	}
	if d.reboots != 1 {
		t.Fatalf("reboots %d, want 1 (reboot option)", d.reboots)
	}
	var kinds []string
	var progress int
	for ev := range ch {
		if ev.Kind == "progress" {
			progress++
			continue
		}
		kinds = append(kinds, ev.Kind+":"+ev.Message)
	}
	if progress < 10 || progress > 200 {
		t.Errorf("%d progress events: want at least one per few percent, not a flood", progress)
	}
	if last := kinds[len(kinds)-1]; !strings.HasPrefix(last, "completed:installed 2.0 into slot B") &&
		!strings.HasPrefix(kinds[len(kinds)-2], "completed:") {
		t.Errorf("events %q", kinds)
	}
	if fl, _ := e.cfg.Floor.Get(); fl != 0 {
		t.Fatalf("floor raised before commit: %d", fl)
	}

	// Boot B through the bootloader model; a new daemon confirms it.
	d.powerOn()
	if d.booted != "B" || d.envVar("bootcount") != "1" {
		t.Fatalf("booted %s bootcount %s", d.booted, d.envVar("bootcount"))
	}
	e = d.engine()
	d.start(e)
	if d.health.calls != 1 {
		t.Fatalf("health checked %d times", d.health.calls)
	}
	if d.envVar("upgrade_available") != "0" || d.envVar("otad_slot") != "B" {
		t.Fatal("not committed in env")
	}
	if fl, _ := e.cfg.Floor.Get(); fl != 4 {
		t.Fatalf("floor %d after commit, want 4", fl)
	}
	if r := d.slotRec("B"); r.State != journal.SlotGood || r.Activated.IsZero() {
		t.Fatalf("slot B %+v", r)
	}
	if jr := d.journalRec(); jr.State != journal.StateCommitted || jr.Tx != tx {
		t.Fatalf("journal %+v", jr)
	}
	st := e.Status()
	if st.Version != "2.0" || st.TrialBoot || st.Slots[1].State != "active" {
		t.Fatalf("status %+v", st)
	}

	// A bad update: slot A boots but never passes health.
	img3 := image(3, 2<<20)
	b3 := d.bundleFile("v3.otab", "3.0", 5, img3, bundle.EncodingRaw)
	if _, err := e.installNow(b3, nil); err != nil {
		t.Fatal(err)
	}
	d.powerOn()
	if d.booted != "A" {
		t.Fatalf("booted %s", d.booted)
	}
	d.health.err = errors.New("app-check: exit status 3")
	e = d.engine()
	d.events = nil
	d.start(e)
	if d.envVar("otad_slot") != "B" || d.envVar("upgrade_available") != "0" {
		t.Fatal("fallback not written")
	}
	if d.reboots != 2 {
		t.Fatalf("reboots %d, want 2 (rollback reboot)", d.reboots)
	}
	r := d.slotRec("A")
	if r.State != journal.SlotBad || !strings.Contains(r.Reason, "app-check") {
		t.Fatalf("slot A %+v", r)
	}
	if !hasEvent(d.events, "rolledback") {
		t.Fatalf("no rolledback event in %+v", d.events)
	}
	if fl, _ := e.cfg.Floor.Get(); fl != 4 {
		t.Fatalf("floor moved on a failed update: %d", fl)
	}
	d.powerOn()
	if d.booted != "B" {
		t.Fatalf("after rollback booted %s", d.booted)
	}
	d.health.err = nil
	e = d.engine()
	d.start(e)
	if st := e.Status(); st.BootSlot != "B" || st.Operation != OpIdle || !strings.Contains(st.LastError, "app-check") {
		t.Fatalf("after rollback %+v", st)
	}
}

func hasEvent(evs []Event, kind string) bool {
	for _, ev := range evs {
		if ev.Kind == kind {
			return true
		}
	}
	return false
}

// A new slot that never comes up (kernel panic): the bootloader falls back
// after bootlimit tries; the daemon on the old slot records the rollback.
func TestBootloaderRollbackDetected(t *testing.T) {
	d := newDevice(t)
	b := d.bundleFile("v2.otab", "2.0", 1, image(2, 1<<20), bundle.EncodingRaw)
	e := d.engine()
	d.start(e)
	if _, err := e.installNow(b, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		d.powerOn() // B panics before otad runs
		if d.booted != "B" {
			t.Fatalf("boot %d went to %s", i, d.booted)
		}
	}
	d.powerOn()
	if d.booted != "A" {
		t.Fatalf("bootloader did not fall back: %s", d.booted)
	}
	e = d.engine()
	d.events = nil
	d.start(e)
	if r := d.slotRec("B"); r.State != journal.SlotBad || !strings.Contains(r.Reason, "did not boot") {
		t.Fatalf("slot B %+v", r)
	}
	if !hasEvent(d.events, "rolledback") || d.journalRec().State != journal.StateRolledBack {
		t.Fatalf("rollback not reported: %+v %+v", d.events, d.journalRec())
	}
	// otad can install again.
	if _, err := e.installNow(b, nil); err != nil {
		t.Fatalf("install after rollback: %v", err)
	}
}

func TestBelowFloorRefused(t *testing.T) {
	d := newDevice(t)
	e := d.engine()
	if err := e.cfg.Floor.Raise(7); err != nil {
		t.Fatal(err)
	}
	d.start(e)
	b := d.bundleFile("old.otab", "1.9", 6, image(9, 1<<20), bundle.EncodingRaw)
	before := d.slotBytes("B", 1<<20)
	ch, stop := e.Subscribe()
	_, err := e.installNow(b, nil)
	stop()
	if !errors.Is(err, bundle.ErrDowngrade) {
		t.Fatalf("got %v, want ErrDowngrade", err)
	}
	refused := false
	for ev := range ch {
		refused = refused || ev.Kind == "completed" && ev.Result == ResultRefused
	}
	if !refused {
		t.Fatal("no completed event with ResultRefused for a downgrade")
	}
	if _, err := e.Inspect(context.Background(), b); !errors.Is(err, bundle.ErrDowngrade) {
		t.Fatalf("Inspect: %v", err)
	}
	if !bytes.Equal(before, d.slotBytes("B", 1<<20)) || d.env.Store.(interface{ Writes() int }).Writes() != 0 {
		t.Fatal("a refused bundle changed the device")
	}
	if jr := d.journalRec(); jr.State != journal.StateIdle {
		t.Fatalf("journal %+v", jr)
	}
	if st := e.Status(); !strings.Contains(st.LastError, "security version") || st.Operation != OpIdle {
		t.Fatalf("status %+v", st)
	}
}

func TestBusyAndCancel(t *testing.T) {
	d := newDevice(t)
	img := image(2, 3<<20)
	b := d.bundleFile("v2.otab", "2.0", 1, img, bundle.EncodingRaw)
	activeBefore := d.slotBytes("A", 3<<20)
	var gate *gatedSource // owned by the engine's goroutine until sent
	gates := make(chan *gatedSource, 1)
	e := d.engine(func(c *Config) {
		open := c.OpenSource
		c.OpenSource = func(ctx context.Context, src string) (Source, error) {
			s, err := open(ctx, src)
			if err != nil || gate != nil {
				return s, err
			}
			gate = &gatedSource{Source: s, ctx: ctx, left: 1 << 20, reached: make(chan struct{}), release: make(chan struct{})}
			gates <- gate
			return gate, nil
		}
	})
	d.start(e)
	ch, stop := e.Subscribe()
	defer stop()
	tx, err := e.Install(context.Background(), b, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := <-gates
	<-g.reached
	if _, err := e.Install(context.Background(), b, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("second install: %v, want ErrBusy", err)
	}
	if err := e.MarkGood("A"); !errors.Is(err, ErrBusy) {
		t.Fatalf("MarkGood while installing: %v", err)
	}
	if st := e.Status(); st.Operation != OpWriting || st.Progress.Done == 0 {
		t.Fatalf("status mid-write %+v", st)
	}
	t0 := time.Now()
	if err := e.Cancel(); err != nil {
		t.Fatal(err)
	}
	// Cancel returns only once the outcome is durable: a power cut now
	// must not resume the canceled install.
	if jr := d.journalRec(); jr.State != journal.StateFailed {
		t.Fatalf("journal right after Cancel returned: %+v", jr)
	}
	e.Wait()
	if el := time.Since(t0); el > time.Second {
		t.Errorf("cancel took %v", el)
	}
	var done *Event
	for len(ch) > 0 {
		ev := <-ch
		if ev.Kind == "completed" {
			done = &ev
		}
	}
	if done == nil || done.Tx != tx || done.Result == 0 || !strings.Contains(done.Message, "canceled") {
		t.Fatalf("completed event %+v", done)
	}
	if r := d.slotRec("B"); r.State != journal.SlotBad {
		t.Fatalf("target after cancel %+v", r)
	}
	if jr := d.journalRec(); jr.State != journal.StateFailed {
		t.Fatalf("journal %+v", jr)
	}
	if d.envVar("otad_slot") != "A" || d.envVar("upgrade_available") != "0" {
		t.Fatal("env changed by a canceled install")
	}
	if !bytes.Equal(activeBefore, d.slotBytes("A", 3<<20)) {
		t.Fatal("active slot changed")
	}
	// Idle again: a new install is accepted and completes.
	if _, err := e.installNow(b, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.slotBytes("B", len(img)), img) {
		t.Fatal("slot B wrong after the second install")
	}
}

func TestBadInputsChangeNothing(t *testing.T) {
	d := newDevice(t)
	e := d.engine()
	d.start(e)
	good := d.bundleFile("v2.otab", "2.0", 1, image(2, 1<<20), bundle.EncodingRaw)
	cases := map[string]func() string{
		"missing file": func() string { return d.dir + "/nope.otab" },
		"wrong compatible": func() string {
			var buf bytes.Buffer
			bundle.Create(context.Background(), &buf, bundle.CreateOptions{Compatible: "other", Version: "2"},
				[]bundle.Source{{Class: "rootfs", Encoding: "raw", Data: bytes.NewReader(make([]byte, 8192)), Size: 8192}},
				[]*bundle.PrivateKey{d.key})
			return writeTemp(t, d.dir, buf.Bytes())
		},
		"flipped payload byte": func() string {
			b := readFile(t, good)
			b[len(b)-100] ^= 1
			return writeTemp(t, d.dir, b)
		},
	}
	for name, mk := range cases {
		before := d.slotBytes("B", 1<<20)
		_, err := e.installNow(mk(), nil)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if d.envVar("otad_slot") != "A" || d.envVar("upgrade_available") != "0" {
			t.Errorf("%s: env changed", name)
		}
		if name != "flipped payload byte" && !bytes.Equal(before, d.slotBytes("B", 1<<20)) {
			t.Errorf("%s: slot changed before verification", name)
		}
		if name == "flipped payload byte" && d.slotRec("B").State != journal.SlotBad {
			t.Errorf("%s: partially written slot not marked bad", name)
		}
	}
	if _, err := e.installNow(good, map[string]any{"bogus": true}); err == nil {
		t.Error("unknown option accepted")
	}
}

func TestSkipUnchanged(t *testing.T) {
	d := newDevice(t)
	img := image(1, 3<<20) // the factory image already in A
	e := d.engine()
	d.start(e)
	(&journal.Journal{FS: journal.OSFS{}, Dir: e.cfg.Journal.Dir}).SaveSlot(&journal.SlotRecord{Name: "A", State: journal.SlotGood, SHA256: hexSum(img)})
	b := d.bundleFile("same.otab", "1.0", 0, img, bundle.EncodingRaw)
	ch, stop := e.Subscribe()
	defer stop()
	if _, err := e.installNow(b, map[string]any{"skip-unchanged": true}); err != nil {
		t.Fatal(err)
	}
	found := false
	for len(ch) > 0 {
		if ev := <-ch; ev.Kind == "completed" && strings.Contains(ev.Message, "unchanged") {
			found = true
		}
	}
	if !found || d.envVar("upgrade_available") != "0" {
		t.Fatal("skip-unchanged did not skip")
	}
}

// A stalled source still yields progress events at least every interval.
func TestProgressHeartbeatWhileStalled(t *testing.T) {
	d := newDevice(t)
	b := d.bundleFile("v2.otab", "2.0", 1, image(2, 2<<20), bundle.EncodingRaw)
	gates := make(chan *gatedSource, 1)
	e := d.engine(func(c *Config) {
		c.ProgressInterval = 20 * time.Millisecond
		open := c.OpenSource
		c.OpenSource = func(ctx context.Context, src string) (Source, error) {
			s, err := open(ctx, src)
			if err != nil {
				return nil, err
			}
			g := &gatedSource{Source: s, ctx: ctx, left: 1 << 20, reached: make(chan struct{}), release: make(chan struct{})}
			gates <- g
			return g, nil
		}
	})
	d.start(e)
	ch, stop := e.Subscribe()
	defer stop()
	if _, err := e.Install(context.Background(), b, nil); err != nil {
		t.Fatal(err)
	}
	g := <-gates
	<-g.reached
	for len(ch) > 0 { // drop what came before the stall
		<-ch
	}
	time.Sleep(200 * time.Millisecond)
	n := 0
	for len(ch) > 0 {
		if ev := <-ch; ev.Kind == "progress" {
			n++
		}
	}
	close(g.release)
	e.Wait()
	if n < 3 {
		t.Fatalf("%d progress events during a 200ms stall with a 20ms interval", n)
	}
}

// A watchdog that cannot be magic-closed after healthy checks is not a
// reason to roll back.
func TestReleaseFailureStillCommits(t *testing.T) {
	d := newDevice(t)
	b := d.bundleFile("v2.otab", "2.0", 1, image(2, 1<<20), bundle.EncodingRaw)
	e := d.engine()
	d.start(e)
	if _, err := e.installNow(b, nil); err != nil {
		t.Fatal(err)
	}
	d.powerOn()
	d.health.err = fmt.Errorf("%w: ioctl: device busy", health.ErrRelease)
	e = d.engine()
	d.start(e)
	if d.envVar("upgrade_available") != "0" || d.envVar("otad_slot") != "B" || d.slotRec("B").State != journal.SlotGood {
		t.Fatal("not committed after healthy checks with a release error")
	}
}

// After a failed trial the engine writes the fallback and asks for a
// reboot. Until that reboot happens, an install would target the slot the
// device is about to fall back to: it must be refused, with nothing written.
func TestInstallRefusedWhileFallbackPending(t *testing.T) {
	d := newDevice(t)
	img2 := image(2, 1<<20)
	e := d.engine()
	d.start(e)
	if _, err := e.installNow(d.bundleFile("v2.otab", "2.0", 1, img2, bundle.EncodingRaw), nil); err != nil {
		t.Fatal(err)
	}
	d.powerOn() // trial boot of B
	d.health.err = errors.New("app-check: exit status 1")
	e = d.engine()
	d.start(e) // health fails: fallback written, reboot requested (the fake does not reboot)
	if d.booted != "B" || d.envVar("otad_slot") != "A" || d.envVar("upgrade_available") != "0" {
		t.Fatalf("booted %s, env otad_slot=%s upgrade_available=%s", d.booted, d.envVar("otad_slot"), d.envVar("upgrade_available"))
	}
	before := d.slotBytes("A", 1<<20)
	img3 := image(3, 1<<20)
	_, err := e.installNow(d.bundleFile("v3.otab", "3.0", 2, img3, bundle.EncodingRaw), nil)
	if !errors.Is(err, ErrFallbackPending) {
		t.Fatalf("install during a pending fallback: %v, want ErrFallbackPending", err)
	}
	if !bytes.Equal(d.slotBytes("A", 1<<20), before) {
		t.Fatal("the fallback slot was written")
	}
	if d.envVar("otad_slot") != "A" {
		t.Fatalf("env changed: otad_slot=%s", d.envVar("otad_slot"))
	}
	// After the reboot the device is on A and installs work again.
	d.powerOn()
	d.health.err = nil
	e = d.engine()
	d.start(e)
	if d.booted != "A" {
		t.Fatalf("after fallback booted %s", d.booted)
	}
	if _, err := e.installNow(d.bundleFile("v3b.otab", "3.0", 2, img3, bundle.EncodingRaw), nil); err != nil {
		t.Fatalf("install after the fallback reboot: %v", err)
	}
}
