package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"
)

// payload returns n pseudo-random bytes; different seeds differ at byte 0
// with overwhelming likelihood, so a mixed stream is detectable.
func payload(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sleeper records requested delays and returns at once.
type sleeper struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (s *sleeper) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.delays = append(s.delays, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeper) got() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.delays...)
}

// fastOpts keeps the watchdog and backoff out of the way of tests that are
// about something else.
func fastOpts(s *sleeper) Options {
	return Options{MinRate: -1, Sleep: s.Sleep, MaxRetries: 5}
}

var errDropped = errors.New("test: connection dropped on purpose")

// dropWriter passes through `left` body bytes, then hijacks the connection
// and closes it, like a flaky network between client and server.
type dropWriter struct {
	http.ResponseWriter
	left   int
	before func() // runs just before the drop
}

func (w *dropWriter) Write(p []byte) (int, error) {
	if len(p) < w.left {
		w.left -= len(p)
		return w.ResponseWriter.Write(p)
	}
	n, _ := w.ResponseWriter.Write(p[:w.left])
	w.left = 0
	rc := http.NewResponseController(w.ResponseWriter)
	rc.Flush()
	if w.before != nil {
		w.before()
	}
	if conn, _, err := rc.Hijack(); err == nil {
		conn.Close()
	}
	return n, errDropped
}

// requestLog records the Range and If-Range headers of every request.
type requestLog struct {
	mu   sync.Mutex
	reqs []http.Header
}

func (l *requestLog) add(r *http.Request) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs = append(l.reqs, r.Header.Clone())
	return len(l.reqs)
}

func (l *requestLog) all() []http.Header {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]http.Header(nil), l.reqs...)
}

// readAll reads src to the end with a small buffer, so a transfer spans
// many Read calls.
func readAll(t *testing.T, src io.Reader) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	buf := make([]byte, 7000)
	for {
		n, err := src.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
	}
}

func mustEqual(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("content differs: got %d bytes, want %d, first difference at %d", len(got), len(want), i)
	}
}

// fetchAll opens src with opts and reads it to the end; any error fails t.
func fetchAll(t *testing.T, src string, opts Options) []byte {
	t.Helper()
	s, err := Open(context.Background(), src, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := readAll(t, s)
	if err != nil {
		t.Fatal(err)
	}
	return got
}
