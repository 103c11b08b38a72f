package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/iotest"
)

func newTestReadAhead(src io.Reader, blocks, size int) *readAhead {
	bufs := make([][]byte, blocks)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return newReadAhead(src, bufs)
}

// The pump must hand on the bytes in order and then the body's own error:
// a clean io.EOF must not turn into io.ErrUnexpectedEOF (fill is not
// io.ReadFull), and a failure must arrive after every byte before it.
func TestReadAheadOrderAndErrors(t *testing.T) {
	data := payload(100_003, 7)
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		src  io.Reader
		want error
	}{
		{"eof", bytes.NewReader(data), io.EOF},
		{"one byte reads", iotest.OneByteReader(bytes.NewReader(data)), io.EOF},
		{"data with eof", iotest.DataErrReader(bytes.NewReader(data)), io.EOF},
		{"failure", io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom)), boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestReadAhead(tc.src, 2, 4096)
			defer r.halt()
			var got []byte
			buf := make([]byte, 3000) // not a divisor of the block size
			var err error
			for err == nil {
				var n int
				n, err = r.Read(buf)
				got = append(got, buf[:n]...)
			}
			if err != tc.want {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			mustEqual(t, got, data)
			if n, err := r.Read(buf); n != 0 || err != tc.want {
				t.Fatalf("after the end: %d, %v; want 0, %v", n, err, tc.want)
			}
		})
	}
}

// A pump parked on full blocks (the caller stopped reading) and a pump
// blocked in a body Read both end on halt, the latter once the body Read
// returns (the request's cancel does that for real bodies).
func TestReadAheadHalt(t *testing.T) {
	r := newTestReadAhead(bytes.NewReader(payload(1<<20, 1)), 2, 4096)
	one := make([]byte, 1)
	if _, err := r.Read(one); err != nil {
		t.Fatal(err)
	}
	r.halt()

	pr, pw := io.Pipe()
	r = newTestReadAhead(pr, 2, 4096)
	pw.Write([]byte("x")) // the pump is now inside a Read that waits for more
	pw.CloseWithError(errDropped)
	r.halt()
}

// Close while the pump waits on a server that stopped sending: the request
// is cancelled first, so Close returns instead of waiting on the network.
func TestCloseDuringStalledBody(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.Write(make([]byte, 1000))
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer ts.Close()
	src, err := Open(context.Background(), ts.URL, Options{MinRate: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Read(make([]byte, 10)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v, want ErrClosed", err)
	}
}
