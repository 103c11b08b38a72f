package bootenv

import (
	"bytes"
	"fmt"
	"sync"
)

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
