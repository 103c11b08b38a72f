package channel

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"strings"

	"github.com/otadev/otad/internal/bundle"
)

// RoleChannel is the key role that may sign channel documents. The same
// keyring directory holds release and channel keys; the role keeps a
// bundle-signing key from signing the channel and the other way round.
const RoleChannel = "channel"

// The signed file is a small text envelope around the exact document bytes:
//
//	otad-channel v1
//	signature KEY-ID ALG BASE64
//	(one line per signature, at most MaxSignatures)
//	(an empty line)
//	DOCUMENT BYTES, to the end of the file
//
// Every signature is over signedPrefix followed by the document bytes.
const (
	magicLine    = "otad-channel v1"
	signedPrefix = "otad channel v1\x00"
)

// Signer signs document bytes: *bundle.PrivateKey.
type Signer interface {
	Sign(rand io.Reader, msg []byte) (bundle.Signature, error)
}

// Sign wraps doc (canonical bytes from Encode) in a signed envelope, one
// signature per key.
func Sign(rand io.Reader, doc []byte, keys ...Signer) ([]byte, error) {
	if len(keys) == 0 || len(keys) > MaxSignatures {
		return nil, fmt.Errorf("channel: sign with 1 to %d keys, got %d", MaxSignatures, len(keys))
	}
	var b bytes.Buffer
	b.WriteString(magicLine + "\n")
	msg := signedMessage(doc)
	for _, k := range keys {
		s, err := k.Sign(rand, msg)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "signature %s %s %s\n", s.KeyID, s.Algorithm, base64.StdEncoding.EncodeToString(s.Sig))
	}
	b.WriteString("\n")
	b.Write(doc)
	if b.Len() > MaxDocumentSize {
		return nil, fmt.Errorf("%w: %d bytes signed, at most %d", ErrTooLarge, b.Len(), MaxDocumentSize)
	}
	return b.Bytes(), nil
}

func signedMessage(doc []byte) []byte {
	return append([]byte(signedPrefix), doc...)
}

// Keyring derives the channel keyring from the device's bundle keyring:
// the same keys and threshold, role "channel" only.
func Keyring(kr *bundle.Keyring) (*bundle.Keyring, error) {
	return bundle.NewKeyring(bundle.Policy{Threshold: kr.Policy.Threshold, Roles: []string{RoleChannel}}, kr.Keys()...)
}

// Open checks a signed file against kr (from Keyring) and returns the
// document bytes and the ids of the keys that counted. It reads only the
// envelope's header lines; the document bytes are not looked at until the
// signatures have passed.
func Open(signed []byte, kr *bundle.Keyring) (doc []byte, keyIDs []string, err error) {
	if len(signed) > MaxDocumentSize {
		return nil, nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(signed), MaxDocumentSize)
	}
	rest := signed
	line := func() (string, bool) {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 || i > 512 {
			return "", false
		}
		l := string(rest[:i])
		rest = rest[i+1:]
		return l, true
	}
	if l, ok := line(); !ok || l != magicLine {
		return nil, nil, fmt.Errorf("%w: not an otad channel file (first line must be %q)", ErrMalformed, magicLine)
	}
	var sigs []bundle.Signature
	for {
		l, ok := line()
		if !ok {
			return nil, nil, fmt.Errorf("%w: envelope header not terminated by an empty line", ErrMalformed)
		}
		if l == "" {
			break
		}
		f := strings.Split(l, " ")
		if len(f) != 4 || f[0] != "signature" {
			return nil, nil, fmt.Errorf("%w: envelope line %q", ErrMalformed, truncate(l, 40))
		}
		sig, err := base64.StdEncoding.DecodeString(f[3])
		if err != nil {
			return nil, nil, fmt.Errorf("%w: signature by %s: %v", ErrMalformed, truncate(f[1], 64), err)
		}
		if len(sigs) == MaxSignatures {
			return nil, nil, fmt.Errorf("%w: more than %d signatures", ErrMalformed, MaxSignatures)
		}
		sigs = append(sigs, bundle.Signature{KeyID: f[1], Algorithm: f[2], Sig: sig})
	}
	ids, err := kr.Verify(signedMessage(rest), sigs)
	if err != nil {
		return nil, nil, fmt.Errorf("channel document: %w", err)
	}
	return rest, ids, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
