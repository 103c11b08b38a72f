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

// healthReporter is implemented by targets that know an update was
// interrupted (UBI's corrupted flag).
type healthReporter interface{ health() error }

// VerifyReadBack proves the first size bytes of t hash to sha256sum, reading
// from the medium rather than from caches. A slot is only good if this
// passes; ErrReadBackMismatch otherwise.
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
	if d, ok := t.(cacheDropper); ok {
		if err := d.dropCache(); err != nil {
			return err
		}
	}
	got, err := Hash(ctx, t, size)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, sha256sum) {
		return fmt.Errorf("%w: device has sha256 %x over %d bytes, want %x", ErrReadBackMismatch, got, size, sha256sum)
	}
	return nil
}

// Hash returns the SHA-256 of the first size bytes of t. Reading and hashing
// overlap: one goroutine reads the next chunk while the caller hashes.
func Hash(ctx context.Context, t Target, size int64) ([]byte, error) {
	if err := CheckFit(t, size); err != nil {
		return nil, err
	}
	type chunk struct {
		b   []byte
		err error
	}
	full := make(chan chunk, 1)
	free := make(chan []byte, 2)
	for range 2 {
		free <- make([]byte, min(verifyChunk, max(size, 1)))
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(full)
		for off := int64(0); off < size; {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			if err := ctx.Err(); err != nil {
				full <- chunk{err: err}
				return
			}
			b = b[:min(int64(cap(b)), size-off)]
			n, err := t.ReadAt(b, off)
			if n == len(b) {
				err = nil // io.EOF with a full read is fine
			} else if err == nil || err == io.EOF {
				err = fmt.Errorf("slot: read-back: short read at %d: %w", off+int64(n), io.ErrUnexpectedEOF)
			}
			select {
			case full <- chunk{b: b, err: err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
			off += int64(n)
		}
	}()
	h := sha256.New()
	for c := range full {
		if c.err != nil {
			return nil, c.err
		}
		h.Write(c.b)
		free <- c.b[:cap(c.b)]
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}
