package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

var modTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// serve answers like a static file server with an ETag.
func serve(content []byte, etag string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if etag != "" {
			w.Header().Set("ETag", etag)
		}
		http.ServeContent(w, r, "", modTime, bytes.NewReader(content))
	}
}

func TestHTTPDownloadSendsHeaders(t *testing.T) {
	want := payload(300_000, 10)
	var log requestLog
	var bad atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		if r.Header.Get("Authorization") != "Bearer t0k" || r.Header.Get("X-Device") != "gw-7" {
			bad.Add(1)
		}
		serve(want, `"v1"`)(w, r)
	}))
	defer ts.Close()
	s := &sleeper{}
	opts := fastOpts(s)
	opts.Headers = map[string]string{"Authorization": "Bearer t0k", "X-Device": "gw-7"}
	src, err := Open(context.Background(), ts.URL+"/b.otab", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Size() != int64(len(want)) {
		t.Fatalf("Size = %d, want %d", src.Size(), len(want))
	}
	got, err := readAll(t, src)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, want)
	// A Seek makes a ranged request; it must carry the headers too.
	if _, err := src.Seek(1000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(src, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if n := len(log.all()); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
	if bad.Load() != 0 {
		t.Fatalf("%d requests lacked the custom headers", bad.Load())
	}
	if len(s.got()) != 0 {
		t.Fatalf("slept %v on a clean download", s.got())
	}
}

func TestDroppedConnectionsManyTimes(t *testing.T) {
	want := payload(4<<20, 11)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	var log requestLog
	var drops atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := log.add(r)
		if n <= 40 {
			drops.Add(1)
			// Drop somewhere in the next 1..80 KiB, so all 40 drops
			// land inside the 4 MiB.
			w = &dropWriter{ResponseWriter: w, left: 1 + int(rng.Int64N(80<<10))}
		}
		serve(want, `"etag-1"`)(w, r)
	}))
	defer ts.Close()
	s := &sleeper{}
	opts := fastOpts(s)
	opts.MaxRetries = 2 // each drop delivered bytes, so the count resets
	got := fetchAll(t, ts.URL, opts)
	mustEqual(t, got, want)
	reqs := log.all()
	if drops.Load() != 40 || len(reqs) != 41 {
		t.Fatalf("%d drops, %d requests; want 40 and 41", drops.Load(), len(reqs))
	}
	for i, h := range reqs[1:] {
		if h.Get("If-Range") != `"etag-1"` || h.Get("Range") == "" {
			t.Fatalf("request %d: Range %q If-Range %q", i+2, h.Get("Range"), h.Get("If-Range"))
		}
	}
	if len(s.got()) != 40 {
		t.Fatalf("%d backoff sleeps, want 40", len(s.got()))
	}
}

func TestServerRestartOnSamePort(t *testing.T) {
	want := payload(1<<20, 12)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	cut := make(chan struct{})
	srv1 := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"r"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(want)))
		w.Write(want[:300_000])
		http.NewResponseController(w).Flush()
		close(cut)
		<-r.Context().Done()
	})}
	go srv1.Serve(ln)
	srv2 := &http.Server{Handler: serve(want, `"r"`)}
	defer srv2.Close()
	restarted := make(chan error, 1)
	go func() {
		<-cut
		srv1.Close() // listener and connections gone: the daemon died
		time.Sleep(150 * time.Millisecond)
		ln2, err := net.Listen("tcp", addr)
		if err != nil {
			restarted <- err
			return
		}
		restarted <- nil
		srv2.Serve(ln2)
	}()
	retries := 0
	opts := Options{MinRate: -1, BackoffBase: 10 * time.Millisecond, BackoffCap: 40 * time.Millisecond, MaxRetries: 100,
		OnRetry: func(int64, int, time.Duration, error) { retries++ }}
	src, err := Open(context.Background(), "http://"+addr+"/b", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got, err := readAll(t, src)
	if rerr := <-restarted; rerr != nil {
		t.Fatalf("relisten: %v", rerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, want)
	if retries < 2 {
		t.Fatalf("%d retries; the restart window should have cost at least 2", retries)
	}
}

func TestRetryAfterAndServerErrors(t *testing.T) {
	want := payload(10_000, 13)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	var n atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "7")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case 2:
			w.Header().Set("Retry-After", now.Add(42*time.Second).Format(http.TimeFormat))
			http.Error(w, "slow down", http.StatusTooManyRequests)
		case 3:
			http.Error(w, "oops", http.StatusBadGateway)
		case 4:
			http.Error(w, "timeout", http.StatusRequestTimeout)
		default:
			serve(want, `"x"`)(w, r)
		}
	}))
	defer ts.Close()
	s := &sleeper{}
	opts := fastOpts(s)
	opts.Now = func() time.Time { return now }
	opts.BackoffBase, opts.BackoffCap = time.Second, 4*time.Second
	got := fetchAll(t, ts.URL, opts)
	mustEqual(t, got, want)
	d := s.got()
	if len(d) != 4 {
		t.Fatalf("sleeps %v, want 4", d)
	}
	if d[0] != 7*time.Second || d[1] != 42*time.Second {
		t.Fatalf("Retry-After not honoured: slept %v then %v, want 7s then 42s", d[0], d[1])
	}
	// Backoff n=2 and n=3 with base 1s, cap 4s: d in [2s,4s] then [2s,4s].
	for i, lo := range map[int]time.Duration{2: 2 * time.Second, 3: 2 * time.Second} {
		if d[i] < lo || d[i] > 4*time.Second {
			t.Errorf("sleep %d = %v, want within [%v, 4s]", i, d[i], lo)
		}
	}
}

func TestRetryBudgetExhausted(t *testing.T) {
	var n atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}))
	defer ts.Close()
	s := &sleeper{}
	opts := fastOpts(s)
	opts.MaxRetries = 3
	_, err := Open(context.Background(), ts.URL, opts)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
		t.Fatalf("err = %v, want a 503 StatusError", err)
	}
	if n.Load() != 4 || len(s.got()) != 3 {
		t.Fatalf("%d requests, %d sleeps; want 4 and 3", n.Load(), len(s.got()))
	}
}

func TestPermanentClientErrors(t *testing.T) {
	for _, code := range []int{http.StatusNotFound, http.StatusForbidden, http.StatusUnauthorized, http.StatusBadRequest} {
		var n atomic.Int32
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			http.Error(w, "no such bundle", code)
		}))
		s := &sleeper{}
		_, err := Open(context.Background(), ts.URL+"/x", fastOpts(s))
		ts.Close()
		var se *StatusError
		if !errors.As(err, &se) || se.Code != code || se.Temporary() {
			t.Fatalf("%d: err = %v, want permanent StatusError", code, err)
		}
		if n.Load() != 1 || len(s.got()) != 0 {
			t.Fatalf("%d: %d requests, %d sleeps; a permanent error must not be retried", code, n.Load(), len(s.got()))
		}
	}
}

func TestSeekThenReadAndResumeAfterRestart(t *testing.T) {
	want := payload(500_000, 14)
	var log requestLog
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.add(r)
		serve(want, `"s1"`)(w, r)
	}))
	defer ts.Close()
	s := &sleeper{}
	src, err := Open(context.Background(), ts.URL, fastOpts(s))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	buf := make([]byte, 5000)
	for _, off := range []int64{123_456, 7, 499_000, 0, 250_000} {
		if got, err := src.Seek(off, io.SeekStart); err != nil || got != off {
			t.Fatalf("Seek(%d) = %d, %v", off, got, err)
		}
		n, err := io.ReadFull(src, buf)
		if err != nil && !(errors.Is(err, io.ErrUnexpectedEOF) && off+int64(n) == int64(len(want))) {
			t.Fatalf("read at %d: %v", off, err)
		}
		mustEqual(t, buf[:n], want[off:off+int64(n)])
	}
	if _, err := src.Seek(-1000, io.SeekCurrent); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(src, buf[:2000]); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, buf[:2000], want[254_000:256_000])
	if _, err := src.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	if n, err := src.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read at end = %d, %v; want EOF", n, err)
	}
	for _, h := range log.all()[1:] {
		if h.Get("If-Range") != `"s1"` {
			t.Fatalf("ranged request without If-Range: %v", h)
		}
	}
	// A restarted daemon opens afresh and seeks to its journaled offset.
	src2, err := Open(context.Background(), ts.URL, fastOpts(s))
	if err != nil {
		t.Fatal(err)
	}
	defer src2.Close()
	if _, err := src2.Seek(300_000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rest, err := readAll(t, src2)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, rest, want[300_000:])
	last := log.all()[len(log.all())-1]
	if last.Get("Range") != "bytes=300000-" || last.Get("If-Range") != `"s1"` {
		t.Fatalf("resume request Range %q If-Range %q", last.Get("Range"), last.Get("If-Range"))
	}
}

func TestServerWithoutRangeSupport(t *testing.T) {
	want := payload(400_000, 15)
	var n atomic.Int32
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Ignores Range entirely, but its ETag proves it is the same object.
		w.Header().Set("ETag", `"same"`)
		w.Header().Set("Content-Length", strconv.Itoa(len(want)))
		if n.Add(1) == 1 {
			w = &dropWriter{ResponseWriter: w, left: 150_000}
		}
		w.Write(want)
	}))
	defer ts.Close()
	src, err := Open(context.Background(), ts.URL, fastOpts(&sleeper{}))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got, err := readAll(t, src)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, want)
}

func TestProxyOption(t *testing.T) {
	want := payload(20_000, 16)
	var sawAbsolute atomic.Bool
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A forward proxy receives the absolute URL of the origin.
		if r.URL.IsAbs() && r.URL.Host == "bundles.example.invalid" {
			sawAbsolute.Store(true)
		}
		serve(want, `"p"`)(w, r)
	}))
	defer proxy.Close()
	pu, _ := url.Parse(proxy.URL)
	opts := fastOpts(&sleeper{})
	opts.Proxy = http.ProxyURL(pu)
	got := fetchAll(t, "http://bundles.example.invalid/b.otab", opts)
	mustEqual(t, got, want)
	if !sawAbsolute.Load() {
		t.Fatal("request did not go through the proxy")
	}
}

func TestDeadline(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.Write(make([]byte, 1000))
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}))
	defer ts.Close()
	start := time.Now()
	src, err := Open(context.Background(), ts.URL, Options{MinRate: -1, Deadline: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, err = io.ReadAll(src)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("deadline of 300ms took %v", el)
	}
}

func TestReadAfterClose(t *testing.T) {
	ts := httptest.NewServer(serve(payload(1000, 17), `"c"`))
	defer ts.Close()
	src, err := Open(context.Background(), ts.URL, fastOpts(&sleeper{}))
	if err != nil {
		t.Fatal(err)
	}
	src.Close()
	if _, err := src.Read(make([]byte, 10)); !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

func TestBackoffBounds(t *testing.T) {
	o := Options{BackoffBase: 100 * time.Millisecond, BackoffCap: time.Second}.withDefaults()
	for n := 0; n < 70; n++ {
		d := min(time.Second, 100*time.Millisecond<<min(n, 20))
		for range 20 {
			if got := o.backoff(n); got < d/2 || got > d {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, got, d/2, d)
			}
		}
	}
}

func TestRetryAfterBeyondDeadlineFailsNow(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "600")
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	}))
	defer ts.Close()
	s := &sleeper{}
	opts := fastOpts(s)
	opts.Deadline = 10 * time.Second
	_, err := Open(context.Background(), ts.URL, opts)
	var se *StatusError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &se) || len(s.got()) != 0 {
		t.Fatalf("err = %v after %d sleeps; want deadline + 503 at once", err, len(s.got()))
	}
}
