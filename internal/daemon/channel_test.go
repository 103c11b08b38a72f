package daemon

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/channel"
	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/testutil/nginxtest"
	"github.com/otadev/otad/internal/update"
)

func TestNewChannelAgent(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	must(t, os.MkdirAll(keys, 0o755))
	for _, role := range []string{"release", "channel"} {
		k, err := bundle.GenerateKey(bundle.AlgEd25519, "k-"+role, role, rand.Reader)
		must(t, err)
		pub, err := bundle.MarshalPublicKey(k.Public())
		must(t, err)
		must(t, os.WriteFile(filepath.Join(keys, role+".pub"), pub, 0o644))
	}
	idFile := filepath.Join(dir, "machine-id")
	must(t, os.WriteFile(idFile, []byte("0123456789abcdef0123456789abcdef\n"), 0o444))
	cfg := config.Default()
	cfg.Compatible, cfg.DataDir = "gw", filepath.Join(dir, "data")
	cfg.Keyring.Directory = keys
	cfg.Channel = config.Channel{URL: "http://127.0.0.1:1/channel.json", Interval: time.Hour, Jitter: time.Minute, DeviceIDFile: idFile}
	d := &Daemon{Config: cfg}
	a, err := NewChannelAgent(d)
	must(t, err)
	if a.DeviceID != "0123456789abcdef0123456789abcdef" || a.Poller.Compatible != "gw" || a.Poller.Keyring.Policy.Roles[0] != "channel" {
		t.Fatalf("agent %+v", a)
	}
	if st, err := os.Stat(filepath.Join(cfg.DataDir, "channel")); err != nil || !st.IsDir() {
		t.Fatalf("state dir: %v", err)
	}

	cfg.Channel.Jitter = 2 * time.Hour
	if _, err := NewChannelAgent(d); err == nil || !strings.Contains(err.Error(), "jitter") {
		t.Errorf("jitter above interval: %v", err)
	}
	cfg.Channel.Jitter = time.Minute
	must(t, os.WriteFile(idFile, []byte("\n"), 0o444))
	if _, err := NewChannelAgent(d); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty device id: %v", err)
	}
}

// The channel client as `otad serve` wires it: a document served by nginx,
// the install through the daemon's engine and its OpenSource (document
// size and SHA-256 checked), the reboot, the commit, and the report
// collected by nginx.
func TestChannelThroughTheDaemon(t *testing.T) {
	dir := t.TempDir()
	a, bb := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, p := range []string{a, bb} {
		must(t, os.WriteFile(p, make([]byte, 8<<20), 0o644))
	}
	must(t, os.WriteFile(a, img(true, 1, 1<<20), 0o644))
	must(t, os.Truncate(a, 8<<20))
	b := newBoard(t, a, bb, "file")
	ck, err := bundle.GenerateKey(bundle.AlgEd25519, "chan", channel.RoleChannel, rand.Reader)
	must(t, err)
	pub, err := bundle.MarshalPublicKey(ck.Public())
	must(t, err)
	must(t, os.WriteFile(b.path("keys/chan.pub"), pub, 0o644))

	www := filepath.Join(dir, "www")
	must(t, channel.InitDir(www, "test-board", 24*time.Hour))
	good := img(true, 2, 3<<20+999)
	d, err := channel.LoadDraft(www)
	must(t, err)
	_, err = d.AddRelease(www, channel.AddOptions{Bundle: b.bundle("2.0", 1, good), Now: time.Now().Add(-time.Minute)})
	must(t, err)
	must(t, d.Save(www))
	_, err = channel.SignDir(www, rand.Reader, time.Now(), ck)
	must(t, err)
	ng := nginxtest.Start(t, www, 1)
	must(t, os.WriteFile(b.path("machine-id"), []byte("5f1e0c7a9d2b4e6f8a0b1c2d3e4f5a6b\n"), 0o444))
	b.cfg.Channel = config.Channel{URL: ng.URL + channel.DocumentFile, Interval: time.Hour, Jitter: 500 * time.Millisecond,
		ReportURL: ng.URL + "report", DeviceIDFile: b.path("machine-id")}

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waited 60 s for %s", what)
			}
		}
	}
	b.run(func(d *Daemon) {
		waitFor("the channel's install to arm slot B", func() bool { return d.Engine.Status().Operation == update.OpPendingReboot })
	})
	buf, err := os.ReadFile(bb)
	must(t, err)
	if !bytes.Equal(buf[:len(good)], good) {
		t.Fatal("slot B does not hold the release")
	}
	if s := b.powerOn(); s != "B" {
		t.Fatalf("booted %s", s)
	}
	var lines []string
	b.run(func(d *Daemon) {
		// The commit ends the action at once (engine event), not at the
		// next poll an hour away.
		waitFor("the report", func() bool { return len(ng.ReportLines(t)) > 0 })
		lines = ng.ReportLines(t)
	})
	var rep channel.Report
	must(t, json.Unmarshal([]byte(lines[0]), &rep))
	if len(lines) != 1 || rep.Result != channel.ResultSuccess || rep.Release != "2.0" || strings.Contains(lines[0], "5f1e0c7a") {
		t.Fatalf("reports %q", lines)
	}
}
