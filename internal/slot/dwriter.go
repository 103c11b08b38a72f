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
// No page cache copy and no dirty pages, so progress is what the device
// has, and a chunk read back afterwards can only come from the device.
//
// With a proof (OpenVerifiedWriter from offset 0), each written chunk is
// then re-read and compared on a third goroutine before its buffer is
// reused: three chunk buffers instead of two, plus the proof's read buffer.
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
	bufLen int
	free   chan []byte // chunk buffers not in use
	made   int         // chunk buffers allocated so far
	nbuf   int         // at most this many
	jobs   chan dwJob
	res    chan dwJob
	ioDone chan struct{}
	flying bool
	err    error
	closed bool
	pf     *proof // nil: VerifyReadBack hashes the medium instead
}

type dwJob struct {
	b    []byte
	off  int64
	err  error
	same bool // skip-unchanged read b from the medium: nothing written
}

// newDirectWriter starts a direct writer at off; sum non-nil asks for the
// per-chunk proof (honoured only from offset 0 and without FullReadBack).
func newDirectWriter(ctx context.Context, t *fdTarget, off int64, sum []byte) (*directWriter, error) {
	df, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", t.f.Fd()), os.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	n := int(t.o.ChunkSize+directAlign-1) / directAlign * directAlign
	w := &directWriter{
		ctx: ctx, t: t, df: df, base: off, bufLen: n, nbuf: 2,
		jobs: make(chan dwJob), res: make(chan dwJob), ioDone: make(chan struct{}),
	}
	if t.o.SkipUnchanged {
		if w.rd, err = openDirect(t.f); err != nil {
			df.Close()
			return nil, err
		}
	}
	if sum != nil && off == 0 && !t.o.FullReadBack {
		// Without a second O_DIRECT descriptor there is no proof and
		// VerifyReadBack hashes the medium, as for any other writer.
		if rd, err := openDirect(t.f); err == nil {
			w.nbuf = 3
			w.free = make(chan []byte, w.nbuf)
			w.pf = newProof(rd, sum, off, w.free)
			go w.pf.run(ctx, min(n, compareBuf))
		}
	}
	if w.free == nil {
		w.free = make(chan []byte, w.nbuf)
	}
	w.cur = w.buffer()[:0]
	go w.io()
	return w, nil
}

// buffer returns a free chunk buffer, allocating up to nbuf of them.
func (w *directWriter) buffer() []byte {
	select {
	case b := <-w.free:
		return b
	default:
	}
	if w.made < w.nbuf {
		w.made++
		return alignedBuf(w.bufLen)
	}
	return <-w.free
}

// io is the one goroutine writing chunks, in order. A written chunk goes
// to the proof, which recycles its buffer; without one it is free at once.
func (w *directWriter) io() {
	defer close(w.ioDone)
	var cmp []byte
	for j := range w.jobs {
		if w.rd != nil {
			if cmp == nil {
				cmp = alignedBuf(w.bufLen)
			}
			if n, err := w.rd.readAt(cmp, j.off, len(j.b)); err == nil && n == len(j.b) && bytes.Equal(cmp[:n], j.b) {
				j.same = true
			}
		}
		if !j.same {
			for done := 0; done < len(j.b); {
				n, err := w.df.WriteAt(j.b[done:], j.off+int64(done))
				if err != nil {
					j.err = fmt.Errorf("slot: write at %d: %w", j.off+int64(done), err)
					break
				}
				done += n
			}
		}
		if j.err == nil && w.t.afterWrite != nil {
			w.t.afterWrite(j.off, len(j.b))
		}
		res := dwJob{off: j.off, err: j.err}
		if w.pf != nil && j.err == nil {
			w.pf.q <- j
		} else {
			w.free <- j.b[:cap(j.b)]
		}
		w.res <- res
	}
}

// wait collects the chunk in flight.
func (w *directWriter) wait() error {
	if !w.flying {
		return w.err
	}
	j := <-w.res
	w.flying = false
	if j.err != nil {
		return w.fail(j.err)
	}
	return w.err
}

func (w *directWriter) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// send hands cur[:n] to the I/O goroutine; cur[n:] moves to the front of
// another buffer.
func (w *directWriter) send(n int) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if err := w.wait(); err != nil {
		return err
	}
	if w.pf != nil {
		if err := w.pf.failed(); err != nil {
			return w.fail(err) // no use writing on: the slot is bad
		}
	}
	next := w.buffer()
	rest := copy(next, w.cur[n:])
	w.jobs <- dwJob{b: w.cur[:n], off: w.base}
	w.flying = true
	w.base += int64(n)
	w.cur = next[:rest]
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
			if err := w.send(len(w.cur)); err != nil {
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
	if aligned := len(w.cur) / directAlign * directAlign; aligned > 0 {
		if err := w.send(aligned); err != nil {
			return err
		}
	}
	if err := w.wait(); err != nil {
		return err
	}
	if len(w.cur) > 0 {
		if err := writeAll(w.t.f, w.cur, w.base); err != nil {
			return w.fail(err)
		}
	}
	if err := unix.Fdatasync(int(w.t.f.Fd())); err != nil {
		return w.fail(fmt.Errorf("slot: sync: %w", err))
	}
	return nil
}

// Close is Sync, then the I/O goroutine ends; the target stays open. The
// unaligned tail, written through the page cache and now durable, is
// compared last (an O_DIRECT read first writes back that range).
func (w *directWriter) Close() error {
	if w.closed {
		return ErrClosed
	}
	err := w.Sync()
	end := w.base + int64(len(w.cur))
	if err == nil && w.pf != nil && len(w.cur) > 0 {
		if w.t.afterWrite != nil {
			w.t.afterWrite(w.base, len(w.cur))
		}
		w.pf.q <- dwJob{b: w.cur, off: w.base}
		w.cur = nil
	}
	w.release()
	if w.pf != nil && err == nil {
		w.pf.finish(end)
	}
	return err
}

func (w *directWriter) release() {
	w.closed = true
	w.wait()
	close(w.jobs)
	<-w.ioDone
	w.df.Close()
	if w.rd != nil {
		w.rd.Close()
	}
	if w.pf != nil {
		close(w.pf.q)
	}
}

// abandon ends a writer nobody closed: no sync, nothing more written or
// compared; it returns once its goroutines are gone.
func (w *directWriter) abandon() {
	if w.closed {
		return
	}
	if w.pf != nil {
		w.pf.abort()
	}
	w.release()
	if w.pf != nil {
		<-w.pf.done
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
