package fetch

import "io"

// Read-ahead geometry: two blocks of 1 MiB (one bundle chunk each) keep the
// network busy while the caller hashes and writes the previous block, and
// bound what a Source holds beyond what it handed out to 2 MiB.
const (
	readAheadBlocks    = 2
	readAheadBlockSize = 1 << 20
	readAheadMinBlock  = 4 << 10
)

// readAhead reads one response body on its own goroutine into a fixed set
// of blocks. Without it a download alternates between receiving and the
// caller's hashing and writing; on a small board the socket copy and the
// kernel's TCP work then run on the same core as the hash instead of next
// to it.
//
// It changes nothing about what the caller sees: bytes in order, then the
// body's own error (io.EOF included) exactly as the body returned it. The
// caps and the more-than-declared check stay in httpSource.Read, which
// takes bytes from here as it took them from the body. Only body Reads are
// bracketed by the watchdog (countingBody sits below the pump), so a
// caller that pauses leaves the pump parked on a full set of blocks, not
// counted as waiting on the network.
type readAhead struct {
	src  io.Reader
	free chan []byte // drained blocks the pump may fill
	full chan block  // filled blocks in stream order
	stop chan struct{}
	done chan struct{}

	blk []byte // the block being handed out, nil when none
	cur []byte // its unread part
	err error  // ends the stream once cur is drained
}

type block struct {
	b   []byte
	err error
}

// newReadAhead starts the pump on bufs, which belong to it until halt
// returns.
func newReadAhead(src io.Reader, bufs [][]byte) *readAhead {
	r := &readAhead{
		src:  src,
		free: make(chan []byte, len(bufs)),
		full: make(chan block, len(bufs)),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for _, b := range bufs {
		r.free <- b
	}
	go r.pump()
	return r
}

func (r *readAhead) pump() {
	defer close(r.done)
	for {
		var b []byte
		select {
		case b = <-r.free:
		case <-r.stop:
			return
		}
		n, err := fill(r.src, b)
		select {
		case r.full <- block{b[:n], err}:
		case <-r.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// fill reads until b is full or src fails. Unlike io.ReadFull it returns
// src's error as is: an io.EOF after some bytes is a clean end here.
func fill(src io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := src.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Read must not be called after halt.
func (r *readAhead) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.blk != nil {
			r.free <- r.blk[:cap(r.blk)] // never blocks: free holds every block
			r.blk = nil
		}
		b := <-r.full
		r.blk, r.cur, r.err = b.b, b.b, b.err
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// halt ends the pump and waits for it. A pump blocked in a body Read only
// returns when that Read does, so the caller cancels the request first.
func (r *readAhead) halt() {
	close(r.stop)
	<-r.done
}
