package powercut

import (
	"github.com/otadev/otad/internal/mtd"
	"github.com/otadev/otad/internal/mtd/mtdtest"
)

// Flash is a flash simulator on a Domain: its erase and program operations
// count in the domain, and the domain's cut tears them with the
// simulator's own rules (NAND: garbage page; NOR: random subset of the bits
// being cleared; erase: partially erased block). Flash keeps no volatile
// state: what was programmed before the cut stays.
type Flash struct {
	sim *mtdtest.Sim
	dom *Domain
}

var _ mtd.Device = (*Flash)(nil)

// NewFlash returns an erased simulated flash device powered by d.
func NewFlash(d *Domain, info mtd.Info) *Flash {
	f := &Flash{sim: mtdtest.New(info, mtdtest.WithSeed(d.Seed())), dom: d}
	d.add(f)
	return f
}

// Sim returns the simulator (for direct inspection and factory content).
func (f *Flash) Sim() *mtdtest.Sim { return f.sim }

// Info returns the geometry.
func (f *Flash) Info() mtd.Info { return f.sim.Info() }

// ReadAt reads the medium; it fails while the power is off.
func (f *Flash) ReadAt(p []byte, off int64) (int, error) {
	if err := f.dom.alive(); err != nil {
		return 0, err
	}
	return f.sim.ReadAt(p, off)
}

// IsBad reports factory or marked bad blocks.
func (f *Flash) IsBad(off int64) (bool, error) {
	if err := f.dom.alive(); err != nil {
		return false, err
	}
	return f.sim.IsBad(off)
}

// WriteAt programs p at off: one operation.
func (f *Flash) WriteAt(p []byte, off int64) (int, error) {
	tear, err := f.dom.begin()
	if err != nil {
		return 0, err
	}
	if tear {
		f.sim.CutAfter(0)
	}
	n, err := f.sim.WriteAt(p, off)
	if tear && err == nil {
		err = ErrPowerCut // a zero-length or refused op: nothing to tear
	}
	return n, err
}

// Erase erases whole blocks: one operation.
func (f *Flash) Erase(off, n int64) error {
	tear, err := f.dom.begin()
	if err != nil {
		return err
	}
	if tear {
		f.sim.CutAfter(0)
	}
	err = f.sim.Erase(off, n)
	if tear && err == nil {
		err = ErrPowerCut
	}
	return err
}

// Bytes returns the whole medium, ignoring the power.
func (f *Flash) Bytes() []byte { return f.sim.Bytes() }

// Durable is Bytes: flash has no write cache.
func (f *Flash) Durable() []byte { return f.sim.Bytes() }

func (f *Flash) powerOn(bool) { f.sim.PowerOn() }
