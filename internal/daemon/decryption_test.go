package daemon

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/crypt"
)

func TestLoadDecryptionKey(t *testing.T) {
	k, err := crypt.GenerateKey(rand.Reader, "x25519")
	if err != nil {
		t.Fatal(err)
	}
	pemb, err := k.MarshalPrivatePEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "device.key")
	if err := os.WriteFile(path, pemb, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadDecryptionKey(path)
	if err != nil || got.Public.ID != k.Public.ID {
		t.Fatalf("0600 key: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadDecryptionKey(path); !errors.Is(err, ErrKeyMode) {
			t.Fatalf("mode %04o: %v, want ErrKeyMode", mode, err)
		}
	}
	if k, err := LoadDecryptionKey(""); k != nil || err != nil {
		t.Fatalf("no key configured: %v, %v", k, err)
	}
	bad := filepath.Join(dir, "bad.key")
	secret := "-----BEGIN PRIVATE KEY-----\nc2VjcmV0IHNlY3JldA==\n-----END PRIVATE KEY-----\n"
	if err := os.WriteFile(bad, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadDecryptionKey(bad)
	if !errors.Is(err, crypt.ErrMalformed) || strings.Contains(err.Error(), "c2VjcmV0") {
		t.Fatalf("garbage key: %v", err)
	}
	// Through the keyring loader the daemon uses.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	writeTestPub(t, keys)
	kr, err := LoadKeyring(config.Keyring{Directory: keys, Threshold: 1, DecryptionKey: path})
	if err != nil || kr.Decryption == nil || kr.Decryption.Public.ID != k.Public.ID {
		t.Fatalf("LoadKeyring: %v", err)
	}
}

func writeTestPub(t *testing.T, dir string) {
	t.Helper()
	k, err := bundle.GenerateKey(bundle.AlgEd25519, "test", "release", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := bundle.MarshalPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "test.pub"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
}
