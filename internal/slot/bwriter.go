package slot

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// fdWriter buffers into ChunkSize pieces and writes each with one pwrite.
type fdWriter struct {
	ctx       context.Context
	t         *fdTarget
	off       int64 // device offset of buf[0]
	buf       []byte
	cmp       []byte // SkipUnchanged scratch
	sinceSync int64
	err       error // sticky: after a failed write the device state is unknown
	closed    bool
	// Writeback pacing: [waited, started) is being written back.
	started, waited int64
	noPacing        bool
}

// pace starts writeback of what was just written and waits for writeback
// older than two chunks. The device works while the next chunk is filled,
// dirty data never piles up (so progress is honest and the final fsync is
// short), and no cache flush is forced: durability is Sync's job.
func (w *fdWriter) pace() error {
	if w.noPacing {
		return nil
	}
	fd := int(w.t.f.Fd())
	if err := unix.SyncFileRange(fd, w.started, w.off-w.started, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ESPIPE) || errors.Is(err, unix.ENOSYS) {
			w.noPacing = true // not supported here; Sync still makes data durable
			return nil
		}
		return fmt.Errorf("slot: start writeback: %w", err)
	}
	w.started = w.off
	if lim := w.started - 2*w.t.o.ChunkSize; lim > w.waited {
		if err := unix.SyncFileRange(fd, w.waited, lim-w.waited, unix.SYNC_FILE_RANGE_WRITE_AND_WAIT); err != nil {
			return fmt.Errorf("slot: writeback: %w", err)
		}
		w.waited = lim
	}
	return nil
}

func (w *fdWriter) fail(err error) error {
	w.err = err
	return err
}

func (w *fdWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	if end := w.off + int64(len(w.buf)) + int64(len(p)); end > w.t.size {
		return 0, fmt.Errorf("%w: write would end at %d, slot has %d bytes", ErrTooLarge, end, w.t.size)
	}
	done := 0
	chunk := cap(w.buf)
	for done < len(p) {
		if len(w.buf) == 0 && len(p)-done >= chunk {
			// Whole chunks straight from the caller's buffer, no copy.
			if err := w.writeChunk(p[done : done+chunk]); err != nil {
				return done, err
			}
			done += chunk
			continue
		}
		n := copy(w.buf[len(w.buf):chunk], p[done:])
		w.buf = w.buf[:len(w.buf)+n]
		done += n
		if len(w.buf) == chunk {
			if err := w.writeChunk(w.buf); err != nil {
				return done, err
			}
			w.buf = w.buf[:0]
		}
	}
	return done, nil
}

func (w *fdWriter) writeChunk(b []byte) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if err := w.pwrite(b); err != nil {
		return w.fail(err)
	}
	w.off += int64(len(b))
	w.sinceSync += int64(len(b))
	if w.t.o.SyncEvery > 0 && w.sinceSync >= w.t.o.SyncEvery {
		return w.sync()
	}
	if err := w.pace(); err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *fdWriter) pwrite(b []byte) error {
	if w.t.o.SkipUnchanged {
		if cap(w.cmp) < len(b) {
			w.cmp = make([]byte, len(b))
		}
		c := w.cmp[:len(b)]
		if n, _ := w.t.f.ReadAt(c, w.off); n == len(b) && bytes.Equal(c, b) {
			return nil
		}
	}
	for done := 0; done < len(b); {
		n, err := w.t.f.WriteAt(b[done:], w.off+int64(done))
		if err != nil {
			return fmt.Errorf("slot: write at %d: %w", w.off+int64(done), err)
		}
		done += n
	}
	return nil
}

func (w *fdWriter) flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.pwrite(w.buf); err != nil {
		return w.fail(err)
	}
	w.off += int64(len(w.buf))
	w.sinceSync += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

func (w *fdWriter) sync() error {
	if err := unix.Fdatasync(int(w.t.f.Fd())); err != nil {
		return w.fail(fmt.Errorf("slot: sync: %w", err))
	}
	w.sinceSync = 0
	w.started, w.waited = w.off, w.off
	return nil
}

// Sync writes what is buffered and waits until the device has it.
func (w *fdWriter) Sync() error {
	if w.closed {
		return ErrClosed
	}
	if err := w.flush(); err != nil {
		return err
	}
	return w.sync()
}

// Close is Sync; the target stays open for read-back.
func (w *fdWriter) Close() error {
	if w.closed {
		return ErrClosed
	}
	err := w.Sync()
	w.closed = true
	return err
}
