package extsign

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/otadev/otad/internal/bundle"
)

// What a signing command receives on stdin.
const (
	InputMessage = "message" // the exact signed bytes (bundle.SignedMessage)
	InputDigest  = "digest"  // their SHA-256, 32 raw bytes (P-256 and RSA only)
)

// maxSignatureOutput bounds what is read from a signing command's stdout.
const maxSignatureOutput = 64 << 10

// Command signs by running a shell command line (sh -c), e.g. a cloud KMS
// CLI. Stdin: the message or its SHA-256 (Input). Environment:
// OTAD_SIGN_KEY_ID, OTAD_SIGN_ALG, OTAD_SIGN_INPUT and OTAD_SIGN_SHA256
// (hex digest, for CLIs that take it as an argument). Stdout: the
// signature, raw, hex or base64; P-256 also as DER. Stderr goes to Stderr.
type Command struct {
	Line   string
	Input  string // InputMessage (default) or InputDigest
	Pub    *bundle.PublicKey
	Stderr io.Writer
}

// Public returns the keyring entry.
func (c *Command) Public() *bundle.PublicKey { return c.Pub }

// SignMessage runs the command once and returns the parsed signature,
// verified against Pub.
func (c *Command) SignMessage(ctx context.Context, msg []byte) ([]byte, error) {
	if c.Pub == nil {
		return nil, errors.New("extsign: signing command without its public key")
	}
	h := sha256.Sum256(msg)
	in := msg
	switch c.Input {
	case "", InputMessage:
	case InputDigest:
		if c.Pub.Alg == bundle.AlgEd25519 {
			return nil, errors.New("extsign: Ed25519 signs the message itself, not a digest: use input message")
		}
		in = h[:]
	default:
		return nil, fmt.Errorf("extsign: signer input %q: want %s or %s", c.Input, InputMessage, InputDigest)
	}
	input := c.Input
	if input == "" {
		input = InputMessage
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", c.Line)
	cmd.Env = append(os.Environ(), "OTAD_SIGN_KEY_ID="+c.Pub.ID, "OTAD_SIGN_ALG="+c.Pub.Alg,
		"OTAD_SIGN_INPUT="+input, "OTAD_SIGN_SHA256="+hex.EncodeToString(h[:]))
	cmd.Stdin = bytes.NewReader(in)
	var out limitedBuffer
	cmd.Stdout = &out
	cmd.Stderr = c.Stderr
	if cmd.Stderr == nil {
		cmd.Stderr = io.Discard
	}
	killGroup(cmd)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("extsign: signing command for %s: %w", c.Pub.ID, err)
	}
	if out.over {
		return nil, fmt.Errorf("extsign: signing command for %s printed more than %d bytes", c.Pub.ID, maxSignatureOutput)
	}
	sig, err := bundle.ParseSignatureBytes(c.Pub, out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("extsign: signing command output: %w", err)
	}
	if err := c.Pub.VerifyMessage(msg, sig); err != nil {
		return nil, fmt.Errorf("extsign: signing command for %s (input %s): %w", c.Pub.ID, input, err)
	}
	return sig, nil
}

// limitedBuffer keeps at most maxSignatureOutput bytes and notes overflow
// (it keeps accepting so the command is not killed by EPIPE mid-write).
type limitedBuffer struct {
	bytes.Buffer
	over bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxSignatureOutput - l.Len(); len(p) > room {
		l.over = true
		l.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return l.Buffer.Write(p)
}
