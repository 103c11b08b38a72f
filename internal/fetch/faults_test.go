package fetch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// versioned serves one object that the test can replace mid-download.
type versioned struct {
	mu      sync.Mutex
	content []byte
	etag    string
	mod     time.Time
}

func (v *versioned) set(content []byte, etag string, mod time.Time) {
	v.mu.Lock()
	v.content, v.etag, v.mod = content, etag, mod
	v.mu.Unlock()
}

func (v *versioned) get() ([]byte, string, time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.content, v.etag, v.mod
}

// TestObjectChangedMidDownload publishes a new bundle between a dropped
// connection and its resume, validated by ETag or by Last-Modified only.
func TestObjectChangedMidDownload(t *testing.T) {
	a, b := payload(600_000, 20), payload(600_000, 21)
	for _, tc := range []struct{ name, etagA, etagB string }{
		{"etag", `"a"`, `"b"`},
		{"last-modified", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var obj versioned
			obj.set(a, tc.etagA, modTime)
			var n atomic.Int32
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				content, etag, mod := obj.get()
				if etag != "" {
					w.Header().Set("ETag", etag)
				}
				if n.Add(1) == 1 {
					w = &dropWriter{ResponseWriter: w, left: 200_000, before: func() {
						obj.set(b, tc.etagB, modTime.Add(time.Hour))
					}}
				}
				http.ServeContent(w, r, "", mod, bytes.NewReader(content))
			}))
			defer ts.Close()
			src, err := Open(context.Background(), ts.URL, fastOpts(&sleeper{}))
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			got, err := readAll(t, src)
			if !errors.Is(err, ErrObjectChanged) {
				t.Fatalf("err = %v, want ErrObjectChanged", err)
			}
			if len(got) != 200_000 {
				t.Fatalf("got %d bytes before the error, want exactly the 200000 of version A", len(got))
			}
			mustEqual(t, got, a[:len(got)])
			// The error is final: no later Read hands out version B.
			if n, err := src.Read(make([]byte, 100)); n != 0 || !errors.Is(err, ErrObjectChanged) {
				t.Fatalf("read after change = %d, %v", n, err)
			}
		})
	}
}

// TestBrokenRangeAnswers covers servers or proxies that answer a range
// request wrongly: each must end in a clear error, never in wrong bytes.
func TestBrokenRangeAnswers(t *testing.T) {
	want := payload(100_000, 22)
	other := payload(100_000, 23)
	for _, tc := range []struct {
		name   string
		answer func(w http.ResponseWriter, first int)
		is     error
	}{
		{"206 with a new ETag", func(w http.ResponseWriter, first int) {
			w.Header().Set("ETag", `"new"`)
			partial(w, other, first, first, len(other))
		}, ErrObjectChanged},
		{"206 with a new total", func(w http.ResponseWriter, first int) {
			partial(w, want, first, first, len(want)+5)
		}, ErrObjectChanged},
		{"206 at the wrong start", func(w http.ResponseWriter, first int) {
			partial(w, want, first-10, first-10, len(want))
		}, ErrBadResponse},
		{"206 without Content-Range", func(w http.ResponseWriter, first int) {
			w.WriteHeader(http.StatusPartialContent)
			w.Write(want[first:])
		}, ErrBadResponse},
		{"200 with another size", func(w http.ResponseWriter, first int) {
			w.Header().Set("ETag", `"old"`)
			w.Header().Set("Content-Length", "99999")
			w.Write(want[:99999])
		}, ErrObjectChanged},
		{"416 for an offset inside the object", func(w http.ResponseWriter, first int) {
			w.Header().Set("Content-Range", "bytes */1000")
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		}, ErrObjectChanged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 1 {
					w.Header().Set("ETag", `"old"`)
					w.Header().Set("Content-Length", strconv.Itoa(len(want)))
					(&dropWriter{ResponseWriter: w, left: 40_000}).Write(want)
					return
				}
				first, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(r.Header.Get("Range"), "bytes="), "-"))
				tc.answer(w, first)
			}))
			defer ts.Close()
			src, err := Open(context.Background(), ts.URL, fastOpts(&sleeper{}))
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			got, err := readAll(t, src)
			if !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			mustEqual(t, got, want[:40_000])
		})
	}
}

func partial(w http.ResponseWriter, content []byte, from, first, total int) {
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, first+len(content[from:])-1, total))
	w.Header().Set("Content-Length", strconv.Itoa(len(content[from:])))
	w.WriteHeader(http.StatusPartialContent)
	w.Write(content[from:])
}

func TestTricklingServerIsAbandoned(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers bool
	}{{"trickles body", true}, {"stalls before headers", false}} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				if tc.headers {
					w.Header().Set("ETag", `"t"`) // resumable, so only slowness ends it
					w.Header().Set("Content-Length", "100000")
					w.WriteHeader(http.StatusOK)
				}
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-r.Context().Done():
						return
					case <-tick.C:
						if tc.headers {
							w.Write([]byte{'x'})
							http.NewResponseController(w).Flush()
						}
					}
				}
			}))
			defer ts.Close()
			s := &sleeper{}
			opts := Options{MinRate: 1000, RateWindow: 150 * time.Millisecond, MaxRetries: 2, Sleep: s.Sleep}
			start := time.Now()
			var err error
			src, err := Open(context.Background(), ts.URL, opts)
			if err == nil {
				_, err = io.ReadAll(src)
				src.Close()
			}
			el := time.Since(start)
			if !errors.Is(err, ErrTooSlow) {
				t.Fatalf("err = %v, want ErrTooSlow", err)
			}
			// Three windows of 150ms; generous bound for a loaded machine.
			if el > 5*time.Second {
				t.Fatalf("abandoning took %v", el)
			}
			if n.Load() != 3 || len(s.got()) != 2 {
				t.Fatalf("%d requests, %d sleeps; want 3 and 2", n.Load(), len(s.got()))
			}
		})
	}
}

// A connection that is slow but never silent must not reset the retry
// budget: otherwise a trickling server would hold the download forever.
func TestSlowButSteadyDoesNotResetBudget(t *testing.T) {
	var n atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Length", "100000000")
		w.Header().Set("ETag", `"slow"`)
		for {
			if _, err := w.Write(make([]byte, 10)); err != nil {
				return
			}
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}))
	defer ts.Close()
	s := &sleeper{}
	src, err := Open(context.Background(), ts.URL, Options{MinRate: 10_000, RateWindow: 100 * time.Millisecond, MaxRetries: 3, Sleep: s.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, err = io.ReadAll(src)
	if !errors.Is(err, ErrTooSlow) || n.Load() != 4 {
		t.Fatalf("err = %v after %d requests, want ErrTooSlow after 4", err, n.Load())
	}
}

func TestTooLarge(t *testing.T) {
	big := payload(50_000, 24)
	t.Run("Content-Length over MaxSize", func(t *testing.T) {
		ts := httptest.NewServer(serve(big, `"big"`))
		defer ts.Close()
		s := &sleeper{}
		opts := fastOpts(s)
		opts.MaxSize = 49_999
		_, err := Open(context.Background(), ts.URL, opts)
		if !errors.Is(err, ErrTooLarge) || len(s.got()) != 0 {
			t.Fatalf("err = %v after %d retries, want ErrTooLarge at once", err, len(s.got()))
		}
	})
	t.Run("chunked body over MaxSize", func(t *testing.T) {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < len(big); i += 1000 { // no Content-Length: chunked
				w.Write(big[i : i+1000])
				http.NewResponseController(w).Flush()
			}
		}))
		defer ts.Close()
		opts := fastOpts(&sleeper{})
		opts.MaxSize = 30_000
		src, err := Open(context.Background(), ts.URL, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		got, err := readAll(t, src)
		if !errors.Is(err, ErrTooLarge) || len(got) != 30_000 {
			t.Fatalf("got %d bytes, err %v; want 30000 then ErrTooLarge", len(got), err)
		}
		mustEqual(t, got, big[:30_000])
	})
	t.Run("body longer than Content-Length", func(t *testing.T) {
		src, err := Open(context.Background(), "http://bundles.example.invalid/b", Options{MinRate: -1,
			Client: doerFunc(func(r *http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: 200, Status: "200 OK", Header: http.Header{"Etag": {`"e"`}},
					ContentLength: 1000, Body: io.NopCloser(bytes.NewReader(big[:1500])), Request: r}, nil
			})})
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		got, err := readAll(t, src)
		if !errors.Is(err, ErrTooLarge) || len(got) != 1000 {
			t.Fatalf("got %d bytes, err %v; want 1000 then ErrTooLarge", len(got), err)
		}
	})
	t.Run("raw server writes past Content-Length", func(t *testing.T) {
		// Go's transport stops at Content-Length; the extra bytes must
		// never reach the caller.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					http.ReadRequest(bufio.NewReader(c))
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\nETag: \"r\"\r\n\r\n")
					c.Write(big[:5000])
				}()
			}
		}()
		src, err := Open(context.Background(), "http://"+ln.Addr().String()+"/b", fastOpts(&sleeper{}))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		got, err := readAll(t, src)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, got, big[:1000])
	})
}

type doerFunc func(*http.Request) (*http.Response, error)

func (f doerFunc) Do(r *http.Request) (*http.Response, error) { return f(r) }

func TestCancelStopsEverything(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer ts.Close()
	ctx, cancel := context.WithCancel(context.Background())
	opts := Options{MinRate: -1, BackoffBase: time.Hour, BackoffCap: time.Hour}
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := Open(ctx, ts.URL, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("cancel took %v to take effect", el)
	}
}

// The engine pauses between Reads (flash sync, slot read-back); that idle
// time is the consumer's, not the server's, and must not trip the watchdog.
func TestConsumerPauseIsNotSlowness(t *testing.T) {
	want := payload(3<<20, 25)
	ts := httptest.NewServer(serve(want, `"p"`))
	defer ts.Close()
	s := &sleeper{}
	src, err := Open(context.Background(), ts.URL, Options{MinRate: 1 << 20, RateWindow: 100 * time.Millisecond, Sleep: s.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	head := make([]byte, 100_000)
	if _, err := io.ReadFull(src, head); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	rest, err := readAll(t, src)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, append(head, rest...), want)
	if len(s.got()) != 0 {
		t.Fatalf("%d retries after a consumer pause; want none", len(s.got()))
	}
}

// Without ETag or Last-Modified nothing proves a resumed range belongs to
// the same object, so resuming is refused rather than risked.
func TestNoValidatorCannotResume(t *testing.T) {
	want := payload(200_000, 26)
	var n atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w = &dropWriter{ResponseWriter: w, left: 50_000}
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(want)) // zero time: no Last-Modified
	}))
	defer ts.Close()
	src, err := Open(context.Background(), ts.URL, fastOpts(&sleeper{}))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got, err := readAll(t, src)
	if !errors.Is(err, ErrObjectChanged) || !strings.Contains(err.Error(), "no ETag or Last-Modified") {
		t.Fatalf("err = %v, want ErrObjectChanged naming the missing validator", err)
	}
	mustEqual(t, got, want[:50_000])
}

// The engine lowers the cap once the manifest gives the bundle size.
func TestLowerCap(t *testing.T) {
	want := payload(80_000, 27)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < len(want); i += 10_000 { // chunked: size unknown up front
			w.Write(want[i : i+10_000])
			http.NewResponseController(w).Flush()
		}
	}))
	defer ts.Close()
	path := filepath.Join(t.TempDir(), "b")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{ts.URL, path, "-"} {
		s, err := Open(context.Background(), src, Options{MinRate: -1, Stdin: bytes.NewReader(want)})
		if err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 1000)
		if _, err := io.ReadFull(s, head); err != nil {
			t.Fatal(err)
		}
		if !LowerCap(s, 50_000) {
			t.Fatalf("%s: LowerCap refused a Source from Open", src)
		}
		LowerCap(s, 1<<40) // never raises
		rest, err := io.ReadAll(s)
		if !errors.Is(err, ErrTooLarge) || len(head)+len(rest) != 50_000 {
			t.Fatalf("%s: read %d, err %v; want 50000 then ErrTooLarge", src, len(head)+len(rest), err)
		}
		s.Close()
	}
}
