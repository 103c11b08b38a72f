package extsign

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/otadev/otad/internal/bundle"
)

// Environment variables read by NewPKCS11 when the URI does not say.
const (
	EnvModule = "OTAD_PKCS11_MODULE" // PKCS#11 module (.so) path
	EnvPIN    = "OTAD_PKCS11_PIN"    // user PIN
	EnvTool   = "OTAD_PKCS11_TOOL"   // pkcs11-tool binary (default: from PATH)
	// DefaultModule is used when neither the URI nor EnvModule names a
	// module and it exists (Debian's softhsm2); otherwise pkcs11-tool's own
	// default (OpenSC's smart-card module) applies.
	DefaultModule = "/usr/lib/softhsm/libsofthsm2.so"
	// pinEnv carries the PIN into pkcs11-tool (--pin env:NAME) so it never
	// appears in a process argument list.
	pinEnv = "OTAD_PKCS11_TOOL_PIN"
	// signAttempts: SoftHSM 2.6 with OpenSSL 3 sometimes fails an ECDSA
	// C_Sign (CKR_GENERAL_ERROR) or, per SoftHSMv2#901, returns a signature
	// that does not verify; a fresh attempt succeeds. Each result is
	// verified, so a retry can never let a bad signature through.
	signAttempts = 3
)

// digestInfoSHA256 is the DER prefix PKCS#1 v1.5 puts before a SHA-256
// hash (RFC 8017 §9.2 note 1); CKM_RSA_PKCS signs DigestInfo, not a hash.
var digestInfoSHA256 = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

// PKCS11 signs with a private key object in a PKCS#11 token by running
// pkcs11-tool --sign. It uses the raw mechanisms most tokens have (CKM_ECDSA
// on the SHA-256, CKM_RSA_PKCS_PSS on the SHA-256 with MGF1-SHA256 and a
// 32-byte salt, CKM_RSA_PKCS on DigestInfo, CKM_EDDSA on the message).
type PKCS11 struct {
	URI    *URI
	Pub    *bundle.PublicKey // the keyring entry of this key (checked against every signature)
	Tool   string
	Module string // "" = pkcs11-tool's default
	pin    string
	TmpDir string // for the to-be-signed and signature files; "" = os.TempDir()
}

// NewPKCS11 resolves module, PIN and tool from the URI, then env (getenv,
// normally os.Getenv). pub may be nil when only ReadPublicKey is used.
func NewPKCS11(uri string, pub *bundle.PublicKey, getenv func(string) string) (*PKCS11, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	p := &PKCS11{URI: u, Pub: pub, Tool: getenv(EnvTool), Module: u.ModulePath}
	if p.Tool == "" {
		p.Tool = "pkcs11-tool"
	}
	if p.Module == "" {
		p.Module = getenv(EnvModule)
	}
	if p.Module == "" {
		if _, err := os.Stat(DefaultModule); err == nil {
			p.Module = DefaultModule
		}
	}
	switch {
	case u.PINValue != "":
		p.pin = u.PINValue
	case u.PINSource != "":
		b, err := os.ReadFile(u.PINSource)
		if err != nil {
			return nil, fmt.Errorf("extsign: pin-source of %s: %w", u, err)
		}
		p.pin = strings.TrimRight(string(b), "\r\n")
	default:
		p.pin = getenv(EnvPIN)
	}
	return p, nil
}

// Public returns the keyring entry.
func (p *PKCS11) Public() *bundle.PublicKey { return p.Pub }

// run runs pkcs11-tool on the URI's object (selected by id, resolved
// from the label first); the PIN goes through the environment.
func (p *PKCS11) run(ctx context.Context, login bool, args ...string) error {
	if err := p.resolveID(ctx); err != nil {
		return err
	}
	_, err := p.output(ctx, login, true, args...)
	return err
}

// ReadPublicKey exports the public key object matching the URI as PKIX
// DER (what `otad bundle pubkey --signer` turns into a keyring file).
func (p *PKCS11) ReadPublicKey(ctx context.Context) ([]byte, error) {
	dir, err := os.MkdirTemp(p.TmpDir, "otad-p11-")
	if err != nil {
		return nil, fmt.Errorf("extsign: %w", err)
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "pub.der")
	// Logged in: the label → id lookup lists private objects.
	if err := p.run(ctx, true, "--read-object", "--type", "pubkey", "--output-file", out); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("extsign: public key of %s: %w", p.URI, err)
	}
	return b, nil
}

// SignMessage signs msg inside the token.
func (p *PKCS11) SignMessage(ctx context.Context, msg []byte) ([]byte, error) {
	if p.Pub == nil {
		return nil, errors.New("extsign: PKCS#11 signer without its public key")
	}
	h := sha256.Sum256(msg)
	var in []byte
	var mech []string
	switch p.Pub.Alg {
	case bundle.AlgP256:
		in, mech = h[:], []string{"--mechanism", "ECDSA", "--signature-format", "rs"}
	case bundle.AlgRSAPSS:
		in, mech = h[:], []string{"--mechanism", "RSA-PKCS-PSS", "--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256", "--salt-len", "32"}
	case bundle.AlgRSAPKCS1:
		in, mech = append(append([]byte{}, digestInfoSHA256...), h[:]...), []string{"--mechanism", "RSA-PKCS"}
	case bundle.AlgEd25519:
		in, mech = msg, []string{"--mechanism", "EDDSA"}
	default:
		return nil, fmt.Errorf("extsign: %s keys cannot sign through PKCS#11", p.Pub.Alg)
	}
	dir, err := os.MkdirTemp(p.TmpDir, "otad-p11-")
	if err != nil {
		return nil, fmt.Errorf("extsign: %w", err)
	}
	defer os.RemoveAll(dir)
	inPath, outPath := filepath.Join(dir, "tbs"), filepath.Join(dir, "sig")
	if err := os.WriteFile(inPath, in, 0o600); err != nil {
		return nil, fmt.Errorf("extsign: %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < signAttempts; attempt++ {
		os.Remove(outPath)
		args := append([]string{"--sign", "--input-file", inPath, "--output-file", outPath}, mech...)
		if lastErr = p.run(ctx, true, args...); lastErr != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		sig, err := os.ReadFile(outPath)
		if err != nil {
			lastErr = fmt.Errorf("extsign: %w", err)
			continue
		}
		if lastErr = p.Pub.VerifyMessage(msg, sig); lastErr == nil {
			return sig, nil
		}
	}
	return nil, fmt.Errorf("extsign: %s after %d attempts: %w", p.URI, signAttempts, lastErr)
}

// killGroup makes ctx cancellation end the command's whole process group
// (a signing command may be a shell pipeline).
func killGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
}

// tail is the last 512 bytes of a tool's output for an error message.
func tail(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 512 {
		b = b[len(b)-512:]
	}
	return string(b)
}
