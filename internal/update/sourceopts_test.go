package update

import (
	"context"
	"testing"
)

// The "source-options" value reaches OpenSource through the job's context,
// for the first open and for the fallback alike, and only for that install.
func TestSourceOptionsReachOpenSource(t *testing.T) {
	d := newDevice(t)
	type creds struct{ header string }
	var seen []any
	e := d.engine(func(c *Config) {
		open := c.OpenSource
		c.OpenSource = func(ctx context.Context, src string) (Source, error) {
			seen = append(seen, SourceOptions(ctx))
			return open(ctx, src)
		}
	})
	d.start(e)
	p := d.bundleFile("u.otab", "2.0", 1, image(7, 3*chunk), "raw")
	want := creds{header: "Authorization: x"}
	if _, err := e.installNow(p, map[string]any{"source-options": want, "reboot": false}); err != nil {
		t.Fatalf("install: %v", err)
	}
	if len(seen) == 0 {
		t.Fatal("OpenSource never called")
	}
	for i, v := range seen {
		if v != want {
			t.Fatalf("open %d saw %v, want %v", i, v, want)
		}
	}
	seen = nil
	if _, err := e.Inspect(context.Background(), p); err != nil {
		t.Fatalf("inspect: %v", err)
	}
	if len(seen) != 1 || seen[0] != nil {
		t.Fatalf("inspect without options saw %v", seen)
	}
	if _, err := e.installNow(p, map[string]any{"source-options": nil}); err == nil {
		t.Fatal("nil source-options accepted")
	}
}
