package bootenv

import (
	"fmt"
	"io"
	"sync"

	"github.com/otadev/otad/internal/mtd"
)

// Medium is byte-addressed storage with an erase operation: flash, the
// flash simulator, or a real /dev/mtdN. mtd.Device satisfies it.
type Medium interface {
	io.ReaderAt
	io.WriterAt
	Erase(off, n int64) error
}

// mediumArea is one copy on a Medium. The erase covers whole sectors; bytes
// of those sectors outside the copy are read first and written back.
type mediumArea struct {
	m      Medium
	off    int64
	size   int64
	sector int64
	unit   int64 // program unit of the flag write (mtd.Info.ProgramUnit)
	label  string
}

// programUnit is the unit writeFlag programs in: the medium's own when it
// knows its geometry (mtd.Char, the simulator), else the one of NOR.
func programUnit(m Medium) int64 {
	if g, ok := m.(interface{ Info() mtd.Info }); ok {
		return g.Info().ProgramUnit()
	}
	return mtd.NORProgramUnit
}

func (a *mediumArea) name() string { return a.label }

// span is the byte range a write erases: whole sectors.
func (a *mediumArea) span() (lo, hi int64) {
	lo, hi = a.off-a.off%a.sector, a.off+a.size
	if r := hi % a.sector; r != 0 {
		hi += a.sector - r
	}
	return lo, hi
}

func (a *mediumArea) read(p []byte, fresh bool) error {
	if err := a.checkBad(); err != nil {
		return err
	}
	return readFull(a.m, p, a.off)
}

// checkBad refuses a copy that lies on a block in the bad block table,
// when the medium has one: skipping it would move the copy where U-Boot
// does not look.
func (a *mediumArea) checkBad() error {
	b, ok := a.m.(interface{ IsBad(off int64) (bool, error) })
	if !ok {
		return nil
	}
	for o := a.off - a.off%a.sector; o < a.off+a.size; o += a.sector {
		bad, err := b.IsBad(o)
		if err != nil {
			return fmt.Errorf("bad block check at %#x: %w", o, err)
		}
		if bad {
			return fmt.Errorf("bootenv: bad erase block at %#x inside the environment copy", o)
		}
	}
	return nil
}

func (a *mediumArea) write(p []byte) error {
	if err := a.checkBad(); err != nil {
		return err
	}
	start, end := a.span()
	block := p
	if start != a.off || end != a.off+a.size {
		block = make([]byte, end-start)
		if n, err := a.m.ReadAt(block, start); n != len(block) {
			return fmt.Errorf("save rest of sector: %w", err)
		}
		copy(block[a.off-start:], p)
	}
	if err := a.m.Erase(start, end-start); err != nil {
		return fmt.Errorf("erase %#x+%#x: %w", start, end-start, err)
	}
	if _, err := a.m.WriteAt(block, start); err != nil {
		return err
	}
	return syncMedium(a.m)
}

// flagUnit is the byte range writeFlag programs: the aligned program unit
// holding the flag byte, cut to the erase sector of the copy so it never
// reaches another copy.
func (a *mediumArea) flagUnit() (lo, hi int64) {
	pos, u := a.off+4, max(a.unit, 1)
	lo, hi = pos-pos%u, pos-pos%u+u
	if a.sector > 0 {
		slo := pos - pos%a.sector
		lo, hi = max(lo, slo), min(hi, slo+a.sector)
	}
	return lo, hi
}

// writeFlag programs the flag byte as part of the aligned program unit
// around it (see mtd.Info.ProgramUnit), every other byte of the unit
// programmed with the value just read from the medium. Programming only
// clears bits and a byte programmed with its own value stays as it is, so
// the program changes nothing but bits of the flag byte, even when a power
// cut tears it. A 1-byte write would be the same on paper, but Linux's CFI
// driver turns it into a one-word buffered program, which QEMU's pflash
// rejects; an aligned unit of several bus words is a full buffered program
// (or several) on every CFI driver.
func (a *mediumArea) writeFlag(b byte) error {
	pos := a.off + 4
	lo, hi := a.flagUnit()
	buf := make([]byte, hi-lo)
	if err := readFull(a.m, buf, lo); err != nil {
		return fmt.Errorf("read flag unit %#x+%#x: %w", lo, hi-lo, err)
	}
	if cur := buf[pos-lo]; cur&b != b {
		return fmt.Errorf("bootenv: flag byte at %#x is %#x: programming cannot turn it into %#x", pos, cur, b)
	}
	buf[pos-lo] = b
	if _, err := a.m.WriteAt(buf, lo); err != nil {
		return err
	}
	// The caller reads the whole copy back (flag and CRC), as for every area.
	return syncMedium(a.m)
}

func readFull(m Medium, p []byte, off int64) error {
	n, err := m.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = fmt.Errorf("%w: %d of %d bytes at %#x", ErrShortRead, n, len(p), off)
	}
	return err
}

func syncMedium(m Medium) error {
	if s, ok := m.(interface{ Sync() error }); ok {
		return s.Sync()
	}
	return nil
}

// MediumStore is an environment on one or two Medium copies.
type MediumStore struct {
	mu sync.Mutex
	c  copies
}

// NewMediumStore keeps the environment at offsets[i] of copies[i] (one entry
// = single copy, two = redundant), each copy envSize bytes and erased as
// one unit. Use NewSectorMediumStore when the erase sector is larger.
func NewMediumStore(copies []Medium, offsets []int64, envSize int64, scheme FlagScheme) Store {
	return NewSectorMediumStore(copies, offsets, envSize, envSize, scheme)
}

// NewSectorMediumStore is NewMediumStore with an erase sector size that may
// be larger than the environment (the rest of the sector is preserved).
func NewSectorMediumStore(media []Medium, offsets []int64, envSize, sectorSize int64, scheme FlagScheme) *MediumStore {
	if sectorSize <= 0 {
		sectorSize = envSize
	}
	s := &MediumStore{c: copies{size: int(envSize), scheme: scheme}}
	for i, m := range media {
		s.c.areas = append(s.c.areas, &mediumArea{m: m, off: offsets[i], size: envSize, sector: sectorSize,
			unit: programUnit(m), label: fmt.Sprintf("medium %d @%#x", i, offsets[i])})
	}
	return s
}

// Load returns the current environment.
func (s *MediumStore) Load() (*Env, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.load()
}

// Save writes e to the out-of-date copy.
func (s *MediumStore) Save(e *Env) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.save(e)
}

func (s *MediumStore) update(fn func(*Env) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return updateWith(s.c.load, s.c.save, fn)
}
