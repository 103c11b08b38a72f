package update

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/journal"
)

// bundleServer serves one bundle over real loopback HTTP (Range and
// If-Range through http.ServeContent) and injects the faults of a bad
// network. Every request is logged.
type bundleServer struct {
	mu       sync.Mutex
	content  []byte
	etag     string
	requests []string // "Range|If-Range"
	// fault decides, per request (1-based), how many body bytes to send
	// before the connection is cut; <0: all. nil: never cut.
	fault func(n int) int64
	// status, when set, answers request n with this code instead (0: serve).
	status func(n int) (code int, retryAfter string)
	// after is called after request n started (e.g. to change the object).
	after   func(n int, s *bundleServer)
	trickle bool
}

func (s *bundleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.Header.Get("Range")+"|"+r.Header.Get("If-Range"))
	n := len(s.requests)
	content, etag := s.content, s.etag
	s.mu.Unlock()
	if s.after != nil {
		defer s.after(n, s)
	}
	if s.status != nil {
		if code, ra := s.status(n); code != 0 {
			if ra != "" {
				w.Header().Set("Retry-After", ra)
			}
			http.Error(w, "try later", code)
			return
		}
	}
	if s.trickle {
		w.Header().Set("Content-Length", fmt.Sprint(len(content)))
		w.Header().Set("ETag", etag)
		for i := 0; i < len(content); i++ {
			if _, err := w.Write(content[i : i+1]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		return
	}
	w.Header().Set("ETag", etag)
	var cw http.ResponseWriter = w
	if s.fault != nil {
		if k := s.fault(n); k >= 0 {
			cw = &cuttingWriter{ResponseWriter: w, left: k}
		}
	}
	http.ServeContent(cw, r, "bundle.otab", time.Unix(1700000000, 0), bytes.NewReader(content))
}

// cuttingWriter aborts the connection after left body bytes: a dropped
// link mid-body.
type cuttingWriter struct {
	http.ResponseWriter
	left int64
}

func (c *cuttingWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		p = p[:c.left]
		c.ResponseWriter.Write(p)
		c.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	c.left -= int64(len(p))
	return c.ResponseWriter.Write(p)
}

func (s *bundleServer) log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// httpEngine is an engine whose sources come through fetch with fast
// retries, as the daemon wires it (the daemon only adds config).
func (d *device) httpEngine(opts fetch.Options, mods ...func(*Config)) *Engine {
	if opts.BackoffBase == 0 {
		opts.BackoffBase, opts.BackoffCap = time.Millisecond, 5*time.Millisecond
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = 1000
	}
	return d.engine(append([]func(*Config){func(c *Config) {
		c.OpenSource = func(ctx context.Context, src string) (Source, error) { return fetch.Open(ctx, src, opts) }
	}}, mods...)...)
}

func serveBundle(t *testing.T, s *bundleServer) string {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.URL + "/bundle.otab"
}

// installHTTP runs one install synchronously and returns its error.
func installHTTP(t *testing.T, e *Engine, url string) error {
	t.Helper()
	_, err := e.installNow(url, nil)
	return err
}

// assertArmedWith: slot B holds exactly img and the env arms it.
func (d *device) assertArmedWith(img []byte) {
	d.t.Helper()
	if !bytes.Equal(d.slotBytes("B", len(img)), img) {
		d.t.Fatal("slot B does not hold the image")
	}
	if d.envVar("otad_slot") != "B" || d.envVar("upgrade_available") != "1" {
		d.t.Fatalf("env not armed for B: otad_slot=%s upgrade_available=%s", d.envVar("otad_slot"), d.envVar("upgrade_available"))
	}
}

// assertNotArmed: the failed install left the active slot in charge and
// never called B good.
func (d *device) assertNotArmed(activeBefore []byte) {
	d.t.Helper()
	if d.envVar("otad_slot") != "A" || d.envVar("upgrade_available") == "1" {
		d.t.Fatalf("env armed after a failed install: otad_slot=%s", d.envVar("otad_slot"))
	}
	if r := d.slotRec("B"); r.State == journal.SlotGood || r.State == journal.SlotPending {
		d.t.Fatalf("slot B recorded %s after a failed install", r.State)
	}
	if !bytes.Equal(d.slotBytes("A", len(activeBefore)), activeBefore) {
		d.t.Fatal("active slot changed")
	}
}

func TestHTTPInstallSurvivesManyDroppedConnections(t *testing.T) {
	d := newDevice(t)
	img := image(11, 3<<20+777)
	b := readFile(t, d.bundleFile("v2.otab", "2.0", 1, img, bundle.EncodingRaw))
	rng := rand.New(rand.NewPCG(7, 7))
	s := &bundleServer{content: b, etag: `"v2"`, fault: func(n int) int64 {
		if n > 25 {
			return -1
		}
		return rng.Int64N(400 << 10) // cut somewhere in the next 400 KiB
	}}
	e := d.httpEngine(fetch.Options{})
	d.start(e)
	if err := installHTTP(t, e, serveBundle(t, s)); err != nil {
		t.Fatalf("install over a flaky link: %v", err)
	}
	d.assertArmedWith(img)
	reqs := s.log()
	if len(reqs) < 10 {
		t.Fatalf("only %d requests: the link was not cut", len(reqs))
	}
	for _, r := range reqs[1:] {
		if !strings.HasPrefix(r, "bytes=") || !strings.HasSuffix(r, `|"v2"`) {
			t.Fatalf("a reconnect did not resume with Range and If-Range: %q", r)
		}
	}
}

func TestHTTPInstallRetriesServerErrors(t *testing.T) {
	d := newDevice(t)
	img := image(12, 1<<20)
	b := readFile(t, d.bundleFile("v2.otab", "2.0", 1, img, bundle.EncodingRaw))
	s := &bundleServer{content: b, etag: `"v2"`, status: func(n int) (int, string) {
		switch n {
		case 1:
			return http.StatusServiceUnavailable, "0"
		case 2:
			return http.StatusTooManyRequests, "0"
		case 3:
			return http.StatusBadGateway, ""
		}
		return 0, ""
	}}
	e := d.httpEngine(fetch.Options{})
	d.start(e)
	if err := installHTTP(t, e, serveBundle(t, s)); err != nil {
		t.Fatalf("install after 503, 429, 502: %v", err)
	}
	d.assertArmedWith(img)
	if n := len(s.log()); n != 4 {
		t.Fatalf("%d requests, want 3 refused + 1 served", n)
	}
}

// The object on the server changes mid-download (a new release published
// under the same URL): the install fails clearly, nothing is armed, and the
// two versions are never mixed in the slot.
func TestHTTPObjectChangedMidDownloadFailsClean(t *testing.T) {
	d := newDevice(t)
	activeBefore := d.slotBytes("A", 1<<20)
	img2, img3 := image(13, 2<<20), image(14, 2<<20)
	b2 := readFile(t, d.bundleFile("v2.otab", "2.0", 1, img2, bundle.EncodingRaw))
	b3 := readFile(t, d.bundleFile("v3.otab", "3.0", 1, img3, bundle.EncodingRaw))
	s := &bundleServer{content: b2, etag: `"v2"`,
		fault: func(n int) int64 {
			if n == 1 {
				return 1 << 20
			}
			return -1
		},
		after: func(n int, s *bundleServer) {
			if n == 1 {
				s.mu.Lock()
				s.content, s.etag = b3, `"v3"`
				s.mu.Unlock()
			}
		}}
	e := d.httpEngine(fetch.Options{})
	d.start(e)
	err := installHTTP(t, e, serveBundle(t, s))
	if !errors.Is(err, fetch.ErrObjectChanged) {
		t.Fatalf("install across a changed object: %v, want fetch.ErrObjectChanged", err)
	}
	d.assertNotArmed(activeBefore)
}

// A server that sends more than the signed manifest declares: the download
// stops there and the install fails; nothing is armed.
func TestHTTPServerSendsMoreThanDeclared(t *testing.T) {
	d := newDevice(t)
	activeBefore := d.slotBytes("A", 1<<20)
	img := image(15, 1<<20)
	b := readFile(t, d.bundleFile("v2.otab", "2.0", 1, img, bundle.EncodingRaw))
	s := &bundleServer{content: append(append([]byte(nil), b...), bytes.Repeat([]byte{0xAA}, 8<<20)...), etag: `"v2"`}
	e := d.httpEngine(fetch.Options{})
	d.start(e)
	err := installHTTP(t, e, serveBundle(t, s))
	if !errors.Is(err, fetch.ErrTooLarge) && !errors.Is(err, bundle.ErrMalformed) {
		t.Fatalf("install of an over-long download: %v", err)
	}
	d.assertNotArmed(activeBefore)
}

// A server trickling bytes (slow-retrieval attack) is abandoned with a
// clear error; nothing is armed.
func TestHTTPTricklingServerAbandoned(t *testing.T) {
	d := newDevice(t)
	activeBefore := d.slotBytes("A", 1<<20)
	img := image(16, 1<<20)
	b := readFile(t, d.bundleFile("v2.otab", "2.0", 1, img, bundle.EncodingRaw))
	s := &bundleServer{content: b, etag: `"v2"`, trickle: true}
	e := d.httpEngine(fetch.Options{MinRate: 64 << 10, RateWindow: 300 * time.Millisecond, MaxRetries: 2})
	d.start(e)
	err := installHTTP(t, e, serveBundle(t, s))
	if !errors.Is(err, fetch.ErrTooSlow) {
		t.Fatalf("install from a trickling server: %v, want fetch.ErrTooSlow", err)
	}
	d.assertNotArmed(activeBefore)
}

// The daemon is killed mid-download; the next daemon resumes the HTTP
// download from the recorded chunk (a Range request, If-Range on the ETag)
// and ends with a complete, verified, armed slot.
func TestHTTPDaemonKilledMidDownloadResumes(t *testing.T) {
	d := newDevice(t)
	img := image(17, 3<<20)
	b := readFile(t, d.bundleFile("v2.otab", "2.0", 1, img, bundle.EncodingRaw))
	s := &bundleServer{content: b, etag: `"v2"`}
	url := serveBundle(t, s)

	ctx, kill := context.WithCancel(context.Background())
	var read atomic.Int64
	e := d.httpEngine(fetch.Options{}, func(c *Config) {
		open := c.OpenSource
		c.OpenSource = func(ctx context.Context, src string) (Source, error) {
			s, err := open(ctx, src)
			if err != nil {
				return nil, err
			}
			return &killingSource{Source: s, n: 2 << 20, kill: kill, read: &read}, nil
		}
	})
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Install(ctx, url, nil); err != nil {
		t.Fatal(err)
	}
	e.Wait()
	jr := d.journalRec()
	if jr.State != journal.StateWriting || jr.Resume.Bytes == 0 {
		t.Fatalf("journal after the kill: %+v", jr)
	}
	before := len(s.log())

	e = d.httpEngine(fetch.Options{})
	d.start(e) // resumes the interrupted install
	d.assertArmedWith(img)
	resumed := false
	for _, r := range s.log()[before:] {
		if strings.HasPrefix(r, "bytes=") && strings.HasSuffix(r, `|"v2"`) {
			resumed = true
		}
	}
	if !resumed {
		t.Fatalf("the restarted daemon did not resume with a Range request: %q", s.log()[before:])
	}
	if jr2 := d.journalRec(); jr2.Resumes != 1 || jr2.Tx != jr.Tx {
		t.Fatalf("journal after resume %+v", jr2)
	}
}

// A delta bundle over HTTP: the source check reads the start of the payload,
// the bundle is requested again from the start, and a connection cut during
// the second download resumes with Range like any download. A delta whose
// source does not match falls back to the full bundle's URL.
func TestDeltaOverHTTPWithFallback(t *testing.T) {
	d := newDevice(t)
	old := d.slotBytes("A", 3<<20)
	nu := bytes.Clone(old)
	copy(nu[1<<20:], bytes.Repeat([]byte("release 1.1 "), 4000))
	raw, err := os.ReadFile(deltaBundle(t, d, old, nu))
	if err != nil {
		t.Fatal(err)
	}
	ds := &bundleServer{content: raw, etag: `"delta"`, fault: func(n int) int64 {
		if n == 2 {
			return int64(len(raw)) / 2 // the second request (after the source check) is cut
		}
		return -1
	}}
	e := d.httpEngine(fetch.Options{})
	d.start(e)
	if err := installHTTP(t, e, serveBundle(t, ds)); err != nil {
		t.Fatalf("delta over HTTP: %v", err)
	}
	d.assertArmedWith(nu)
	if reqs := ds.log(); len(reqs) < 3 || reqs[0] != "|" || reqs[1] != "|" || !strings.HasPrefix(reqs[2], "bytes=") {
		t.Fatalf("requests %q: want the source check, a fresh download, then a Range resume", reqs)
	}

	// Another device whose active slot holds something else: the delta's
	// source check fails and the full bundle comes from its own URL.
	d2 := newDevice(t)
	d2.key, d2.keyring = d.key, d.keyring
	d2.writeSlot("A", image(9, 3<<20))
	fullRaw, err := os.ReadFile(d2.bundleFile("full.otab", "1.1", 0, nu, bundle.EncodingZstd))
	if err != nil {
		t.Fatal(err)
	}
	fs := &bundleServer{content: fullRaw, etag: `"full"`}
	ds2 := &bundleServer{content: raw, etag: `"delta"`}
	e2 := d2.httpEngine(fetch.Options{})
	d2.start(e2)
	if _, err := e2.installNow(serveBundle(t, ds2), map[string]any{"fallback": serveBundle(t, fs)}); err != nil {
		t.Fatalf("fallback over HTTP: %v", err)
	}
	d2.assertArmedWith(nu)
	if n := len(ds2.log()); n != 1 {
		t.Fatalf("the mismatched delta was requested %d times, want once", n)
	}
}
