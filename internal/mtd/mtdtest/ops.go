package mtdtest

import (
	"fmt"

	"github.com/otadev/otad/internal/mtd"
)

// storage holds the raw medium.
type storage interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
}

type mem []byte

func (m mem) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m mem) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

// begin counts one erase/program operation of n bytes and decides whether
// the power is cut during it: it returns the offset within the operation at
// which it tears, or -1.
func (s *Sim) begin(n int64) int64 {
	tear := int64(-1)
	if s.cutOps >= 0 && s.ops >= s.cutOps {
		tear = s.rng.Int64N(n)
	}
	if s.cutBytes >= 0 && s.bytes+n > s.cutBytes {
		if t := max(s.cutBytes-s.bytes, 0); tear < 0 || t < tear {
			tear = t
		}
	}
	s.ops++
	s.bytes += n
	return tear
}

// wornOut reports whether block fails erase and program right now.
func (s *Sim) wornOut(block int) bool {
	if at, ok := s.grow[block]; ok && s.ops > at {
		s.worn[block] = true
	}
	return s.worn[block]
}

// WriteAt programs p at off: every byte becomes old & new.
func (s *Sim) WriteAt(p []byte, off int64) (n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return 0, ErrPowerCut
	}
	size := int64(len(p))
	defer func() { s.record(OpWrite, off, size, err) }()
	if err := mtd.CheckWrite(s.info, off, size); err != nil {
		return 0, err
	}
	if size == 0 {
		return 0, nil
	}
	tear := s.begin(size)
	es := s.info.EraseSize
	for pos := int64(0); pos < size; {
		abs := off + pos
		block := int(abs / es)
		end := min(size, pos+es-abs%es) // end of this block's segment
		if s.wornOut(block) {
			return int(pos), fmt.Errorf("%w: program at %#x failed", mtd.ErrBadBlock, abs)
		}
		if tear >= pos && tear < end {
			lo, hi := s.tornSpan(off, size, tear)
			if err := s.program(off+pos, p[pos:lo]); err != nil {
				return int(pos), err
			}
			if err := s.tearPage(off+lo, p[lo:hi]); err != nil {
				return int(lo), err
			}
			s.cut = true
			return int(lo), ErrPowerCut
		}
		if err := s.program(abs, p[pos:end]); err != nil {
			return int(pos), err
		}
		pos = end
	}
	return int(size), nil
}

// tornSpan is the part [lo, hi) of a write of size bytes at off that a cut
// at byte tear of it leaves torn: the page being programmed, or on NOR with
// a write buffer the whole buffered program in flight (the chip clears the
// bits of the buffer together, in no defined order). Write buffers divide
// the erase size (Info.Validate), so the span never leaves the erase block.
func (s *Sim) tornSpan(off, size, tear int64) (lo, hi int64) {
	u := s.info.WriteSize
	if s.info.Kind == mtd.NOR && s.info.WriteBufSize > 0 {
		u = s.info.WriteBufSize
	}
	abs := off + tear
	start := abs - abs%u
	return max(start-off, 0), min(start+u-off, size)
}

func (s *Sim) program(off int64, p []byte) error {
	if len(p) == 0 {
		return nil
	}
	old := make([]byte, len(p))
	if _, err := s.store.ReadAt(old, off); err != nil {
		return fmt.Errorf("mtdtest: %w", err)
	}
	for i := range old {
		old[i] &= p[i]
	}
	if _, err := s.store.WriteAt(old, off); err != nil {
		return fmt.Errorf("mtdtest: %w", err)
	}
	return nil
}

// tearPage leaves the page (or NOR write buffer) an interrupted program
// would: on NAND the page reads back as garbage; on NOR each bit that should
// have been cleared may or may not be, and bits programmed with the value
// they already have stay as they are.
func (s *Sim) tearPage(off int64, want []byte) error {
	b := make([]byte, len(want))
	if _, err := s.store.ReadAt(b, off); err != nil {
		return fmt.Errorf("mtdtest: %w", err)
	}
	for i := range b {
		r := byte(s.rng.Uint32())
		if s.info.Kind == mtd.NAND {
			b[i] = r
		} else {
			b[i] &= want[i] | r
		}
	}
	_, err := s.store.WriteAt(b, off)
	return err
}

// Erase sets whole erase blocks to 0xFF.
func (s *Sim) Erase(off, n int64) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return ErrPowerCut
	}
	defer func() { s.record(OpErase, off, n, err) }()
	if err := mtd.CheckErase(s.info, off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	tear := s.begin(n)
	es := s.info.EraseSize
	ff := make([]byte, es)
	for i := range ff {
		ff[i] = 0xff
	}
	for pos := int64(0); pos < n; pos += es {
		block := int((off + pos) / es)
		if s.wornOut(block) {
			return fmt.Errorf("%w: erase of block %d failed", mtd.ErrBadBlock, block)
		}
		if tear >= pos && tear < pos+es {
			// Partially erased: some bits already back to 1, others not.
			b := make([]byte, es)
			if _, err := s.store.ReadAt(b, off+pos); err != nil {
				return fmt.Errorf("mtdtest: %w", err)
			}
			for i := range b {
				b[i] |= byte(s.rng.Uint32())
			}
			if _, err := s.store.WriteAt(b, off+pos); err != nil {
				return fmt.Errorf("mtdtest: %w", err)
			}
			s.cut = true
			return ErrPowerCut
		}
		if _, err := s.store.WriteAt(ff, off+pos); err != nil {
			return fmt.Errorf("mtdtest: %w", err)
		}
	}
	return nil
}
