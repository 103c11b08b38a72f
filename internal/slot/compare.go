package slot

import (
	"bytes"
	"context"
	"fmt"
	"sync"
)

// compareBuf is the read-back unit of the per-chunk comparison: one buffer
// of this size, not a second chunk buffer.
const compareBuf = 1 << 20

// proof is the per-chunk read-back of one direct writer. Every chunk, once
// its O_DIRECT write has returned, is read again with O_DIRECT (which the
// page cache cannot serve) on another goroutine and compared byte for byte
// with the buffer it was written from; the buffer goes back to the writer
// only then. Skip-unchanged chunks were already read from the medium and
// found equal, so they count without a second read.
//
// The writer's caller vouched that the whole stream hashes to sum
// (OpenVerifiedWriter); byte equality over [0, size) then proves the medium
// hashes to sum without hashing it again.
type proof struct {
	rd   *directReader
	sum  []byte
	from int64

	q    chan dwJob  // written chunks, in write order
	free chan []byte // the writer's buffer pool
	done chan struct{}

	mu    sync.Mutex
	upto  int64 // [from, upto) compared equal, contiguously
	gap   bool  // a chunk did not start at upto: the proof covers nothing
	bad   error // mismatch or failed read: fails closed
	stop  bool  // abandoned: recycle buffers, read nothing more
	end   int64 // valid when final
	final bool  // the writer closed cleanly; [from, end) is all it wrote
}

func newProof(rd *directReader, sum []byte, from int64, free chan []byte) *proof {
	return &proof{
		rd: rd, sum: bytes.Clone(sum), from: from, upto: from,
		q: make(chan dwJob, 2), free: free, done: make(chan struct{}),
	}
}

// run compares queued chunks until q is closed; it always recycles.
func (p *proof) run(ctx context.Context, bufSize int) {
	defer close(p.done)
	defer p.rd.Close()
	var buf []byte
	for j := range p.q {
		p.mu.Lock()
		skip := p.stop || p.bad != nil || p.gap
		p.mu.Unlock()
		var err error
		if !skip && !j.same {
			if buf == nil {
				buf = alignedBuf(bufSize)
			}
			err = p.compare(ctx, buf, j)
		}
		p.mu.Lock()
		switch {
		case skip:
		case err != nil && ctx.Err() != nil:
			p.stop = true // cancelled, not a verdict: a full read-back decides
		case err != nil:
			p.bad = err
		case j.off != p.upto:
			p.gap = true
		default:
			p.upto = j.off + int64(len(j.b))
		}
		p.mu.Unlock()
		p.free <- j.b[:cap(j.b)]
	}
}

// compare reads j's range from the medium and checks it equals j.b.
func (p *proof) compare(ctx context.Context, buf []byte, j dwJob) error {
	for pos := 0; pos < len(j.b); {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("slot: read-back: %w", err)
		}
		want := min(len(buf), len(j.b)-pos)
		off := j.off + int64(pos)
		if _, err := p.rd.readAt(buf, off, want); err != nil {
			return err
		}
		if !bytes.Equal(buf[:want], j.b[pos:pos+want]) {
			i := 0
			for buf[i] == j.b[pos+i] {
				i++
			}
			return fmt.Errorf("%w: the device returned different bytes at offset %d than were written there (byte %#02x, wrote %#02x)",
				ErrReadBackMismatch, off+int64(i), buf[i], j.b[pos+i])
		}
		pos += want
	}
	return nil
}

// failed is the comparison's verdict so far, for the writer to stop early.
func (p *proof) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bad
}

func (p *proof) finish(end int64) {
	p.mu.Lock()
	p.end, p.final = end, true
	p.mu.Unlock()
}

func (p *proof) abort() {
	p.mu.Lock()
	p.stop = true
	p.mu.Unlock()
}

// verdict waits for the comparison to end. ok is false when it does not
// settle [0, size) against sum and the medium must be hashed instead; err
// is a mismatch or read failure (ok true: fail closed) or ctx's error.
func (p *proof) verdict(ctx context.Context, size int64, sum []byte) (ok bool, err error) {
	p.mu.Lock()
	usable := p.final && p.from == 0 && p.end == size && bytes.Equal(p.sum, sum)
	p.mu.Unlock()
	if !usable {
		return false, nil
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return true, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.bad != nil:
		return true, p.bad
	case p.stop || p.gap || p.upto != size:
		return false, nil
	}
	return true, nil
}
