// Package floor keeps the anti-rollback floor: the lowest bundle
// security_version the device still accepts.
//
// The file-backed Store keeps two copies, floor.0 and floor.1, each one
// record {magic, seq, floor, crc32}. A raise writes the copy that does NOT
// hold the newest record, fsyncs it, and leaves the other untouched; reads
// take the highest floor among the valid copies. So a power cut during a
// raise tears at most the copy being written: the raise may be lost, but
// the floor read afterwards is never lower than before. Raises start with
// floor.0, so an invalid floor.0 with no floor.1 is a torn first raise and
// reads as 0 (deleting floor.1 and damaging floor.0 resets the floor: the
// file store trusts root; a TPM or OTP Floor does not). The engine raises
// the floor only after the new slot is committed. A TPM NV counter or OTP
// fuses can replace the file store behind the Floor interface.
package floor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	"github.com/otadev/otad/internal/journal"
)

// Floor is the anti-rollback floor storage.
type Floor interface {
	// Get returns the current floor (0 when never raised).
	Get() (uint64, error)
	// Raise sets the floor to v if v is higher; lower values are a no-op.
	Raise(v uint64) error
}

// ErrNoValidCopy means copies exist but none has a valid checksum: the
// floor cannot be trusted and installs must stop until someone looks.
var ErrNoValidCopy = errors.New("floor: no valid copy")

const (
	recSize = 24
	magic   = "OTFL"
)

// Store is the file-backed Floor in Dir.
type Store struct {
	FS  journal.FS
	Dir string
}

// New returns a Store in dir on the real file system.
func New(dir string) *Store { return &Store{FS: journal.OSFS{}, Dir: dir} }

type rec struct {
	seq, floor uint64
	valid      bool
}

func encode(seq, floor uint64) []byte {
	b := make([]byte, recSize)
	copy(b, magic)
	binary.LittleEndian.PutUint64(b[4:], seq)
	binary.LittleEndian.PutUint64(b[12:], floor)
	binary.LittleEndian.PutUint32(b[20:], crc32.ChecksumIEEE(b[:20]))
	return b
}

func decode(b []byte) rec {
	if len(b) < recSize || string(b[:4]) != magic ||
		binary.LittleEndian.Uint32(b[20:]) != crc32.ChecksumIEEE(b[:20]) {
		return rec{}
	}
	return rec{seq: binary.LittleEndian.Uint64(b[4:]), floor: binary.LittleEndian.Uint64(b[12:]), valid: true}
}

func (s *Store) path(i int) string { return filepath.Join(s.Dir, fmt.Sprintf("floor.%d", i)) }

// read returns both copies and whether floor.1 exists. Raises alternate
// starting with floor.0, so while floor.1 does not exist at most the first
// raise was ever attempted: an invalid floor.0 then is that raise torn by a
// power cut (the file created, its record not yet durable), and the floor
// is still 0.
func (s *Store) read() ([2]rec, bool, error) {
	var rs [2]rec
	second := false
	for i := range rs {
		b, err := journal.ReadFile(s.FS, s.path(i))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return rs, false, fmt.Errorf("floor: %w", err)
		}
		if i == 1 {
			second = true
		}
		rs[i] = decode(b)
	}
	return rs, second, nil
}

// Get returns the highest floor among the valid copies.
func (s *Store) Get() (uint64, error) {
	rs, second, err := s.read()
	if err != nil {
		return 0, err
	}
	if !rs[0].valid && !rs[1].valid {
		if second {
			// Both copies exist and both are damaged: a single torn write
			// cannot do that, since a raise never touches the newest copy.
			return 0, ErrNoValidCopy
		}
		return 0, nil // never raised, or the first raise was torn
	}
	return max(floorOf(rs[0]), floorOf(rs[1])), nil
}

func floorOf(r rec) uint64 {
	if !r.valid {
		return 0
	}
	return r.floor
}

// Raise writes v into the copy not holding the newest record.
func (s *Store) Raise(v uint64) error {
	rs, second, err := s.read()
	if err != nil {
		return err
	}
	if !rs[0].valid && !rs[1].valid && second {
		return ErrNoValidCopy
	}
	cur := max(floorOf(rs[0]), floorOf(rs[1]))
	if v <= cur && (rs[0].valid || rs[1].valid) {
		return nil
	}
	// Overwrite the older (or invalid) copy; keep the newest intact.
	idx := 0
	if rs[0].valid && (!rs[1].valid || rs[0].seq > rs[1].seq) {
		idx = 1
	}
	seq := max(rs[0].seq, rs[1].seq) + 1
	if err := s.FS.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	f, err := s.FS.OpenFile(s.path(idx), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("floor: %w", err)
	}
	_, werr := f.WriteAt(encode(seq, v), 0)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		// The copy may have just been created: make its name durable too.
		werr = s.FS.SyncDir(s.Dir)
	}
	if werr != nil {
		return fmt.Errorf("floor: raise to %d: %w", v, werr)
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
