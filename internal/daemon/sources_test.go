package daemon

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/update"
)

// The daemon's downloader, built from [fetch] as otad serve builds it,
// sends the configured header only inside [fetch] origins — not to another
// loopback listener an install names, not along a redirect — and an
// in-process caller's own headers (source-options) only to its URL's site.
func TestConfiguredCredentialsStayInOrigins(t *testing.T) {
	var leaked, outside atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outside.Add(1)
		if r.Header.Get("Authorization") != "" || r.Header.Get("X-Own") != "" {
			leaked.Add(1)
		}
		io.WriteString(w, "bundle bytes")
	}))
	defer other.Close()
	var inside atomic.Int32
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fleet/away" {
			http.Redirect(w, r, other.URL+"/x", http.StatusFound)
			return
		}
		if r.Header.Get("Authorization") == "Bearer fleet-token" {
			inside.Add(1)
		}
		io.WriteString(w, "bundle bytes")
	}))
	defer origin.Close()
	cfg := config.Fetch{Headers: [][2]string{{"Authorization", "Bearer fleet-token"}}, Origins: []string{origin.URL + "/fleet"}, Redirects: "any", MinRate: -1}
	fo, err := FetchOptions(cfg)
	must(t, err)
	open := openSource(fo)
	read := func(ctx context.Context, u string) {
		s, err := open(ctx, u)
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		defer s.Close()
		if _, err := io.ReadAll(s); err != nil {
			t.Fatalf("%s: %v", u, err)
		}
	}
	read(context.Background(), origin.URL+"/fleet/b.otab")
	read(context.Background(), other.URL+"/b.otab")
	read(context.Background(), origin.URL+"/fleet/away")
	own := update.WithSourceOptions(context.Background(), fetch.RequestOptions{Headers: []string{"X-Own: 1"}})
	read(own, origin.URL+"/fleet/away")
	if inside.Load() != 1 || outside.Load() != 3 || leaked.Load() != 0 {
		t.Fatalf("inside the origin %d requests with the token (want 1); outside %d requests (want 3), %d with a credential (want 0)",
			inside.Load(), outside.Load(), leaked.Load())
	}
}
