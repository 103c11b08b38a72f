package delta

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Diff section encodings.
const (
	diffRaw         = 0 // the diff bytes themselves
	diffBzip2       = 1 // uvarint length, then a bzip2 stream of the diff bytes
	diffBzip2Sparse = 2 // uvarint length, then a bzip2 stream of sparse tokens
	diffSparse      = 3 // sparse tokens in the body itself (coded by its zstd)
)

// diffSource supplies a window's diff bytes to its ADD operations.
type diffSource interface {
	add(b []byte, pos int64) error // add the next len(b) diff bytes to b (at image offset pos)
	finish() error                 // the section must end exactly here
}

// openDiff reads the diff section header and returns its reader.
func (w *windowApplier) openDiff() (diffSource, error) {
	s := w.s
	enc, err := s.uvarint("diff encoding")
	if err != nil {
		return nil, err
	}
	if enc == diffRaw {
		w.raw = rawDiff{s}
		return &w.raw, nil
	}
	if enc == diffSparse {
		// The tokens say how long they are: exactly the window's ADD bytes.
		w.sparse = sparseDiff{r: s.r}
		return &w.sparse, nil
	}
	if enc != diffBzip2 && enc != diffBzip2Sparse {
		return nil, fmt.Errorf("%w: diff encoding %d", ErrMalformed, enc)
	}
	n, err := s.uvarint("diff length")
	if err != nil {
		return nil, err
	}
	if n == 0 || n > 2*uint64(w.h.WindowSize)+1<<16 {
		return nil, fmt.Errorf("%w: diff section of %d bytes", ErrMalformed, n)
	}
	// The decoder keeps at most 900,000 × 4 bytes of block state, as the
	// stream header (level 1-9) declares, reused by every window.
	if err := w.bz.dec.reset(s.r, int64(n)); err != nil {
		return nil, fmt.Errorf("%w: diff section: %v", ErrMalformed, err)
	}
	if w.bz.r == nil {
		w.bz.r = bufio.NewReaderSize(nil, 16<<10)
	}
	w.bz.r.Reset(&w.bz.dec)
	if enc == diffBzip2 {
		return &w.bz, nil
	}
	w.sparse = sparseDiff{r: w.bz.r, bz: &w.bz}
	return &w.sparse, nil
}

type rawDiff struct{ s *stream }

func (d *rawDiff) add(b []byte, pos int64) error {
	return addFrom(d.s.r, b, pos, func(err error) error { return d.s.bodyErr("diff bytes", err) })
}

func (d *rawDiff) finish() error { return nil }

type bz2Diff struct {
	r   *bufio.Reader // over dec
	dec bz2Reader
}

func (d *bz2Diff) add(b []byte, pos int64) error {
	return addFrom(d.r, b, pos, func(err error) error {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w: diff section: %v", ErrMalformed, err)
	})
}

func (d *bz2Diff) finish() error {
	// The bzip2 stream ends here; reading its end checks its CRCs.
	if d.r.Buffered() > 0 {
		return fmt.Errorf("%w: diff section longer than its window needs", ErrMalformed)
	}
	if err := d.dec.finish(); err != nil {
		return fmt.Errorf("%w: diff section: %v", ErrMalformed, err)
	}
	return nil
}

// sparseDiff decodes tokens "uvarint zeros, uvarint n, n bytes": runs of
// zero diff bytes are skipped instead of being decompressed and added.
type sparseDiff struct {
	r         *bufio.Reader // the tokens: bzip2 output, or the body
	bz        *bz2Diff      // nil: tokens in the body
	zeros, nz uint64        // pending zero bytes, then pending literal diff bytes
}

func (d *sparseDiff) add(b []byte, pos int64) error {
	r := d.r
	for i := 0; i < len(b); {
		if d.zeros == 0 && d.nz == 0 {
			z, n, err := nextToken(r)
			if err != nil || z+n == 0 || z+n < z {
				return fmt.Errorf("%w: diff token: %v", ErrMalformed, err)
			}
			d.zeros, d.nz = z, n
		}
		if d.zeros > 0 {
			k := min(d.zeros, uint64(len(b)-i))
			d.zeros -= k
			i += int(k)
			continue
		}
		k := int(min(d.nz, uint64(len(b)-i), uint64(r.Size())))
		p, err := r.Peek(k)
		if len(p) < k {
			return fmt.Errorf("%w: diff token bytes: %v", ErrMalformed, err)
		}
		addCarry(b, i, p, pos)
		r.Discard(k)
		d.nz -= uint64(k)
		i += k
	}
	return nil
}

// nextToken reads a token's two uvarints, straight from the buffer when
// it holds them (tokens are a few bytes each, and there are many).
func nextToken(r *bufio.Reader) (zeros, n uint64, err error) {
	if r.Buffered() >= 2*binary.MaxVarintLen64 {
		p, _ := r.Peek(2 * binary.MaxVarintLen64)
		z, k1 := binary.Uvarint(p)
		if k1 > 0 {
			if n, k2 := binary.Uvarint(p[k1:]); k2 > 0 {
				r.Discard(k1 + k2)
				return z, n, nil
			}
		}
		return 0, 0, errors.New("bad uvarint")
	}
	z, err1 := binary.ReadUvarint(r)
	n, err2 := binary.ReadUvarint(r)
	return z, n, errors.Join(err1, err2)
}

func (d *sparseDiff) finish() error {
	if d.zeros != 0 || d.nz != 0 {
		return fmt.Errorf("%w: diff tokens run past the window", ErrMalformed)
	}
	if d.bz == nil {
		return nil
	}
	return d.bz.finish()
}

// addCarry adds diff bytes p to b[i:], b starting at image offset pos,
// carrying into the following bytes of the same aligned word (within b),
// whose own diff bytes are zero or are added later: word addition is
// associative, so this equals adding the whole word at once.
func addCarry(b []byte, i int, p []byte, pos int64) {
	carry := 0
	for k := i; k < len(b); k++ {
		if (pos+int64(k))&3 == 0 {
			carry = 0 // a word boundary: carries stop here
			if k >= i+len(p) {
				return
			}
		}
		v := int(b[k]) + carry
		if k < i+len(p) {
			v += int(p[k-i])
		} else if carry == 0 {
			return
		}
		b[k] = byte(v)
		carry = v >> 8
	}
}

// addFrom adds the next len(b) diff bytes from r to b, which starts at
// image offset pos. Chunks read from the buffer end on word boundaries.
func addFrom(r *bufio.Reader, b []byte, pos int64, fail func(error) error) error {
	for len(b) > 0 {
		n := len(b)
		if n > r.Size() {
			n = r.Size() - int((pos+int64(r.Size()))&3)
		}
		d, err := r.Peek(n)
		if len(d) < n {
			return fail(err)
		}
		addDiffWords(b[:n], d, pos)
		r.Discard(n)
		b = b[n:]
		pos += int64(n)
	}
	return nil
}
