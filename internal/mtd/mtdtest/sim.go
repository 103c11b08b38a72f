// Package mtdtest simulates NOR and NAND flash with the rules that make raw
// flash hard, so writers and the boot env store are tested against them
// rather than against a forgiving file:
//
//   - programming only clears bits: new = old & data;
//   - erase sets a whole erase block to 0xFF, and only whole blocks;
//   - writes must be aligned to and a multiple of the write (page) size;
//   - factory bad blocks and blocks that wear out after N operations: an
//     erase or program touching one fails with mtd.ErrBadBlock; IsBad only
//     reports blocks in the bad block table (factory, or marked by the caller
//     with MarkBadBlock), as on a real NAND;
//   - power cuts after N erase/program operations or after N bytes: the
//     operation being cut leaves a torn page (NAND: random bytes; NOR: a
//     random subset of the bits that should have been cleared, over the whole
//     write buffer in flight when Info.WriteBufSize is set, since a buffered
//     program clears them together) or a partially erased block; what came
//     before the torn part is programmed, what comes after untouched, and
//     every later call fails with ErrPowerCut until PowerOn.
//
// Contents live in memory or, with OpenFile, in a file, so a test can corrupt
// the medium behind the writer's back. The bad block table is not part of the
// file (on NAND it lives in spare areas); it lasts as long as the Sim. A Sim is
// safe for concurrent use.
package mtdtest

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"

	"github.com/otadev/otad/internal/mtd"
)

// ErrPowerCut is returned by every call made while the power is cut.
var ErrPowerCut = errors.New("mtdtest: power cut")

// OpKind names a recorded operation.
type OpKind int

// Recorded operation kinds.
const (
	OpRead OpKind = iota
	OpWrite
	OpErase
	OpMarkBad
)

func (k OpKind) String() string {
	return [...]string{"read", "write", "erase", "markbad"}[k]
}

// Op is one recorded call. Err is the error it returned, if any.
type Op struct {
	Kind     OpKind
	Off, Len int64
	Err      error
}

// Option configures a Sim.
type Option func(*Sim)

// WithSeed makes torn pages reproducible per seed (default seed 1).
func WithSeed(seed uint64) Option {
	return func(s *Sim) { s.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }
}

// WithBadBlocks marks factory bad blocks.
func WithBadBlocks(blocks ...int) Option {
	return func(s *Sim) {
		for _, b := range blocks {
			s.bad[b] = true
			s.worn[b] = true
		}
	}
}

// Sim is a simulated flash device implementing mtd.Device,
// mtd.BadBlockMarker and bootenv.Medium.
type Sim struct {
	mu    sync.Mutex
	info  mtd.Info
	store storage
	file  *os.File
	rng   *rand.Rand

	bad  map[int]bool // in the bad block table: IsBad reports it
	worn map[int]bool // physically failing: erase/program fail
	grow map[int]int  // block -> op count at which it wears out

	ops   int   // erase + program operations attempted on the flash
	bytes int64 // bytes erased + programmed

	cutOps   int   // cut during op number cutOps+1; -1 = disarmed
	cutBytes int64 // cut at this byte count; -1 = disarmed
	cut      bool

	log []Op
}

var _ mtd.Device = (*Sim)(nil)
var _ mtd.BadBlockMarker = (*Sim)(nil)

// New returns an erased in-memory flash device. It panics on geometry that
// mtd.Info.Validate rejects: that is a bug in the test, not input.
func New(info mtd.Info, opts ...Option) *Sim {
	if err := info.Validate(); err != nil {
		panic(err)
	}
	m := make(mem, info.Size)
	for i := range m {
		m[i] = 0xff
	}
	return newSim(info, m, opts)
}

// OpenFile returns a device whose contents live in path: an existing file of
// exactly info.Size bytes is used as is, a missing one is created erased.
func OpenFile(path string, info mtd.Info, opts ...Option) (*Sim, error) {
	if err := info.Validate(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("mtdtest: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mtdtest: %w", err)
	}
	switch st.Size() {
	case info.Size:
	case 0:
		ff := make([]byte, info.EraseSize)
		for i := range ff {
			ff[i] = 0xff
		}
		for off := int64(0); off < info.Size; off += info.EraseSize {
			if _, err := f.WriteAt(ff, off); err != nil {
				f.Close()
				return nil, fmt.Errorf("mtdtest: %w", err)
			}
		}
	default:
		f.Close()
		return nil, fmt.Errorf("mtdtest: %s has %d bytes, device is %d", path, st.Size(), info.Size)
	}
	s := newSim(info, f, opts)
	s.file = f
	return s, nil
}

func newSim(info mtd.Info, st storage, opts []Option) *Sim {
	s := &Sim{
		info: info, store: st,
		bad: map[int]bool{}, worn: map[int]bool{}, grow: map[int]int{},
		cutOps: -1, cutBytes: -1,
	}
	WithSeed(1)(s)
	for _, o := range opts {
		o(s)
	}
	return s
}

// Close releases the backing file, if any.
func (s *Sim) Close() error {
	if s.file != nil {
		return s.file.Close()
	}
	return nil
}

// Info returns the geometry.
func (s *Sim) Info() mtd.Info { return s.info }

// MarkBad marks block as a factory bad block.
func (s *Sim) MarkBad(block int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bad[block] = true
	s.worn[block] = true
}

// GrowBad makes block wear out once Ops() reaches atOps: from then on erase
// and program touching it fail with mtd.ErrBadBlock, and IsBad reports it
// only after someone calls MarkBadBlock, as on real NAND.
func (s *Sim) GrowBad(block, atOps int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grow[block] = atOps
}

// CutAfter arms a power cut: the next n erase/program operations complete,
// the one after is torn and cut.
func (s *Sim) CutAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cutOps = s.ops + n
}

// CutAfterBytes arms a power cut once n more bytes have been erased or
// programmed; the operation crossing that point is torn there.
func (s *Sim) CutAfterBytes(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cutBytes = s.bytes + n
}

// PowerOn restores power and disarms pending cuts.
func (s *Sim) PowerOn() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut = false
	s.cutOps, s.cutBytes = -1, -1
}

// IsCut reports whether the power is cut.
func (s *Sim) IsCut() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cut
}

// Ops is the number of erase and program operations that reached the flash.
func (s *Sim) Ops() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ops
}

// Log returns a copy of the recorded operations.
func (s *Sim) Log() []Op {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Op(nil), s.log...)
}

// ResetLog forgets the recorded operations.
func (s *Sim) ResetLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
}

// Bytes returns a copy of the whole medium, ignoring power and rules.
func (s *Sim) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := make([]byte, s.info.Size)
	s.store.ReadAt(b, 0)
	return b
}

// Poke overwrites the medium directly, ignoring every rule: corruption
// behind the writer's back.
func (s *Sim) Poke(off int64, p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off < 0 || off+int64(len(p)) > s.info.Size {
		return mtd.ErrRange
	}
	_, err := s.store.WriteAt(p, off)
	return err
}

func (s *Sim) record(k OpKind, off, n int64, err error) {
	s.log = append(s.log, Op{Kind: k, Off: off, Len: n, Err: err})
}

// ReadAt reads the medium as is (bad blocks included).
func (s *Sim) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return 0, ErrPowerCut
	}
	if off < 0 {
		return 0, fmt.Errorf("%w: read at %d", mtd.ErrRange, off)
	}
	if off >= s.info.Size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), s.info.Size-off)
	if _, err := s.store.ReadAt(p[:n], off); err != nil {
		return 0, fmt.Errorf("mtdtest: %w", err)
	}
	s.record(OpRead, off, n, nil)
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// IsBad reports whether the block holding off is in the bad block table.
func (s *Sim) IsBad(off int64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return false, ErrPowerCut
	}
	if off < 0 || off >= s.info.Size {
		return false, fmt.Errorf("%w: bad block query at %#x", mtd.ErrRange, off)
	}
	if s.info.Kind != mtd.NAND {
		return false, nil
	}
	return s.bad[int(off/s.info.EraseSize)], nil
}

// MarkBadBlock records a grown bad block, like MEMSETBADBLOCK.
func (s *Sim) MarkBadBlock(off int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return ErrPowerCut
	}
	if off < 0 || off >= s.info.Size {
		return fmt.Errorf("%w: mark bad at %#x", mtd.ErrRange, off)
	}
	if s.info.Kind != mtd.NAND {
		return fmt.Errorf("mtdtest: %s has no bad block table", s.info.Kind)
	}
	b := int(off / s.info.EraseSize)
	s.bad[b] = true
	s.worn[b] = true
	s.record(OpMarkBad, int64(b)*s.info.EraseSize, s.info.EraseSize, nil)
	return nil
}
