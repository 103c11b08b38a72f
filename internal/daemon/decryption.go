package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/otadev/otad/internal/crypt"
)

// ErrKeyMode: the decryption key file is readable by group or others.
var ErrKeyMode = errors.New("daemon: decryption key is readable by group or others")

// maxKeyFile bounds what is read from a key file (a PEM key is < 1 KiB).
const maxKeyFile = 16 << 10

// LoadDecryptionKey reads [keyring] decryption-key: "" means none (encrypted
// bundles are refused). The file must be a regular file with no group or
// other permission bits: a key others can read is a key others have, and it
// is refused rather than used. Errors name the file, never its contents.
func LoadDecryptionKey(path string) (*crypt.PrivateKey, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("daemon: decryption key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("daemon: decryption key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("daemon: decryption key %s is not a regular file", path)
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o (chmod 600)", ErrKeyMode, path, m)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("daemon: decryption key: %w", err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("daemon: decryption key %s is larger than %d bytes", path, maxKeyFile)
	}
	k, err := crypt.ParsePrivatePEM(b)
	if err != nil {
		return nil, fmt.Errorf("daemon: decryption key %s: %w", path, err)
	}
	return k, nil
}
