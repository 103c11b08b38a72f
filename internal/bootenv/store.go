package bootenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Store is where an environment lives. Save is ONE environment write: it
// goes to the out-of-date copy and is read back and CRC-checked before it
// returns nil.
type Store interface {
	Load() (*Env, error)
	Save(*Env) error
}

// updater is implemented by stores that must hold a lock across the
// load-modify-save of a transaction.
type updater interface {
	update(fn func(*Env) error) error
}

// Update loads the environment, lets fn change it and saves it with ONE
// write. If fn returns an error nothing is written; if fn changes nothing,
// nothing is written either (a normal boot must not wear the flash).
func Update(s Store, fn func(*Env) error) error {
	if u, ok := s.(updater); ok {
		return u.update(fn)
	}
	return updateWith(s.Load, s.Save, fn)
}

func updateWith(load func() (*Env, error), save func(*Env) error, fn func(*Env) error) error {
	e, err := load()
	if err != nil {
		return err
	}
	before := e.Clone()
	if err := fn(e); err != nil {
		return err
	}
	if e.Equal(before) {
		return nil
	}
	return save(e)
}

// area is the storage of one copy.
type area interface {
	// read fills p with the whole copy; fresh asks to bypass caches (read-back).
	read(p []byte, fresh bool) error
	// write makes p the whole copy, durably (erasing first on flash).
	write(p []byte) error
	// writeFlag programs only the flags byte of the copy, durably.
	writeFlag(b byte) error
	name() string
}

// copies implements load and save over one or two areas.
type copies struct {
	areas  []area
	size   int
	scheme FlagScheme
}

func (c *copies) redundant() bool { return len(c.areas) == 2 }

func (c *copies) readStates() ([]copyState, error) {
	states := make([]copyState, len(c.areas))
	buf := make([]byte, c.size)
	var errs []error
	for i, a := range c.areas {
		if err := a.read(buf, false); err != nil {
			if errors.Is(err, ErrShortRead) {
				// The copy lies outside the medium: a configuration error.
				return nil, fmt.Errorf("bootenv: read copy %d (%s): %w", i, a.name(), err)
			}
			// An unreadable copy (NAND bad block, I/O error) is an invalid
			// copy; the other one may still be good. Both failing is an
			// error of its own, not "no valid copy".
			errs = append(errs, fmt.Errorf("bootenv: read copy %d (%s): %w", i, a.name(), err))
			continue
		}
		states[i] = decode(buf, c.redundant())
	}
	if len(errs) == len(c.areas) {
		return nil, errs[0]
	}
	return states, nil
}

func (c *copies) load() (*Env, error) {
	states, err := c.readStates()
	if err != nil {
		return nil, err
	}
	i, err := pick(states, c.scheme)
	if err != nil {
		return nil, err
	}
	return states[i].env, nil
}

// save writes e to the copy readers do not use now. The current state is
// read again rather than remembered from Load, so a copy written meanwhile
// by fw_setenv is never overwritten.
func (c *copies) save(e *Env) error {
	if !c.redundant() {
		buf, err := encode(e, c.size, false, 0)
		if err != nil {
			return err
		}
		return c.writeCopy(0, buf)
	}
	states, err := c.readStates()
	if err != nil {
		return err
	}
	target, flag, old := 0, byte(flagActive), -1
	if cur, err := pick(states, c.scheme); err == nil {
		target, flag, old = 1-cur, nextFlag(states[cur].flag, c.scheme), cur
	}
	buf, err := encode(e, c.size, true, flag)
	if err != nil {
		return err
	}
	if err := c.writeCopy(target, buf); err != nil {
		return err
	}
	if c.scheme == FlagsBoolean && old >= 0 {
		// Until this byte is 0 both copies are active and readers take copy
		// 0; either way they see a whole environment.
		a := c.areas[old]
		if err := a.writeFlag(flagObsolete); err != nil {
			return fmt.Errorf("bootenv: mark copy %d (%s) obsolete: %w", old, a.name(), err)
		}
		chk := make([]byte, c.size)
		if err := a.read(chk, true); err != nil {
			return fmt.Errorf("bootenv: read back copy %d (%s): %w", old, a.name(), err)
		}
		if chk[4] != flagObsolete {
			return fmt.Errorf("%w: copy %d (%s) flag is %#x, want 0", ErrReadBack, old, a.name(), chk[4])
		}
	}
	return nil
}

func (c *copies) writeCopy(i int, buf []byte) error {
	a := c.areas[i]
	if err := a.write(buf); err != nil {
		return fmt.Errorf("bootenv: write copy %d (%s): %w", i, a.name(), err)
	}
	chk := make([]byte, len(buf))
	if err := a.read(chk, true); err != nil {
		return fmt.Errorf("bootenv: read back copy %d (%s): %w", i, a.name(), err)
	}
	if !bytes.Equal(chk, buf) || !decode(chk, c.redundant()).valid {
		return fmt.Errorf("%w: copy %d (%s)", ErrReadBack, i, a.name())
	}
	return nil
}

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
	label  string
}

func (a *mediumArea) name() string { return a.label }

func (a *mediumArea) read(p []byte, fresh bool) error {
	if err := a.checkBad(); err != nil {
		return err
	}
	n, err := a.m.ReadAt(p, a.off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = fmt.Errorf("%w: %d of %d bytes at %#x", ErrShortRead, n, len(p), a.off)
	}
	return err
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
	start := a.off - a.off%a.sector
	end := a.off + a.size
	if r := end % a.sector; r != 0 {
		end += a.sector - r
	}
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

func (a *mediumArea) writeFlag(b byte) error {
	if _, err := a.m.WriteAt([]byte{b}, a.off+4); err != nil {
		return err
	}
	return syncMedium(a.m)
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
			label: fmt.Sprintf("medium %d @%#x", i, offsets[i])})
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

// MemStore is an in-memory Store for tests of code above bootenv. It counts
// Saves, each of which would be one environment write on a device.
type MemStore struct {
	mu     sync.Mutex
	env    *Env
	writes int
	// SaveErr, if set, is returned by Save instead of writing.
	SaveErr error
}

// NewMemStore starts with a copy of e; nil means no valid copy yet.
func NewMemStore(e *Env) *MemStore {
	s := &MemStore{}
	if e != nil {
		s.env = e.Clone()
	}
	return s
}

// Load returns a copy of the stored environment or ErrNoValidCopy.
func (s *MemStore) Load() (*Env, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.load()
}

func (s *MemStore) load() (*Env, error) {
	if s.env == nil {
		return nil, ErrNoValidCopy
	}
	return s.env.Clone(), nil
}

// Save stores a copy of e and counts one write.
func (s *MemStore) Save(e *Env) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.save(e)
}

func (s *MemStore) save(e *Env) error {
	if s.SaveErr != nil {
		return s.SaveErr
	}
	for _, n := range e.Names() {
		if v, _ := e.Get(n); !ValidName(n) || bytes.IndexByte([]byte(v), 0) >= 0 {
			return fmt.Errorf("%w: %q", ErrBadName, n)
		}
	}
	s.env = e.Clone()
	s.writes++
	return nil
}

func (s *MemStore) update(fn func(*Env) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return updateWith(s.load, s.save, fn)
}

// Writes is the number of successful Saves.
func (s *MemStore) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}
