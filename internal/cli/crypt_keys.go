package cli

import (
	"fmt"
	"os"

	"github.com/otadev/otad/internal/crypt"
)

// Recipient key files for encrypted bundles (bundle_crypt.go, and verify's
// --decryption-key on device builds too).

func readRecipients(paths []string) ([]*crypt.PublicKey, error) {
	var out []*crypt.PublicKey
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		k, err := crypt.ParsePublicPEM(b)
		if err != nil {
			return nil, fmt.Errorf("recipient %s: %w", p, err)
		}
		out = append(out, k)
	}
	return out, nil
}

func readIdentity(path string) (*crypt.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := crypt.ParsePrivatePEM(b)
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", path, err)
	}
	return k, nil
}
