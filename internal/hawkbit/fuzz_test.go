package hawkbit

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/fleet"
)

// Whatever a hostile server answers to the poll and the deployment
// request, decoding it, choosing the artifact and resolving its link must
// return an error or a link on the server's own scheme — never panic.
func FuzzServerAnswers(f *testing.F) {
	f.Add([]byte(`{"config":{"polling":{"sleep":"00:05:00"}},"_links":{"deploymentBase":{"href":"http://h/DEFAULT/controller/v1/d/deploymentBase/3?c=1"}}}`))
	f.Add([]byte(`{"id":"3","deployment":{"download":"forced","update":"forced","chunks":[{"part":"os","version":"2.0","name":"r","artifacts":[{"filename":"u.otab","size":10,"hashes":{"sha256":"00"},"_links":{"download-http":{"href":"http://h/a/u.otab"}}}]}]}}`))
	f.Add([]byte(`{"deployment":{"chunks":[{"part":"os","artifacts":[{"filename":"u-delta.otab"},{"filename":"u.otab","_links":{"download":{"href":"javascript:x"}}}]}]}}`))
	store := fleet.Store{Path: filepath.Join(f.TempDir(), "a.json")} // never written here
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := New(Config{Server: "http://127.0.0.1:8080/base", ControllerID: "dev1", Store: store}, nil)
		if err != nil {
			t.Fatal(err)
		}
		var root ControllerBase
		_ = decode(bytes.NewReader(b), &root)
		var db DeploymentBase
		if decode(bytes.NewReader(b), &db) != nil {
			return
		}
		art, fb, _, err := c.pick(&db)
		if err != nil {
			return
		}
		for _, a := range []*Artifact{art, fb} {
			if a == nil {
				continue
			}
			if l := c.link(a); l != "" && !strings.HasPrefix(l, "http://") && !strings.HasPrefix(l, "https://") {
				t.Fatalf("link %q is not http(s)", l)
			}
		}
	})
}
