// Package floor keeps the anti-rollback floor: the lowest bundle
// security_version the device still accepts.
//
// The file-backed Store keeps two copies, floor.0 and floor.1, each one
// record {magic, seq, floor, crc32}. Every raise writes BOTH copies, the
// older (lower seq, damaged or missing) first, each with
// journal.WriteFileAtomic (temp, fsync, rename, fsync dir). So after a
// power cut at any instant each copy holds a complete old or new record,
// and at every instant at least one copy holds the floor of the last
// completed raise.
//
// Invariants of a read (Check, Get):
//   - the floor is the highest floor among the valid copies, and never below
//     Lower (what the journal records as committed), so once a raise has
//     happened one damaged or missing copy never lowers the floor;
//   - with no valid copy after a raise (both damaged, or floor.0 missing),
//     Get fails with ErrNoValidCopy and installs stop until an operator sets
//     the floor again (Reset; `otad floor reset --to N`);
//   - no file at all, or an invalid floor.0 with no floor.1 (a first raise
//     cut by an older otad that wrote the copy in place), is "never raised":
//     the floor is Lower's value (0 without one). Removing both files is
//     therefore an operator's reset to what the journal records; the file
//     store trusts root, a TPM or OTP Floor does not.
//
// The engine raises the floor only after the new slot is committed. A TPM
// NV counter or OTP fuses can replace the file store behind the Floor
// interface. This package does not log: Check reports damage to the caller.
package floor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/otadev/otad/internal/journal"
)

// Floor is the anti-rollback floor storage.
type Floor interface {
	// Get returns the current floor (0 when never raised).
	Get() (uint64, error)
	// Raise sets the floor to v if v is higher; lower values are a no-op.
	Raise(v uint64) error
}

// ErrNoValidCopy means the floor was raised but no copy is valid now: the
// floor cannot be trusted and installs must stop until someone looks.
var ErrNoValidCopy = errors.New("floor: no valid copy")

const (
	recSize = 24
	magic   = "OTFL"
)

// ResetHint is what an operator does about ErrNoValidCopy.
const ResetHint = "installs are refused until an operator sets the floor with 'otad floor reset --to N' (N: the highest security_version ever installed)"

// Store is the file-backed Floor in Dir.
type Store struct {
	FS  journal.FS
	Dir string
	// Lower, if set, returns a floor the store never reads below: the
	// security version of what the journal records as committed (see
	// JournalBound). It backs up the copies; it is not written by Raise.
	Lower func() (uint64, error)
}

// New returns a Store in dir on the real file system.
func New(dir string) *Store { return &Store{FS: journal.OSFS{}, Dir: dir} }

// copyState is one copy as read.
type copyState struct {
	exists bool
	valid  bool
	seq    uint64
	floor  uint64
	why    string // why an existing copy is invalid
}

func encode(seq, floor uint64) []byte {
	b := make([]byte, recSize)
	copy(b, magic)
	binary.LittleEndian.PutUint64(b[4:], seq)
	binary.LittleEndian.PutUint64(b[12:], floor)
	binary.LittleEndian.PutUint32(b[20:], crc32.ChecksumIEEE(b[:20]))
	return b
}

// decode checks one record; why says what is wrong with an invalid one
// (never the file's bytes).
func decode(b []byte) (c copyState) {
	c.exists = true
	switch {
	case len(b) < recSize:
		c.why = fmt.Sprintf("%d bytes, want %d", len(b), recSize)
	case string(b[:4]) != magic:
		c.why = "bad magic"
	case binary.LittleEndian.Uint32(b[20:]) != crc32.ChecksumIEEE(b[:20]):
		c.why = "bad checksum"
	default:
		c.valid = true
		c.seq = binary.LittleEndian.Uint64(b[4:])
		c.floor = binary.LittleEndian.Uint64(b[12:])
	}
	return c
}

func (s *Store) path(i int) string { return filepath.Join(s.Dir, fmt.Sprintf("floor.%d", i)) }

func (s *Store) read() ([2]copyState, error) {
	var cs [2]copyState
	for i := range cs {
		b, err := journal.ReadFile(s.FS, s.path(i))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return cs, fmt.Errorf("floor: %w", err)
		}
		cs[i] = decode(b)
	}
	return cs, nil
}

// fromCopies is the highest floor among the valid copies; ok is false when
// a raise is known to have happened (a valid copy once existed: floor.1
// exists, or lower > 0) but no copy is valid now. An invalid floor.0 alone
// is a first raise torn by an older otad that wrote it in place before
// creating floor.1, so it reads as never raised.
func fromCopies(cs [2]copyState, lower uint64) (v uint64, ok bool) {
	if !cs[0].valid && !cs[1].valid {
		return 0, !cs[1].exists && lower == 0
	}
	for _, c := range cs {
		if c.valid {
			v = max(v, c.floor)
		}
	}
	return v, true
}

// Health is the floor and the state of its copies at one read.
type Health struct {
	Floor uint64 // the effective floor: valid copies and Lower
	Lower uint64 // what Lower returned (0 without one)
	// Damaged has one line per copy that is missing, invalid or behind
	// while the floor has been raised (for the log at start); empty when
	// both copies agree, or when the floor was never raised.
	Damaged []string
}

// Check reads both copies and Lower. With no valid copy after a raise it
// returns Health (Damaged filled) and an error wrapping ErrNoValidCopy
// that says what the operator does.
func (s *Store) Check() (Health, error) {
	h, _, err := s.check()
	return h, err
}

func (s *Store) check() (Health, [2]copyState, error) {
	var h Health
	cs, err := s.read()
	if err != nil {
		return h, cs, err
	}
	if s.Lower != nil {
		if h.Lower, err = s.Lower(); err != nil {
			return h, cs, fmt.Errorf("floor: lower bound from the journal: %w", err)
		}
	}
	v, ok := fromCopies(cs, h.Lower)
	raised := cs[0].exists || cs[1].exists || h.Lower > 0
	for i, c := range cs {
		name := filepath.Base(s.path(i))
		switch {
		case !raised:
		case !c.exists:
			h.Damaged = append(h.Damaged, name+": missing")
		case !c.valid:
			h.Damaged = append(h.Damaged, name+": "+c.why)
		case v > c.floor:
			h.Damaged = append(h.Damaged, fmt.Sprintf("%s: floor %d, behind the other copy's %d", name, c.floor, v))
		}
	}
	if !ok {
		return h, cs, fmt.Errorf("%w in %s (%s): %s", ErrNoValidCopy, s.Dir, strings.Join(h.Damaged, "; "), ResetHint)
	}
	if !cs[0].valid && !cs[1].valid {
		h.Damaged = nil // never raised, or a torn first raise: nothing lost
	}
	if h.Lower > v && v > 0 {
		h.Damaged = append(h.Damaged, fmt.Sprintf("copies hold floor %d, below the committed security version %d", v, h.Lower))
	}
	h.Floor = max(v, h.Lower)
	return h, cs, nil
}

// Get returns the effective floor: the highest valid copy, never below
// Lower.
func (s *Store) Get() (uint64, error) {
	h, err := s.Check()
	if err != nil {
		return 0, err
	}
	return h.Floor, nil
}

// Raise sets the floor to max(v, current) and writes it into both copies
// unless both already hold it: raising to the current value rewrites a
// damaged, missing or stale copy. With no valid copy after a raise it
// refuses (ErrNoValidCopy): only Reset may start over.
func (s *Store) Raise(v uint64) error {
	h, cs, err := s.check()
	if err != nil {
		return err
	}
	target := max(v, h.Floor)
	if target == 0 || (cs[0].valid && cs[1].valid && cs[0].floor == target && cs[1].floor == target) {
		return nil
	}
	if err := s.writeBoth(cs, target); err != nil {
		return fmt.Errorf("floor: raise to %d: %w", target, err)
	}
	return nil
}

// Reset sets the floor to v whatever the copies hold, lower or damaged
// included: the operator's way out of ErrNoValidCopy. Lower still applies
// to reads.
func (s *Store) Reset(v uint64) error {
	cs, err := s.read()
	if err != nil {
		return err
	}
	if err := s.writeBoth(cs, v); err != nil {
		return fmt.Errorf("floor: reset to %d: %w", v, err)
	}
	return nil
}

// writeBoth writes {seq, v} into both copies, the older first: a copy that
// is missing or invalid, else the lower seq, else floor.0. Until the first
// write is durable the other copy still holds the last completed floor.
func (s *Store) writeBoth(cs [2]copyState, v uint64) error {
	seq := max(cs[0].seq, cs[1].seq) + 1
	first := 0
	if cs[0].valid && (!cs[1].valid || cs[1].seq < cs[0].seq) {
		first = 1
	}
	if err := s.FS.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	rec := encode(seq, v)
	for _, i := range []int{first, 1 - first} {
		if err := journal.WriteFileAtomic(s.FS, s.path(i), rec); err != nil {
			return err
		}
	}
	return nil
}

// Mem is an in-memory Floor for tests.
type Mem struct{ V uint64 }

// Get returns the floor.
func (m *Mem) Get() (uint64, error) { return m.V, nil }

// Raise raises the floor to v if higher.
func (m *Mem) Raise(v uint64) error {
	m.V = max(m.V, v)
	return nil
}
