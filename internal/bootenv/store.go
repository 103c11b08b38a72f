package bootenv

import (
	"bytes"
	"errors"
	"fmt"
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
	// span is the byte range a write of the copy may change.
	span() (lo, hi int64)
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
		// The flag and nothing else changed: the copy still checks out.
		if chk[4] != flagObsolete || !decode(chk, c.redundant()).valid {
			return fmt.Errorf("%w: copy %d (%s) flag is %#x, want 0, or its CRC no longer holds", ErrReadBack, old, a.name(), chk[4])
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
