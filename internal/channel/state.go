package channel

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"time"

	"github.com/otadev/otad/internal/journal"
)

// State is what a device remembers of the channel across restarts and
// power cuts: the document it last accepted.
type State struct {
	Serial    uint64    `json:"serial"`
	Created   time.Time `json:"created"`
	DocSHA256 string    `json:"doc_sha256"`
}

// StateStore keeps State. Load on a store that never saved returns the
// zero State and no error.
type StateStore interface {
	Load() (State, error)
	Save(State) error
}

// FileStore keeps State in one JSON file, replaced atomically through fsys
// (journal.WriteFileAtomic): after a power cut it holds the old or the new
// state.
type FileStore struct {
	FS   journal.FS
	Path string
}

// Load reads the state file; a missing file is the zero State.
func (s *FileStore) Load() (State, error) {
	var st State
	b, err := journal.ReadFile(s.FS, s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("channel: state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("channel: state %s: %w", s.Path, err)
	}
	return st, nil
}

// Save replaces the state file.
func (s *FileStore) Save(st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("channel: state: %w", err)
	}
	if err := s.FS.MkdirAll(filepath.Dir(s.Path), 0o755); err != nil {
		return fmt.Errorf("channel: state: %w", err)
	}
	if err := journal.WriteFileAtomic(s.FS, s.Path, b); err != nil {
		return fmt.Errorf("channel: state: %w", err)
	}
	return nil
}

// MemStore keeps State in memory (tests, the fleet benchmark).
type MemStore struct {
	mu sync.Mutex
	st State
}

// Load returns the saved state.
func (m *MemStore) Load() (State, error) { m.mu.Lock(); defer m.mu.Unlock(); return m.st, nil }

// Save replaces the saved state.
func (m *MemStore) Save(st State) error { m.mu.Lock(); defer m.mu.Unlock(); m.st = st; return nil }

// TrustedNow is the time expiry is judged at: the device clock, or the
// last accepted document's creation time if the clock is behind it (a
// clock reset to 1970 must not revive expired documents).
func TrustedNow(st State, clock time.Time) time.Time {
	if clock.Before(st.Created) {
		return st.Created
	}
	return clock
}

// Accept applies the replay, compatible and expiry rules to a verified,
// parsed document (docBytes are the exact bytes Open returned) and returns
// the state to persist. The state never moves backwards.
func Accept(st State, d *Document, docBytes []byte, compatible string, clock time.Time) (State, error) {
	sum := sha256.Sum256(docBytes)
	digest := hex.EncodeToString(sum[:])
	if d.Compatible != compatible {
		return st, fmt.Errorf("%w: document for %q, device is %q", ErrIncompatible, d.Compatible, compatible)
	}
	switch {
	case d.Serial < st.Serial:
		return st, fmt.Errorf("%w: serial %d, accepted %d before", ErrReplay, d.Serial, st.Serial)
	case d.Serial == st.Serial && digest != st.DocSHA256:
		return st, fmt.Errorf("%w: serial %d", ErrEquivocation, d.Serial)
	}
	if err := CheckExpiry(st, d, clock); err != nil {
		return st, err
	}
	created := d.Created.UTC()
	if created.Before(st.Created) {
		created = st.Created // the trusted floor of the clock never goes down
	}
	return State{Serial: d.Serial, Created: created, DocSHA256: digest}, nil
}

// CheckExpiry refuses d once TrustedNow has reached its expiry time.
func CheckExpiry(st State, d *Document, clock time.Time) error {
	now := TrustedNow(st, clock)
	if !now.Before(d.Expires) {
		return fmt.Errorf("%w at %s (serial %d; now %s)", ErrExpired, d.Expires.UTC().Format(time.RFC3339), d.Serial, now.UTC().Format(time.RFC3339))
	}
	return nil
}
