package powercut

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/update"
)

// expect is how a goal ends.
type expect int

const (
	commits   expect = iota // the device ends up running the image, committed
	rollsBack               // the image is tried and the device falls back
	canceled                // the install is canceled mid-write
)

// interrupt is done to the first attempt of a goal once the source has
// been read up to at bytes.
type interrupt int

const (
	none       interrupt = iota
	userCancel           // Engine.Cancel
	daemonStop           // the daemon's context ends (systemctl stop), then it starts again
)

type goal struct {
	img *image
	exp expect
	irq interrupt
	at  int64
	// onWrite: at counts bytes written into the slot, not bytes read from
	// the source. A delta's decoder may read the whole patch before the
	// first window is written, so only the write side lands mid-write.
	onWrite bool
	// opts are further install options (the operator passes them again
	// on every retry).
	opts map[string]any
}

type cycle struct {
	name  string
	goals func(*fixtures) []goal
}

var cycles = []cycle{
	{"good-commit", func(f *fixtures) []goal { return []goal{{img: f.v2, exp: commits}} }},
	{"panic-rollback", func(f *fixtures) []goal { return []goal{{img: f.bad, exp: rollsBack}} }},
	{"health-rollback", func(f *fixtures) []goal { return []goal{{img: f.ill, exp: rollsBack}} }},
	{"cancel-mid-write", func(f *fixtures) []goal { return []goal{{img: f.v2, exp: canceled, irq: userCancel, at: 100 << 10}} }},
	{"back-to-back", func(f *fixtures) []goal { return []goal{{img: f.v2, exp: commits}, {img: f.v3, exp: commits}} }},
	{"interrupted-resumed", func(f *fixtures) []goal {
		return []goal{{img: f.v2, exp: commits, irq: daemonStop, at: 120 << 10}}
	}},
	// Delta cycles: the patch turns the factory image in the active slot
	// into the new image in the other one, reading the active slot while
	// writing. They run on every medium: the MTD targets read the active
	// slot by logical block (skipping bad blocks) like the block devices.
	{"delta-commit", func(f *fixtures) []goal { return []goal{{img: f.delta, exp: commits}} }},
	// An interrupted delta restarts from its first byte on the next daemon
	// start (a delta write never resumes mid-way).
	{"delta-interrupted", func(f *fixtures) []goal {
		return []goal{{img: f.delta, exp: commits, irq: daemonStop, at: 120 << 10, onWrite: true}}
	}},
	// The delta again once the device runs 2.0 (not its source): refused
	// before anything is touched, and the full bundle named as its
	// fallback installs the same image instead (a resume after a cut
	// reopens the full bundle, which the journal names).
	{"delta-fallback", func(f *fixtures) []goal {
		return []goal{{img: f.v2, exp: commits}, {img: f.delta, exp: commits, opts: map[string]any{"fallback": deltaFull}}}
	}},
	// An encrypted bundle (crypt_test.go), stopped mid-write: the restart
	// resumes decrypting at a chunk boundary like a plain bundle.
	{"encrypted-interrupted", func(f *fixtures) []goal {
		return []goal{{img: f.enc, exp: commits, irq: daemonStop, at: 120 << 10}}
	}},
}

// result of one run of a cycle.
type result struct {
	ops   int // write operations until the cycle ended (final check excluded)
	boots int
	cut   bool // the armed cut happened
	cuts  int  // power cuts in the run
}

// run drives the board through the cycle's goals, like an operator who
// installs, reboots when the device waits for it and retries an install
// that a power cut stopped, and checks every invariant on the way. The
// error is the first violation.
func (b *board) run(c cycle) (result, error) {
	goals := c.goals(b.fx)
	fired := make([]bool, len(goals))
	tried := make([]bool, len(goals)) // the image was armed or booted
	gi := 0
	var res result
	maxBoots := len(goals)*(bootLimit+4) + bootLimit + 4
	var (
		needBoot     = true
		sinceCut     = -1   // boots since the last cut; -1 when none pending
		activeBytes  []byte // the booted slot's content at boot (shared view: read only)
		floorSeen    uint64
		committedMax = b.fx.factory.secver
	)
	checkActive := func(when string) {
		if b.booted != "" && !bytes.Equal(b.view(b.booted), activeBytes) {
			b.violate("active slot %s changed (%s)", b.booted, when)
		}
	}
	checkFloor := func(when string) {
		// An image is committed once the env says so, even if the
		// daemon was cut before it noticed.
		if env, err := b.envState(); err == nil {
			up, _ := env.Get("upgrade_available")
			s, _ := env.Get("otad_slot")
			if _, ok := b.slots[s]; ok && up == "0" {
				if img := b.settled(s); img != nil && img.kind == good {
					committedMax = max(committedMax, img.secver)
				}
			}
		}
		f, err := b.floor()
		switch {
		case err != nil:
			b.violate("floor unreadable %s: %v", when, err)
		case f < floorSeen:
			b.violate("floor went down %s: %d, was %d", when, f, floorSeen)
		case f > committedMax:
			b.violate("floor %d raised above every committed image (max security version %d) %s", f, committedMax, when)
		}
		floorSeen = max(floorSeen, f)
	}
	powerOn := func() {
		res.cut = true
		res.cuts++
		b.dom.PowerOn()
		if len(b.again) > 0 {
			b.dom.CutAt(b.dom.Ops() + b.again[0])
			b.again = b.again[1:]
		}
		checkActive("by the power cut")
		checkFloor("after the power cut")
		sinceCut = 0
	}

	for iter := 0; ; iter++ {
		if err := b.violation(); err != nil {
			return res, err
		}
		if iter > 100 {
			return res, fmt.Errorf("no end after %d daemon starts (goal %d of %d)", iter, gi+1, len(goals))
		}
		if needBoot {
			for {
				if b.dom.IsCut() {
					powerOn()
				}
				checkFloor("before a boot")
				res.boots++
				if res.boots > maxBoots {
					return res, fmt.Errorf("no end after %d boots (goal %d of %d)", res.boots, gi+1, len(goals))
				}
				if sinceCut >= 0 {
					sinceCut++
					if sinceCut > bootLimit+1 {
						return res, fmt.Errorf("%d boots after the cut and still no committed good image (limit %d)", sinceCut, bootLimit+1)
					}
				}
				s, img, err := b.bootOnce()
				if err != nil {
					return res, err
				}
				if s == "" {
					continue // cut while U-Boot saved the env
				}
				if gi < len(goals) && img == goals[gi].img {
					tried[gi] = true
				}
				if img.kind == panics {
					continue // watchdog reset
				}
				if env, err := b.envState(); err == nil && sinceCut >= 0 {
					if up, _ := env.Get("upgrade_available"); up == "0" && img.kind == good {
						sinceCut = -1 // a committed good image runs again
					}
				}
				b.booted = s
				activeBytes = b.view(s)
				break
			}
			needBoot = false
		}

		// Daemon start.
		ctx, stop := context.WithCancel(context.Background())
		e := b.engine()
		err := e.Start(ctx)
		e.Wait()
		if err != nil && !b.dom.IsCut() {
			stop()
			return res, fmt.Errorf("daemon start on slot %s: %v", b.booted, err)
		}
		if gi < len(goals) && !b.dom.IsCut() {
			if g := goals[gi]; b.isArmedWith(g.img) {
				tried[gi] = true
			}
		}
		if b.dom.IsCut() {
			stop()
			needBoot = true
			continue
		}
		checkActive("while the daemon ran")
		if b.takeReboot() {
			stop()
			b.dom.CleanReboot()
			needBoot = true
			continue
		}
		st := e.Status()
		env, err := b.envState()
		if err != nil {
			stop()
			return res, fmt.Errorf("env unreadable: %v", err)
		}
		up, _ := env.Get("upgrade_available")
		es, _ := env.Get("otad_slot")
		if st.Operation != update.OpIdle || st.TrialBoot || up != "0" || es != b.booted {
			// Waiting for a reboot (or stuck): the operator reboots.
			stop()
			b.dom.CleanReboot()
			needBoot = true
			continue
		}
		// Stable: the device runs a committed image.
		img := b.settled(b.booted)
		if img == nil || img.kind != good {
			stop()
			return res, fmt.Errorf("device settled on slot %s holding %v, not a good image", b.booted, img)
		}
		committedMax = max(committedMax, img.secver)
		checkFloor("on a committed slot")
		sinceCut = -1

		for gi < len(goals) {
			g := goals[gi]
			done := false
			switch g.exp {
			case commits:
				done = img == g.img
			case rollsBack:
				done = tried[gi] && img != g.img
			case canceled:
				done = fired[gi]
			}
			if !done {
				break
			}
			gi++
		}
		if gi == len(goals) {
			res.ops = b.dom.Ops()
			b.dom.CutAt(0) // a further cut still ahead is not for the proof install
			err := b.finalInstall(e, ctx)
			stop()
			if err == nil {
				err = b.violation()
			}
			return res, err
		}

		// Act on the current goal: install its image.
		g := goals[gi]
		gidx := gi
		b.mu.Lock()
		b.installing = g.img
		interrupt := func(pos int64) {
			if g.irq == none || fired[gidx] || pos < g.at {
				return
			}
			fired[gidx] = true
			if g.irq == userCancel {
				// The hook runs on the install's own write path, where
				// Cancel's wait for the job could never end.
				if err := e.RequestCancel(); err != nil {
					b.violate("cancel mid-write refused: %v", err)
				}
			} else {
				stop()
			}
		}
		firedBefore := fired[gidx]
		if g.onWrite {
			b.whook = interrupt
		} else {
			b.hook = interrupt
		}
		b.mu.Unlock()
		opts := map[string]any{"reboot": true}
		for k, v := range g.opts {
			opts[k] = v
		}
		if _, err := e.Install(ctx, g.img.name, opts); err != nil && !b.dom.IsCut() {
			stop()
			return res, fmt.Errorf("install %s: %v", g.img.name, err)
		}
		e.Wait()
		b.mu.Lock()
		b.hook, b.whook = nil, nil
		b.mu.Unlock()
		if fired[gidx] && !firedBefore && !b.dom.IsCut() && b.afterIRQ != nil {
			b.afterIRQ(g)
		}
		if !b.dom.IsCut() && b.isArmedWith(g.img) {
			tried[gi] = true
		}
		stop()
		if b.dom.IsCut() {
			needBoot = true
			continue
		}
		checkActive("during the install")
		if b.takeReboot() {
			b.dom.CleanReboot()
			needBoot = true
		}
		// Otherwise the next iteration restarts the daemon on the same boot.
	}
}

func (b *board) takeReboot() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.rebootReq
	b.rebootReq = false
	return r
}

func (b *board) isArmedWith(img *image) bool {
	env, err := b.envState()
	if err != nil {
		return false
	}
	up, _ := env.Get("upgrade_available")
	s, _ := env.Get("otad_slot")
	_, ok := b.slots[s]
	return up == "1" && ok && s != b.booted && b.settled(s) == img
}

// finalInstall proves otad can install again: the final image goes into
// the other slot, verified and armed.
func (b *board) finalInstall(e *update.Engine, ctx context.Context) error {
	before := sum(b.slots[b.booted].durable())
	b.mu.Lock()
	b.installing = b.fx.final
	b.mu.Unlock()
	if _, err := e.Install(ctx, b.fx.final.name, map[string]any{"reboot": false}); err != nil {
		return fmt.Errorf("otad cannot install again: %w", err)
	}
	e.Wait()
	if b.dom.IsCut() {
		return errors.New("power cut during the final install (cut point beyond the cycle)")
	}
	st := e.Status()
	if st.Operation != update.OpPendingReboot || !b.isArmedWith(b.fx.final) {
		return fmt.Errorf("otad cannot install again: status %s, last error %q", st.Operation, st.LastError)
	}
	if sum(b.slots[b.booted].durable()) != before {
		return fmt.Errorf("final install changed the active slot %s", b.booted)
	}
	rec, err := (&journal.Journal{FS: b.fs, Dir: dataDir}).Load()
	if err != nil || rec.State != journal.StatePendingReboot {
		return fmt.Errorf("journal after the final install: %v %v", rec, err)
	}
	return nil
}
