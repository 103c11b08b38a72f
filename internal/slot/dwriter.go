package slot

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// directWriter writes a block device with O_DIRECT from aligned chunk
// buffers: one chunk goes to the device while the caller fills the next.
// No page cache copy and no dirty pages, so the CPU is left to the read-back
// hash, progress is what the device has, and a chunk read back afterwards
// can only come from the device.
//
// The offset of buffer start is always a multiple of directAlign. A Sync
// in the middle of a sector writes the unaligned remainder through the page
// cache and keeps it in the buffer, so the next direct write covers it again.
type directWriter struct {
	ctx    context.Context
	t      *fdTarget
	df     *os.File      // O_WRONLY|O_DIRECT
	rd     *directReader // SkipUnchanged comparisons
	base   int64         // device offset of cur[0]
	cur    []byte        // chunk being filled
	spare  []byte        // the other chunk buffer, when not in flight
	jobs   chan dwJob
	res    chan dwJob
	flying bool
	err    error
	closed bool
	tr     *trail
}

type dwJob struct {
	b   []byte
	off int64
	err error
}

func newDirectWriter(ctx context.Context, t *fdTarget, off int64) (*directWriter, error) {
	df, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", t.f.Fd()), os.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	n := int(t.o.ChunkSize+directAlign-1) / directAlign * directAlign
	w := &directWriter{
		ctx: ctx, t: t, df: df, base: off,
		cur: alignedBuf(n)[:0], spare: alignedBuf(n),
		jobs: make(chan dwJob), res: make(chan dwJob),
	}
	if t.o.SkipUnchanged {
		if w.rd, err = openDirect(t.f); err != nil {
			df.Close()
			return nil, err
		}
	}
	go w.io()
	return w, nil
}

// io is the one goroutine writing chunks, in order.
func (w *directWriter) io() {
	var cmp []byte
	for j := range w.jobs {
		if w.rd != nil {
			if cmp == nil {
				cmp = alignedBuf(cap(j.b))
			}
			if n, err := w.rd.readAt(cmp, j.off, len(j.b)); err == nil && n == len(j.b) && bytes.Equal(cmp[:n], j.b) {
				w.res <- j
				continue
			}
		}
		for done := 0; done < len(j.b); {
			n, err := w.df.WriteAt(j.b[done:], j.off+int64(done))
			if err != nil {
				j.err = fmt.Errorf("slot: write at %d: %w", j.off+int64(done), err)
				break
			}
			done += n
		}
		w.res <- j
	}
}

// wait collects the chunk in flight.
func (w *directWriter) wait() error {
	if !w.flying {
		return w.err
	}
	j := <-w.res
	w.flying = false
	w.spare = j.b[:cap(j.b)]
	if j.err != nil {
		return w.fail(j.err)
	}
	if w.tr != nil {
		w.tr.publish(j.off + int64(len(j.b)))
	}
	return w.err
}

func (w *directWriter) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	if w.tr != nil {
		w.tr.abort(err)
	}
	return w.err
}

// submit hands the full current chunk to the I/O goroutine.
func (w *directWriter) submit() error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if err := w.wait(); err != nil {
		return err
	}
	w.jobs <- dwJob{b: w.cur, off: w.base}
	w.flying = true
	w.base += int64(len(w.cur))
	w.cur, w.spare = w.spare[:0], nil
	return nil
}

func (w *directWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	if end := w.base + int64(len(w.cur)) + int64(len(p)); end > w.t.size {
		return 0, fmt.Errorf("%w: write would end at %d, slot has %d bytes", ErrTooLarge, end, w.t.size)
	}
	done := 0
	for done < len(p) {
		n := copy(w.cur[len(w.cur):cap(w.cur)], p[done:])
		w.cur = w.cur[:len(w.cur)+n]
		done += n
		if len(w.cur) == cap(w.cur) {
			if err := w.submit(); err != nil {
				return done, err
			}
		}
	}
	return done, nil
}

// Sync writes everything buffered and flushes the device cache.
func (w *directWriter) Sync() error {
	if w.closed {
		return ErrClosed
	}
	if err := w.wait(); err != nil {
		return err
	}
	aligned := len(w.cur) / directAlign * directAlign
	if aligned > 0 {
		if err := writeAll(w.df, w.cur[:aligned], w.base); err != nil {
			return w.fail(err)
		}
		rest := copy(w.cur, w.cur[aligned:])
		w.cur = w.cur[:rest]
		w.base += int64(aligned)
	}
	if len(w.cur) > 0 {
		if err := writeAll(w.t.f, w.cur, w.base); err != nil {
			return w.fail(err)
		}
	}
	if err := unix.Fdatasync(int(w.t.f.Fd())); err != nil {
		return w.fail(fmt.Errorf("slot: sync: %w", err))
	}
	if w.tr != nil {
		w.tr.publish(w.base + int64(len(w.cur)))
	}
	return nil
}

// Close is Sync, then the I/O goroutine ends; the target stays open.
func (w *directWriter) Close() error {
	if w.closed {
		return ErrClosed
	}
	err := w.Sync()
	w.release()
	if w.tr != nil {
		if err != nil {
			w.tr.abort(err)
		} else {
			w.tr.finish(w.base + int64(len(w.cur)))
		}
	}
	return err
}

func (w *directWriter) release() {
	w.closed = true
	w.wait()
	close(w.jobs)
	w.df.Close()
	if w.rd != nil {
		w.rd.Close()
	}
}

// abandon ends a writer nobody closed: no sync, nothing more written.
func (w *directWriter) abandon() {
	if w.closed {
		return
	}
	w.release()
	if w.tr != nil {
		w.tr.abort(ErrClosed)
	}
}

func writeAll(f *os.File, b []byte, off int64) error {
	for done := 0; done < len(b); {
		n, err := f.WriteAt(b[done:], off+int64(done))
		if err != nil {
			return fmt.Errorf("slot: write at %d: %w", off+int64(done), err)
		}
		done += n
	}
	return nil
}
