// Package journal keeps otad's persistent install state in the data
// directory: one install record (journal.json) and one status record per
// slot (slot-A.json, slot-B.json).
//
// Invariants: every record is replaced atomically (WriteFileAtomic: temp,
// fsync, rename, fsync dir), so after a power cut each file holds a complete
// old or new record; a leftover .tmp is ignored. The engine saves the record
// BEFORE each step that cannot be undone, so on start it can always tell
// what may have happened. A record that does not parse is reported as
// ErrCorrupt rather than guessed at. This package does not log.
package journal

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// State is where an install stands.
type State string

// Install states, in the order an install passes through them.
const (
	StateIdle          State = "idle"           // nothing recorded
	StateWriting       State = "writing"        // target may hold a partial image; never arm it
	StateWritten       State = "written"        // target fully written and read back
	StatePendingReboot State = "pending-reboot" // target armed in the boot env
	StateConfirming    State = "confirming"     // booted into the target, health check running
	StateCommitted     State = "committed"      // target confirmed and committed
	StateFailed        State = "failed"         // install failed or was cancelled; target is bad
	StateRolledBack    State = "rolled-back"    // target failed its trial boot; previous slot runs
)

// ErrCorrupt means a record exists but cannot be parsed.
var ErrCorrupt = errors.New("journal: record corrupt")

// Bundle identifies the bundle an install came from.
type Bundle struct {
	Identity        string `json:"identity"` // hex sha256 of the signed manifest
	Version         string `json:"version"`
	SecurityVersion uint64 `json:"security_version"`
	Compatible      string `json:"compatible,omitempty"`
	Source          string `json:"source"`
	ImageSHA256     string `json:"image_sha256,omitempty"`
	ImageSize       int64  `json:"image_size,omitempty"`
}

// Resume is how far the slot write got with everything up to it durable.
type Resume struct {
	Image  int   `json:"image"`  // index of the image being written
	Chunks int   `json:"chunks"` // chunks of that image written and synced
	Bytes  int64 `json:"bytes"`  // slot offset those chunks end at
}

// Record is the install record.
type Record struct {
	State     State     `json:"state"`
	Tx        string    `json:"tx,omitempty"`
	Target    string    `json:"target,omitempty"` // slot name being installed
	Active    string    `json:"active,omitempty"` // slot the install ran from
	Bundle    Bundle    `json:"bundle"`
	Resume    Resume    `json:"resume"`
	Resumes   int       `json:"resumes"` // times this install was resumed after a restart
	LastError string    `json:"last_error,omitempty"`
	Reason    string    `json:"reason,omitempty"` // why a slot was rolled back or failed health
	Updated   time.Time `json:"updated"`
}

// SlotState is the health of one slot.
type SlotState string

// Slot states.
const (
	SlotUnknown SlotState = ""
	SlotGood    SlotState = "good"
	SlotBad     SlotState = "bad"
	SlotPending SlotState = "pending" // installed, waiting for its trial boot
)

// SlotRecord is what otad knows about the content of one slot.
type SlotRecord struct {
	Name      string    `json:"name"`
	State     SlotState `json:"state"`
	Version   string    `json:"version,omitempty"`
	SHA256    string    `json:"sha256,omitempty"`
	Bundle    string    `json:"bundle,omitempty"` // bundle identity
	Installed time.Time `json:"installed"`
	Activated time.Time `json:"activated"`
	Reason    string    `json:"reason,omitempty"`
	// CommittedSecurityVersion is the bundle security version this slot
	// was committed with; the engine raised the anti-rollback floor to it
	// before writing it, so it is a lower bound of the floor (floor.JournalBound).
	CommittedSecurityVersion uint64 `json:"committed_security_version,omitempty"`
}

// Journal reads and writes the records in Dir through FS.
type Journal struct {
	FS  FS
	Dir string
}

// New returns a journal on the real file system; it creates dir.
func New(dir string) (*Journal, error) {
	j := &Journal{FS: OSFS{}, Dir: dir}
	if err := j.FS.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return j, nil
}

func (j *Journal) path(name string) string { return filepath.Join(j.Dir, name) }

// Load returns the install record; a missing file is an idle record.
func (j *Journal) Load() (*Record, error) {
	r := &Record{}
	ok, err := j.load("journal.json", r)
	if err != nil {
		return nil, err
	}
	if !ok || r.State == "" {
		r.State = StateIdle
	}
	return r, nil
}

// Save replaces the install record atomically and durably.
func (j *Journal) Save(r *Record) error {
	return j.save("journal.json", r)
}

// LoadSlot returns the status record of slot name (zero record if none).
func (j *Journal) LoadSlot(name string) (*SlotRecord, error) {
	r := &SlotRecord{}
	if _, err := j.load(slotFile(name), r); err != nil {
		return nil, err
	}
	r.Name = name
	return r, nil
}

// SaveSlot replaces the status record of r.Name atomically and durably.
func (j *Journal) SaveSlot(r *SlotRecord) error {
	if r.Name == "" || filepath.Base(r.Name) != r.Name {
		return fmt.Errorf("journal: bad slot name %q", r.Name)
	}
	return j.save(slotFile(r.Name), r)
}

// UpdateSlot loads, changes and saves one slot record.
func (j *Journal) UpdateSlot(name string, fn func(*SlotRecord)) error {
	r, err := j.LoadSlot(name)
	if err != nil {
		return err
	}
	fn(r)
	return j.SaveSlot(r)
}

func slotFile(name string) string { return "slot-" + name + ".json" }

func (j *Journal) load(name string, v any) (bool, error) {
	b, err := ReadFile(j.FS, j.path(name))
	if isNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("journal: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%w: %s: %v", ErrCorrupt, name, err)
	}
	return true, nil
}

func (j *Journal) save(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if err := WriteFileAtomic(j.FS, j.path(name), append(b, '\n')); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}
