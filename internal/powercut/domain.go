package powercut

import (
	"errors"
	"math/rand/v2"
	"sync"
)

// ErrPowerCut is returned by every device call made while the power is off.
var ErrPowerCut = errors.New("powercut: power cut")

// TearMode is what happens at power-on to data that was written but not
// synced when the power went.
type TearMode int

const (
	// TearRandom keeps, loses or tears each un-synced sector (and keeps a
	// random ordered prefix of un-synced directory operations).
	TearRandom TearMode = iota
	// LoseUnsynced loses everything not synced: the strictest reading of
	// fsync's contract.
	LoseUnsynced
	// KeepUnsynced keeps everything written before the cut, as if the
	// write-back had just finished; only the cut operation itself tears.
	KeepUnsynced
)

func (m TearMode) String() string {
	return [...]string{"random", "lose", "keep"}[m]
}

// device is one powered part of a board.
type device interface {
	// powerOn settles the volatile state after a cut (or a clean
	// shutdown when clean is true) and restores the power.
	powerOn(clean bool)
}

// Domain is one board's power supply: a single operation counter shared
// by all its devices. It is safe for concurrent use.
type Domain struct {
	mu    sync.Mutex
	ops   int
	cutAt int // cut during op number cutAt; 0 = never
	dead  bool
	mode  TearMode
	seed  uint64
	nrng  uint64
	devs  []device
}

// NewDomain returns a powered domain; seed makes every tear reproducible.
func NewDomain(mode TearMode, seed uint64) *Domain {
	return &Domain{mode: mode, seed: seed}
}

// Mode returns the tear mode.
func (d *Domain) Mode() TearMode { return d.mode }

// newRand returns a generator for one device, derived from the seed.
func (d *Domain) newRand() *rand.Rand {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nrng++
	return rand.New(rand.NewPCG(d.seed, d.nrng*0x9e3779b97f4a7c15))
}

// Seed returns a seed for a device that brings its own generator (the
// flash simulator), derived from the domain's seed.
func (d *Domain) Seed() uint64 {
	return d.newRand().Uint64()
}

func (d *Domain) add(dev device) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.devs = append(d.devs, dev)
}

// CutAt arms a cut: operation number n (counting from the last ResetOps)
// is torn and the power goes. n <= 0 disarms.
func (d *Domain) CutAt(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cutAt = max(n, 0)
}

// ResetOps restarts the operation count (after a board's factory setup).
func (d *Domain) ResetOps() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ops = 0
}

// Ops is the number of write operations attempted since ResetOps.
func (d *Domain) Ops() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ops
}

// IsCut reports whether the power is off.
func (d *Domain) IsCut() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dead
}

// begin counts one write operation. It returns ErrPowerCut when the power
// is already off, and tear=true when this operation is the one being cut:
// the caller performs a torn version of it and returns ErrPowerCut.
func (d *Domain) begin() (tear bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return false, ErrPowerCut
	}
	d.ops++
	if d.cutAt > 0 && d.ops == d.cutAt {
		d.dead = true
		return true, nil
	}
	return false, nil
}

// alive returns ErrPowerCut while the power is off (for reads).
func (d *Domain) alive() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return ErrPowerCut
	}
	return nil
}

// PowerOn settles every device after a cut (un-synced data survives per
// the tear mode) and restores the power. A cut that happened is disarmed;
// one still ahead stays armed.
func (d *Domain) PowerOn() { d.restore(false) }

// CleanReboot is an orderly restart (systemd syncs file systems and
// flushes device caches before it resets): everything written becomes
// durable. If the power is already cut it is PowerOn.
func (d *Domain) CleanReboot() {
	d.mu.Lock()
	dead := d.dead
	d.mu.Unlock()
	d.restore(!dead)
}

func (d *Domain) restore(clean bool) {
	d.mu.Lock()
	devs := append([]device(nil), d.devs...)
	d.mu.Unlock()
	for _, dev := range devs {
		dev.powerOn(clean)
	}
	d.mu.Lock()
	if d.dead {
		d.cutAt = 0 // one cut per CutAt
	}
	d.dead = false
	d.mu.Unlock()
}
