package daemon

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/config"
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
