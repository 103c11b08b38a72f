package hawkbit

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/fleet"
	"github.com/otadev/otad/internal/hawkbit/dditest"
)

// artifactGets counts GETs of one artifact on the DDI server.
func (b *board) artifactGets(name string) int {
	n := 0
	for _, r := range b.srv.Requests() {
		if r.Method == http.MethodGet && strings.HasSuffix(r.Path, "/artifacts/"+name) {
			n++
		}
	}
	return n
}

// The token goes to the server's origin only: an artifact link that
// redirects to another origin (a CDN) is followed without it, and every
// DDI request carries it.
func TestTokenNeverLeavesTheServerOrigin(t *testing.T) {
	b := newBoard(t)
	data := b.bundle("test-board", "2.0", 1, image(10, 1<<20))
	var mu sync.Mutex
	var leaked []string
	seen := 0
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen++
		for k := range r.Header {
			if k == "Authorization" || strings.Contains(strings.Join(r.Header[k], " "), testToken) {
				leaked = append(leaked, k+": "+r.Header.Get(k))
			}
		}
		mu.Unlock()
		http.ServeContent(w, r, "u.otab", b.clock.Now(), bytes.NewReader(data))
	}))
	defer cdn.Close()
	id := b.deploy("2.0", data, "")
	b.srv.Lock(func() { b.srv.Redirect["update-2.0.otab"] = cdn.URL + "/pool/u.otab" })
	b.drive(b.hasFinal(id))
	if f := b.srv.Finals(id); len(f) != 1 || f[0].Finished != "success" {
		t.Fatalf("finals %v", f)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen == 0 {
		t.Fatal("the redirect was not followed")
	}
	if len(leaked) > 0 {
		t.Fatalf("token sent to another origin: %v", leaked)
	}
	for _, r := range b.srv.Requests() {
		if r.Auth != "TargetToken "+testToken {
			t.Fatalf("DDI request %s %s without the token", r.Method, r.Path)
		}
	}
}

// authTransport below http.Client: the header is set per hop, for the
// server's origin only, and a header someone else set is removed for a
// foreign origin.
func TestAuthTransportPerOrigin(t *testing.T) {
	var got []string
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = append(got, r.URL.Host+"="+r.Header.Get("Authorization"))
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	})
	at := &authTransport{base: rt, origin: "https://hawkbit.example:443", auth: "TargetToken x"}
	for _, u := range []string{"https://hawkbit.example/a", "https://hawkbit.example:443/b", "http://hawkbit.example/c",
		"https://hawkbit.example:8443/d", "https://cdn.example/e"} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer other")
		if _, err := at.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"hawkbit.example=TargetToken x", "hawkbit.example:443=TargetToken x", "hawkbit.example=",
		"hawkbit.example:8443=", "cdn.example="}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestTokenFileRefusedIfReadableByOthers(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	must(t, os.WriteFile(p, []byte("abc\n"), 0o644))
	if _, err := ReadToken(p); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("world-readable token accepted: %v", err)
	}
	must(t, os.Chmod(p, 0o640))
	if tok, err := ReadToken(p); err != nil || tok != "abc" {
		t.Fatalf("token %q, %v", tok, err)
	}
	must(t, os.WriteFile(p, []byte("\n"), 0o600))
	if _, err := ReadToken(p); err == nil {
		t.Fatal("empty token accepted")
	}
}

// A download cut again and again resumes with Range, at most max-resumes
// times; then the action ends with closed/failure, and no more requests.
func TestResumeBounded(t *testing.T) {
	t.Run("resumes then succeeds", func(t *testing.T) {
		b := newBoard(t)
		b.maxResumes = 8
		data := b.bundle("test-board", "2.0", 1, image(11, 1<<20))
		id := b.deploy("2.0", data, "")
		b.srv.CutAfter = 300 << 10
		b.drive(b.hasFinal(id))
		if f := b.srv.Finals(id); len(f) != 1 || f[0].Finished != "success" {
			t.Fatalf("finals %v", f)
		}
		if n := b.artifactGets("update-2.0.otab"); n < 4 || n > 9 {
			t.Fatalf("%d requests for a %d-byte artifact cut every 300 KiB", n, len(data))
		}
	})
	t.Run("bounded", func(t *testing.T) {
		b := newBoard(t)
		b.maxResumes = 2
		id := b.deploy("2.0", b.bundle("test-board", "2.0", 1, image(12, 1<<20)), "")
		b.srv.CutAfter = 100 << 10
		r := b.powerOn()
		b.waitFor("final", b.hasFinal(id))
		polls := b.basePolls()
		b.waitFor("more polls", func() bool { return b.basePolls() > polls+5 })
		r.stop()
		f := b.srv.Finals(id)
		if len(f) != 1 || f[0].Finished != "failure" || !strings.Contains(strings.Join(f[0].Details, " "), "max-resumes") {
			t.Fatalf("finals %v", f)
		}
		if n := b.artifactGets("update-2.0.otab"); n != b.maxResumes+1 {
			t.Fatalf("%d artifact requests, want first + %d resumes", n, b.maxResumes)
		}
		if b.envVar("upgrade_available") != "0" {
			t.Fatal("armed after a failed download")
		}
	})
}

// 404 or 410 on the artifact ends the action at once: one request, a
// failure, and no retry at later polls (rauc-hawkbit-updater #158 looped).
func TestArtifactGoneEndsAction(t *testing.T) {
	for _, code := range []int{http.StatusNotFound, http.StatusGone} {
		b := newBoard(t)
		id := b.deploy("2.0", b.bundle("test-board", "2.0", 1, image(13, 1<<20)), "")
		b.srv.Lock(func() { b.srv.ArtifactStatus["update-2.0.otab"] = code })
		r := b.powerOn()
		b.waitFor("final", b.hasFinal(id))
		polls := b.basePolls()
		b.waitFor("more polls", func() bool { return b.basePolls() > polls+5 })
		r.stop()
		f := b.srv.Finals(id)
		if len(f) != 1 || f[0].Finished != "failure" {
			t.Fatalf("%d: finals %v", code, f)
		}
		if n := b.artifactGets("update-2.0.otab"); n != 1 {
			t.Fatalf("%d: %d artifact requests, want 1", code, n)
		}
		t.Logf("%d: %s", code, f[0])
	}
}

// A corrupted artifact (its bytes differ from the server's sha256 but the
// bundle is still well-formed up to that point) never gets armed.
func TestArtifactHashMismatchRefused(t *testing.T) {
	b := newBoard(t)
	good := b.bundle("test-board", "2.0", 1, image(14, 1<<20))
	id := b.srv.Deploy(dditest.Action{Version: "2.0", Files: []dditest.File{{Name: "update-2.0.otab", Data: good}}})
	// Serve other bytes than announced: a second bundle of the same size
	// (validly signed, so only the artifact hash can catch it).
	other := b.bundle("test-board", "2.0", 1, image(15, 1<<20))
	if len(other) != len(good) {
		t.Skip("bundles differ in size")
	}
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "u.otab", b.clock.Now(), bytes.NewReader(other))
	}))
	defer cdn.Close()
	b.srv.Lock(func() { b.srv.Redirect["update-2.0.otab"] = cdn.URL + "/u.otab" })
	r := b.powerOn()
	b.waitFor("final", b.hasFinal(id))
	r.stop()
	f := b.srv.Finals(id)
	if len(f) != 1 || f[0].Finished != "failure" || !strings.Contains(strings.Join(f[0].Details, " "), "sha256") {
		t.Fatalf("finals %v", f)
	}
	if b.envVar("upgrade_available") != "0" {
		t.Fatal("armed an artifact whose hash did not match")
	}
}

// The token binds to the server's origin whatever the form of the URL.
func TestTokenBoundForServerForms(t *testing.T) {
	for _, server := range []string{"https://h.example", "https://h.example/", "https://h.example:8443/ddi/", "http://127.0.0.1:8080/hawkbit"} {
		creds := &fetch.Credentials{}
		_, err := New(Config{Server: server, ControllerID: "d", Token: "t", Credentials: creds,
			Store: fleet.Store{Path: filepath.Join(t.TempDir(), "a.json")}}, nil)
		if err != nil || len(creds.Origins()) != 1 {
			t.Errorf("%s: %v, origins %v", server, err, creds.Origins())
		}
	}
}
