package fetch

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// openGuard runs Open and reports whether it returned; a source that
// blocks in open(2) (a FIFO without a writer) would hang the test forever,
// so unblock runs when Open has not returned after a generous while. This
// detects a hang; it does not measure speed.
func openGuard(t *testing.T, src string, unblock func()) (Source, error, bool) {
	t.Helper()
	type res struct {
		s   Source
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := Open(context.Background(), src, Options{})
		ch <- res{s, err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err, true
	case <-time.After(10 * time.Second):
		unblock()
		r := <-ch
		return r.s, r.err, false
	}
}

// A local path must be a regular file: a FIFO, a device, a directory or a
// symlink is refused at once, without blocking and without reading.
func TestLocalOpenRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "b.otab")
	if err := os.WriteFile(reg, payload(1000, 3), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.otab")
	if err := os.Symlink(reg, link); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"fifo":      fifo,
		"device":    "/dev/null",
		"directory": dir,
		"symlink":   link,
	} {
		t.Run(name, func(t *testing.T) {
			unblock := func() {
				// Opening the write end lets a blocked open(2) return.
				if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
			}
			src, err, returned := openGuard(t, path, unblock)
			if !returned {
				t.Errorf("Open(%s) blocked", name)
			}
			if err == nil {
				src.Close()
				t.Fatalf("Open(%s) accepted a %s", path, name)
			}
			if !errors.Is(err, ErrNotRegular) {
				t.Errorf("Open(%s) = %v, want ErrNotRegular", name, err)
			}
		})
	}
	// The control: a regular file opens.
	src, err := Open(context.Background(), reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	src.Close()
}

// credServer is a loopback listener that records whether any request
// carried a credential.
type credServer struct {
	*httptest.Server
	requests atomic.Int32
	leaked   atomic.Int32 // requests with Authorization, X-Token or a client certificate
}

func newCredServer(t *testing.T, h http.HandlerFunc) *credServer {
	cs := &credServer{}
	cs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.requests.Add(1)
		if r.Header.Get("Authorization") != "" || r.Header.Get("X-Token") != "" || (r.TLS != nil && len(r.TLS.PeerCertificates) > 0) {
			cs.leaked.Add(1)
		}
		h(w, r)
	}))
	t.Cleanup(cs.Close)
	return cs
}

// Credentials never reach a listener outside the configured origins, not
// even through a redirect from inside one; inside, every hop gets them.
func TestCredentialsStayInOrigin(t *testing.T) {
	want := payload(5000, 4)
	evil := newCredServer(t, serve(want, `"e"`))
	var good *credServer
	good = newCredServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/updates/away":
			http.Redirect(w, r, evil.URL+"/grab", http.StatusFound)
		case "/updates/out":
			http.Redirect(w, r, good.URL+"/other/b.otab", http.StatusFound)
		case "/updates/here":
			http.Redirect(w, r, good.URL+"/updates/b.otab", http.StatusFound)
		default:
			serve(want, `"g"`)(w, r)
		}
	})
	creds := &Credentials{}
	if err := creds.Add(good.URL+"/updates", []string{"Authorization: Bearer s3cret", "X-Token: t0k"}); err != nil {
		t.Fatal(err)
	}
	type tc struct {
		url       string
		redirects RedirectPolicy
		own       bool // the caller's own headers (Options.Headers) too
		ok        bool
	}
	for _, c := range []tc{
		{evil.URL + "/b.otab", RedirectSameOrigin, false, true},
		{evil.URL + "/b.otab", RedirectAny, false, true},
		{good.URL + "/updates/away", RedirectSameOrigin, false, false},
		{good.URL + "/updates/away", RedirectAny, false, true},
		{good.URL + "/updates/away", RedirectAny, true, true},
		{good.URL + "/updates/out", RedirectSameOrigin, false, false},
		{good.URL + "/updates/out", RedirectAny, false, true},
		{good.URL + "/updates/here", RedirectNone, false, false},
		{good.URL + "/updates/../b.otab", RedirectSameOrigin, false, true},
		{good.URL + "/updates%2f..%2fb.otab", RedirectSameOrigin, false, true},
		{good.URL + "/updates-old/b.otab", RedirectSameOrigin, false, true},
	} {
		opts := fastOpts(&sleeper{})
		opts.Credentials, opts.Redirects = creds, c.redirects
		if c.own {
			opts.Headers = map[string]string{"X-Token": "own"}
		}
		src, err := Open(context.Background(), c.url, opts)
		if err == nil {
			_, err = readAll(t, src)
			src.Close()
		}
		if (err == nil) != c.ok {
			t.Errorf("%s (redirects %v): err = %v, want ok=%v", c.url, c.redirects, err, c.ok)
		}
		if !c.ok && c.redirects != RedirectAny && !errors.Is(err, ErrRedirect) {
			t.Errorf("%s: err = %v, want ErrRedirect", c.url, err)
		}
	}
	if n := evil.leaked.Load(); n != 0 || evil.requests.Load() != 4 {
		t.Fatalf("listener outside the origin: %d requests, %d with credentials; want 4 without", evil.requests.Load(), n)
	}
	// Inside: the direct request and both hops of the same-origin redirect.
	good.leaked.Store(0)
	before := good.requests.Load()
	for _, p := range []string{"/updates/b.otab", "/updates/here"} {
		opts := fastOpts(&sleeper{})
		opts.Credentials = creds
		if got := fetchAll(t, good.URL+p, opts); !bytes.Equal(got, want) {
			t.Fatal("wrong bytes")
		}
	}
	if n, all := good.leaked.Load(), good.requests.Load()-before; n != 3 || all != 3 {
		t.Fatalf("inside the origin: %d of %d requests had credentials, want 3 of 3", n, all)
	}
	// Rotating a token replaces it.
	if err := creds.Add(good.URL+"/updates/", []string{"X-Token: t1"}); err != nil {
		t.Fatal(err)
	}
	cr, _ := creds.lookup(mustURL(t, good.URL+"/updates/b.otab"))
	if got := headerValues(cr.Headers, "X-Token"); len(got) != 1 || got[0] != "t1" {
		t.Fatalf("after rotation X-Token = %q", got)
	}
}

// The client certificate is presented only to its origin.
func TestClientCertStaysInOrigin(t *testing.T) {
	pki := newTestPKI(t)
	want := payload(5000, 5)
	var certs atomic.Int32
	handler := func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 {
			certs.Add(1)
		}
		serve(want, `"c"`)(w, r)
	}
	good := pki.serveRequest(t, http.HandlerFunc(handler))
	evil := pki.serveRequest(t, http.HandlerFunc(handler))
	creds := &Credentials{}
	if err := creds.SetClientCert(good.URL+"/", pki.certFile, pki.keyFile); err != nil {
		t.Fatal(err)
	}
	opts := fastOpts(&sleeper{})
	opts.CAFile, opts.Credentials, opts.Redirects = pki.caFile, creds, RedirectAny
	fetchAll(t, evil.URL+"/b.otab", opts)
	if n := certs.Load(); n != 0 {
		t.Fatalf("%d requests outside the origin saw the client certificate", n)
	}
	fetchAll(t, good.URL+"/b.otab", opts)
	if n := certs.Load(); n != 1 {
		t.Fatalf("the origin saw the certificate on %d requests, want 1", n)
	}
}

func TestParseOrigin(t *testing.T) {
	for _, bad := range []string{
		"", "updates.example", "ftp://h/", "HTTPS://h/", "https://user:pw@h/", "https://h/?q=1", "https://h/#f",
		"https://h/a/../b", "https://h/a//b", "https://h/a/./b", "https://h/a%2fb", "https:///x", "https://h/?",
	} {
		if o, err := ParseOrigin(bad); err == nil {
			t.Errorf("ParseOrigin(%q) = %v, want an error", bad, o)
		}
	}
	o, err := ParseOrigin("https://Updates.Example:443/fleet/")
	if err != nil {
		t.Fatal(err)
	}
	if o.String() != "https://updates.example/fleet" {
		t.Fatalf("String = %s", o)
	}
	for u, want := range map[string]bool{
		"https://updates.example/fleet":          true,
		"https://updates.example/fleet/b.otab":   true,
		"https://UPDATES.example:443/fleet/x/y":  true,
		"https://updates.example/fleet-old/b":    false,
		"https://updates.example/fleet/../admin": false,
		"https://updates.example/fleet/%2e%2e/a": false,
		"http://updates.example/fleet/b":         false,
		"https://updates.example:8443/fleet/b":   false,
		"https://updates.example.evil/fleet/b":   false,
		"https://u:p@updates.example/fleet/b":    false,
		"https://updates.example/b":              false,
	} {
		if got := o.Match(mustURL(t, u)); got != want {
			t.Errorf("Match(%s) = %v, want %v", u, got, want)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@h.example:8443/a/b.otab?token=x#f": "https://h.example:8443/a/b.otab",
		"/data/b.otab":                       "/data/b.otab",
		"http://h/%zz?token=x":               "http://h/%zz",
		"opening https://u:p@h/x?sig=1 done": "opening https://h/x done",
	} {
		if got := RedactText(in); got != want {
			t.Errorf("RedactText(%q) = %q, want %q", in, got, want)
		}
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func headerValues(hs [][2]string, name string) []string {
	var out []string
	for _, h := range hs {
		if strings.EqualFold(h[0], name) {
			out = append(out, h[1])
		}
	}
	return out
}

// A refused download says why without echoing the response body, the URL's
// query string or its userinfo.
func TestErrorsCarryNoSecrets(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "BODY-SECRET-0042 internal detail", http.StatusForbidden)
	}))
	defer ts.Close()
	s := &sleeper{}
	u := strings.Replace(ts.URL, "http://", "http://user:pa55word@", 1) + "/b.otab?token=QUERY-SECRET"
	_, err := Open(context.Background(), u, fastOpts(s))
	if err == nil {
		t.Fatal("403 accepted")
	}
	for _, secret := range []string{"BODY-SECRET", "QUERY-SECRET", "pa55word", "token="} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error carries %q: %v", secret, err)
		}
	}
	if !strings.Contains(err.Error(), "403") {
		t.Errorf("error does not say 403: %v", err)
	}
}

// A fleet client rotates its token while downloads run: Add and Remove
// race with lookups without a data race, and each lookup sees one whole
// credential, never a mix.
func TestCredentialsConcurrentRotation(t *testing.T) {
	creds := &Credentials{}
	const origin = "https://fleet.example/dl"
	if err := creds.Add(origin, []string{"Authorization: Bearer 0", "X-Gen: 0"}); err != nil {
		t.Fatal(err)
	}
	u := mustURL(t, "https://fleet.example/dl/b.otab")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= 500; i++ {
			n := strconv.Itoa(i)
			if err := creds.Add(origin, []string{"Authorization: Bearer " + n, "X-Gen: " + n}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 500; i++ {
		cr, _ := creds.lookup(u)
		auth, gen := headerValues(cr.Headers, "Authorization"), headerValues(cr.Headers, "X-Gen")
		if len(auth) != 1 || len(gen) != 1 || auth[0] != "Bearer "+gen[0] {
			t.Fatalf("lookup saw a mixed credential: %v", cr.Headers)
		}
	}
	<-done
	if err := creds.Remove(origin + "/"); err != nil {
		t.Fatal(err)
	}
	if cr, o := creds.lookup(u); o != nil || len(cr.Headers) != 0 {
		t.Fatalf("after Remove: %v from %v", cr.Headers, o)
	}
	if got := creds.Origins(); len(got) != 0 {
		t.Fatalf("Origins after Remove: %v", got)
	}
}
