package update

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/journal"
)

// life drives a device from "factory image in A" towards the goal of an
// update cycle, one power-on at a time: each boot runs a fresh engine
// (Start), and installs the bundle when nothing is in flight and the goal is
// not reached. cutAt > 0 kills the device at that state write (journal file
// op or env save); the next iteration powers it on again. It returns the
// number of state writes of the run.
func life(t *testing.T, cutAt int, healthy bool, fx *fixture) (ops int, fired bool) {
	return lifeMode(t, cutAt, healthy, false, fx)
}

// lifeMode with killOnly models the cut as a daemon kill: the first restart
// after it happens without a reboot (same boot, env unchanged by U-Boot).
func lifeMode(t *testing.T, cutAt int, healthy, killOnly bool, fx *fixture) (ops int, fired bool) {
	t.Helper()
	d, rm := newShmDevice(t)
	defer rm()
	img1 := image(1, 3<<20)
	img2 := fx.img
	if fx.bundle == nil {
		fx.key, fx.keyring = d.key, d.keyring
		fx.bundle = readFile(t, d.bundleFile("v2.otab", "2.0", 3, img2, bundle.EncodingZstd))
	}
	d.key, d.keyring = fx.key, fx.keyring
	b2 := writeTemp(t, d.dir, fx.bundle)
	if !healthy {
		d.health.err = errors.New("check-app: exit status 1")
	}
	d.cut.cutAt = cutAt
	var lastFloor uint64
	for boot := 0; boot < 16; boot++ {
		if boot > 0 {
			killed := d.cut.dead
			d.cut.restore()
			if !killed || !killOnly {
				d.powerOn()
			}
		}
		// The slot that runs is always a complete image.
		want := map[string][]byte{"A": img1, "B": img2}[d.booted]
		if !bytes.Equal(d.slotBytes(d.booted, len(want)), want) {
			t.Fatalf("cut %d boot %d: booted slot %s does not hold a complete image", cutAt, boot, d.booted)
		}
		e := d.engine()
		if err := e.Start(context.Background()); err != nil && !d.cut.dead {
			t.Fatalf("cut %d boot %d: Start: %v", cutAt, boot, err)
		}
		e.Wait()
		fl, err := e.cfg.Floor.Get()
		if err != nil || fl < lastFloor {
			t.Fatalf("cut %d: floor went from %d to %d (%v)", cutAt, lastFloor, fl, err)
		}
		lastFloor = fl
		if d.cut.dead {
			continue
		}
		jr := d.journalRec()
		if healthy && d.booted == "B" && d.envVar("upgrade_available") == "0" && d.envVar("otad_slot") == "B" {
			if d.slotRec("B").State != journal.SlotGood || fl != 3 {
				t.Fatalf("cut %d: committed B but record %+v floor %d", cutAt, d.slotRec("B"), fl)
			}
			return d.cut.ops, d.cut.fired
		}
		if !healthy && jr.State == journal.StateRolledBack && d.booted == "A" && d.envVar("upgrade_available") == "0" {
			if d.slotRec("B").State != journal.SlotBad || fl != 0 || d.envVar("otad_slot") != "A" {
				t.Fatalf("cut %d: rolled back but B %+v floor %d", cutAt, d.slotRec("B"), fl)
			}
			// otad can install again (not part of the swept cycle).
			ops, fired := d.cut.ops, d.cut.fired
			d.cut.cutAt = 0
			d.health.err = nil
			if _, err := e.installNow(b2, nil); err != nil {
				t.Fatalf("cut %d: install after rollback: %v", cutAt, err)
			}
			return ops, fired
		}

		if st := e.Status(); st.Operation == OpIdle && !st.TrialBoot {
			_, _ = e.installNow(b2, nil) // a cut makes it fail; the next boot goes on
		}
	}
	t.Fatalf("cut %d: no convergence; booted %s env slot=%s ua=%s journal %+v", cutAt, d.booted,
		d.envVar("otad_slot"), d.envVar("upgrade_available"), d.journalRec())
	return 0, false
}

// TestPowerCutAtEveryStateWrite kills the device at every journal, slot
// record, floor and env write of a good cycle and of a cycle whose health
// check fails, and checks that it always boots a complete image and ends
// committed (or rolled back) with otad able to install again. Each cut
// point runs twice: as a power cut (the next start is a new boot) and as a
// daemon kill (the next start is in the same boot).
func TestPowerCutAtEveryStateWrite(t *testing.T) {
	fx := &fixture{img: image(2, 1<<20+4321)}
	for _, healthy := range []bool{true, false} {
		n, _ := life(t, 0, healthy, fx)
		if n < 10 {
			t.Fatalf("only %d state writes in a cycle; the cutter is not counting", n)
		}
		for cut := 1; cut <= n; cut++ {
			if _, fired := life(t, cut, healthy, fx); !fired {
				t.Fatalf("cut %d of %d never fired", cut, n)
			}
		}
		t.Logf("healthy=%v: %d cut points", healthy, n)
		for cut := 1; cut <= n; cut++ {
			if _, fired := lifeMode(t, cut, healthy, true, fx); !fired {
				t.Fatalf("kill %d of %d never fired", cut, n)
			}
		}
	}
}

// fixture is the bundle every life installs, built once.
type fixture struct {
	img     []byte
	bundle  []byte
	key     *bundle.PrivateKey
	keyring *bundle.Keyring
}

// killingSource cancels the daemon's context after n bytes: a daemon kill
// mid-download.
type killingSource struct {
	Source
	n    int64
	kill func()
	read *atomic.Int64
}

func (k *killingSource) Read(p []byte) (int, error) {
	n, err := k.Source.Read(p)
	if k.read.Add(int64(n)) >= k.n && k.kill != nil {
		k.kill()
		k.kill = nil
	}
	return n, err
}

func TestResumeAfterDaemonKill(t *testing.T) {
	d := newDevice(t)
	img := image(5, 3<<20)
	b := d.bundleFile("v5.otab", "5.0", 1, img, bundle.EncodingRaw)
	var read atomic.Int64
	engineWithKill := func(killAt int64, cancel func()) *Engine {
		return d.engine(func(c *Config) {
			open := c.OpenSource
			c.OpenSource = func(ctx context.Context, src string) (Source, error) {
				s, err := open(ctx, src)
				if err != nil {
					return nil, err
				}
				return &killingSource{Source: s, n: killAt, kill: cancel, read: &read}, nil
			}
		})
	}
	// Kill the first daemon after ~2 MiB of the bundle.
	ctx, cancel := context.WithCancel(context.Background())
	e := engineWithKill(2<<20, cancel)
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Install(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	e.Wait()
	jr := d.journalRec()
	if jr.State != journal.StateWriting || jr.Resume.Chunks == 0 || jr.Resume.Bytes != int64(jr.Resume.Chunks)*chunk {
		t.Fatalf("journal after kill %+v", jr)
	}
	// A new daemon resumes at the recorded chunk and reads only the rest.
	read.Store(0)
	e = engineWithKill(1<<40, nil)
	d.start(e)
	jr2 := d.journalRec()
	if jr2.State != journal.StatePendingReboot || jr2.Resumes != 1 || jr2.Tx != jr.Tx {
		t.Fatalf("journal after resume %+v", jr2)
	}
	if got, whole := read.Load(), int64(len(readFile(t, b))); got > whole-jr.Resume.Bytes+64<<10 {
		t.Fatalf("resume read %d bundle bytes of %d; it restarted instead of seeking to %d", got, whole, jr.Resume.Bytes)
	}
	if !bytes.Equal(d.slotBytes("B", len(img)), img) {
		t.Fatal("resumed slot B differs from the image")
	}
}

func TestCrashLoopBreaker(t *testing.T) {
	d := newDevice(t)
	b := d.bundleFile("v5.otab", "5.0", 1, image(5, 2<<20), bundle.EncodingRaw)
	killed := func() *Engine {
		ctx, cancel := context.WithCancel(context.Background())
		var read atomic.Int64
		e := d.engine(func(c *Config) {
			open := c.OpenSource
			c.OpenSource = func(octx context.Context, src string) (Source, error) {
				s, err := open(octx, src)
				if err != nil {
					return nil, err
				}
				// Killed after 256 KiB: every run makes progress (reads stop
				// at the kill), and the 2 MiB image outlasts four runs.
				return &killingSource{Source: s, n: 256 << 10, kill: cancel, read: &read}, nil
			}
		})
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := killed()
	if _, err := e.Install(context.Background(), b, nil); err != nil {
		t.Fatal(err)
	}
	e.Wait()
	for i := 1; i <= 3; i++ {
		killed().Wait() // resume i, killed again
		if jr := d.journalRec(); jr.State != journal.StateWriting || jr.Resumes != i {
			t.Fatalf("after resume %d: %+v", i, jr)
		}
	}
	e = d.engine()
	d.start(e)
	jr := d.journalRec()
	if jr.State != journal.StateFailed || !strings.Contains(jr.LastError, "interrupted too often") {
		t.Fatalf("breaker did not trip: %+v", jr)
	}
	if d.envVar("upgrade_available") != "0" || d.slotRec("B").State != journal.SlotBad {
		t.Fatal("half-written slot not left bad and disarmed")
	}
	if st := e.Status(); !strings.Contains(st.LastError, "interrupted too often") {
		t.Fatalf("status %+v", st)
	}
}

// A bundle piped on stdin cannot be resumed: the next start fails it cleanly.
func TestStdinInstallNotResumed(t *testing.T) {
	d := newDevice(t)
	e := d.engine()
	d.start(e)
	j := e.cfg.Journal
	if err := j.Save(&journal.Record{State: journal.StateWriting, Tx: "t1", Target: "B", Active: "A",
		Bundle: journal.Bundle{Source: "-"}, Resume: journal.Resume{Chunks: 3, Bytes: 3 * chunk}}); err != nil {
		t.Fatal(err)
	}
	e = d.engine()
	d.start(e)
	if jr := d.journalRec(); jr.State != journal.StateFailed || !strings.Contains(jr.LastError, "stdin") {
		t.Fatalf("%+v", jr)
	}
}

var _ = io.EOF
