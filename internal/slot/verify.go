package slot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
)

const verifyChunk = 4 << 20

// cacheDropper is implemented by targets whose reads may be served from the
// page cache.
type cacheDropper interface{ dropCache() error }

// mediumHasher is implemented by targets with a faster or more direct way
// to hash what is on the medium than ReadAt through the page cache.
type mediumHasher interface {
	hashMedium(ctx context.Context, size int64) ([]byte, error)
}

// prover is implemented by targets whose last writer may have compared
// every chunk it wrote with the medium (see OpenVerifiedWriter). ok false:
// no such proof for this call, hash the medium.
type prover interface {
	proved(ctx context.Context, size int64, sum []byte) (ok bool, err error)
}

// healthReporter is implemented by targets that know an update was
// interrupted (UBI's corrupted flag).
type healthReporter interface{ health() error }

// VerifyReadBack proves the first size bytes of t hash to sha256sum, reading
// from the medium rather than from caches. A slot is only good if this
// passes; ErrReadBackMismatch otherwise.
//
// When the last writer of t was opened with OpenVerifiedWriter for the same
// sha256sum, started at 0, closed cleanly at size and compared every chunk
// it wrote with what the medium returned (block devices, O_DIRECT writer),
// VerifyReadBack only waits for the last comparisons: the caller checked
// the stream against sha256sum, the medium returned that stream byte for
// byte. That proof is used once. In every other case (resume, buffered
// writer, file, Options.FullReadBack, a second call) it reads all size
// bytes back and hashes them.
func VerifyReadBack(ctx context.Context, t Target, size int64, sha256sum []byte) error {
	if len(sha256sum) != sha256.Size {
		return fmt.Errorf("slot: read-back needs a %d-byte SHA-256, got %d bytes", sha256.Size, len(sha256sum))
	}
	if err := CheckFit(t, size); err != nil {
		return err
	}
	if h, ok := t.(healthReporter); ok {
		if err := h.health(); err != nil {
			return err
		}
	}
	if p, ok := t.(prover); ok {
		if ok, err := p.proved(ctx, size, sha256sum); ok {
			return err
		}
	}
	var got []byte
	var err error
	if m, ok := t.(mediumHasher); ok {
		got, err = m.hashMedium(ctx, size)
	} else {
		if d, ok := t.(cacheDropper); ok {
			if err := d.dropCache(); err != nil {
				return err
			}
		}
		got, err = Hash(ctx, t, size)
	}
	if err != nil {
		return err
	}
	if !bytes.Equal(got, sha256sum) {
		return fmt.Errorf("%w: device has sha256 %x over %d bytes, want %x", ErrReadBackMismatch, got, size, sha256sum)
	}
	return nil
}

// Hash returns the SHA-256 of the first size bytes of t, as ReadAt sees
// them. Reading and hashing overlap.
func Hash(ctx context.Context, t Target, size int64) ([]byte, error) {
	if err := CheckFit(t, size); err != nil {
		return nil, err
	}
	n := int(min(verifyChunk, max(size, 1)))
	sum, got, err := hashPipe(ctx, [2][]byte{make([]byte, n), make([]byte, n)}, func(b []byte, off int64) (int, error) {
		want := min(int64(len(b)), size-off)
		if want <= 0 {
			return 0, io.EOF
		}
		m, err := t.ReadAt(b[:want], off)
		if int64(m) == want {
			return m, nil // io.EOF with a full read is fine
		}
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return m, fmt.Errorf("slot: read-back at %d: %w", off+int64(m), err)
	})
	if err == nil && got != size {
		err = fmt.Errorf("slot: read-back hashed %d of %d bytes", got, size)
	}
	return sum, err
}
