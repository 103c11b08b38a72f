package slot

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directAlign satisfies O_DIRECT's buffer, offset and length alignment for
// every logical block size up to 4 KiB.
const directAlign = 4096

// directReader reads a block device or file with O_DIRECT: every read goes
// to the medium (after the kernel writes back dirty pages in the range), no
// matter what the page cache holds.
type directReader struct{ f *os.File }

func openDirect(f *os.File) (*directReader, error) {
	// Reopen the already-open file, not its path: a symlink cannot have been
	// swapped in between.
	df, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &directReader{f: df}, nil
}

func (d *directReader) Close() error { return d.f.Close() }

// readAt reads want bytes at off (a multiple of directAlign) into b, whose
// length is a multiple of directAlign and at least want rounded up.
func (d *directReader) readAt(b []byte, off int64, want int) (int, error) {
	n := (want + directAlign - 1) / directAlign * directAlign
	got := 0
	for got < want {
		m, err := d.f.ReadAt(b[got:n], off+int64(got))
		got += m
		if got >= want {
			break
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return got, fmt.Errorf("slot: read-back at %d: %w", off+int64(got), err)
		}
		if m%directAlign != 0 {
			return got, fmt.Errorf("slot: read-back at %d: short unaligned read", off+int64(got))
		}
	}
	return want, nil
}

// alignedBuf returns n bytes whose address is directAlign-aligned.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[skip : skip+n : skip+n]
}

// hashPipe hashes the stream fill produces, reading the next buffer while
// the previous one is hashed. fill returns the bytes it put in b; io.EOF
// (with n == 0) ends the stream.
func hashPipe(ctx context.Context, bufs [2][]byte, fill func(b []byte, off int64) (int, error)) ([]byte, int64, error) {
	type chunk struct {
		b   []byte
		err error
	}
	full := make(chan chunk, 1)
	free := make(chan []byte, 2)
	free <- bufs[0]
	free <- bufs[1]
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(full)
		for off := int64(0); ; {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			n, err := fill(b, off)
			if err == nil {
				err = ctx.Err()
			}
			if err == io.EOF && n == 0 {
				return
			}
			select {
			case full <- chunk{b: b[:n], err: err}:
			case <-stop:
				return
			}
			if err != nil && err != io.EOF {
				return
			}
			off += int64(n)
		}
	}()
	h := sha256.New()
	var total int64
	for c := range full {
		if c.err != nil && c.err != io.EOF {
			return nil, total, c.err
		}
		h.Write(c.b)
		total += int64(len(c.b))
		free <- c.b[:cap(c.b)]
	}
	if err := ctx.Err(); err != nil {
		return nil, total, err
	}
	return h.Sum(nil), total, nil
}

// hashDirect hashes [0, size) of f with O_DIRECT reads.
func hashDirect(ctx context.Context, d *directReader, size int64) ([]byte, error) {
	bufs := [2][]byte{alignedBuf(verifyChunk), alignedBuf(verifyChunk)}
	sum, n, err := hashPipe(ctx, bufs, func(b []byte, off int64) (int, error) {
		want := min(int64(len(b)), size-off)
		if want <= 0 {
			return 0, io.EOF
		}
		return d.readAt(b, off, int(want))
	})
	if err == nil && n != size {
		err = fmt.Errorf("slot: read-back hashed %d of %d bytes", n, size)
	}
	return sum, err
}
