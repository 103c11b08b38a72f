package bundle

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"unicode"
)

// Signer makes signatures for one key. *PrivateKey is one (a key file on
// the build host); internal/bundle/extsign has signers whose private key
// never leaves a PKCS#11 token or a KMS.
type Signer interface {
	// Public is the key's keyring entry (id, algorithm, role, public key).
	Public() *PublicKey
	// SignMessage signs msg exactly as given and returns the signature in
	// the block's encoding (Ed25519 64 bytes, P-256 r||s, RSA modulus
	// sized). For bundles msg is SignedMessage(manifest).
	SignMessage(ctx context.Context, msg []byte) ([]byte, error)
}

// SignMessage makes k a Signer.
func (k *PrivateKey) SignMessage(ctx context.Context, msg []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return k.signMessage(rand.Reader, msg)
}

// SignedMessage is what a bundle signature covers: SignaturePrefix and
// the manifest bytes. `otad bundle digest` hands it (or its SHA-256) to
// signers that work elsewhere.
func SignedMessage(manifest []byte) []byte { return signedMessage(manifest) }

// signAll signs manifest with each signer in turn and returns the
// signature block.
func signAll(ctx context.Context, signers []Signer, manifest []byte) ([]byte, error) {
	var sigs []Signature
	for _, s := range signers {
		sig, err := SignManifest(ctx, s, manifest)
		if err != nil {
			return nil, err
		}
		sigs = append(sigs, sig)
	}
	return marshalSignatures(sigs)
}

// SignManifest has s sign manifest and checks the result against s's
// public key before returning it, so a wrong token object, a wrong
// padding or a faulty HSM never ends up in a bundle.
func SignManifest(ctx context.Context, s Signer, manifest []byte) (Signature, error) {
	pub := s.Public()
	sig, err := s.SignMessage(ctx, signedMessage(manifest))
	if err != nil {
		return Signature{}, fmt.Errorf("bundle: sign with %s: %w", pub.ID, err)
	}
	return checkedSignature(pub, manifest, sig)
}

// checkedSignature builds the entry for a raw signature by pub over
// manifest, verifying it first.
func checkedSignature(pub *PublicKey, manifest, sig []byte) (Signature, error) {
	s := Signature{KeyID: pub.ID, Algorithm: pub.Alg, Sig: sig}
	if isRSA(pub.Alg) {
		s.KeyHash = pub.keyHash()
	}
	if err := pub.Verify(manifest, s); err != nil {
		return Signature{}, fmt.Errorf("signature made for key %s is not good, not using it: %w", pub.ID, err)
	}
	return s, nil
}

// ParseSignatureBytes accepts a signature as external tools print it and
// returns the block's encoding for pub: raw bytes, hex or base64 text
// (surrounding white space ignored), and for P-256 also ASN.1 DER
// (what OpenSSL and cloud KMS produce), converted to r||s.
func ParseSignatureBytes(pub *PublicKey, b []byte) ([]byte, error) {
	want := sigSize
	if isRSA(pub.Alg) {
		want = pub.Bits() / 8
	}
	cands := [][]byte{b}
	if t := bytes.TrimFunc(b, unicode.IsSpace); len(t) > 0 {
		if h, err := hex.DecodeString(string(t)); err == nil {
			cands = append(cands, h)
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if d, err := enc.DecodeString(string(t)); err == nil {
				cands = append(cands, d)
			}
		}
	}
	for _, c := range cands {
		if len(c) == want {
			return c, nil
		}
		if pub.Alg == AlgP256 {
			if rs, ok := ecdsaDERToRS(c); ok {
				return rs, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: key %s (%s): signature is %d bytes and no hex, base64 or DER form of it is %d bytes", ErrMalformed, pub.ID, pub.Alg, len(b), want)
}

// ecdsaDERToRS converts an ASN.1 ECDSA-Sig-Value to 64-byte r||s.
func ecdsaDERToRS(der []byte) ([]byte, bool) {
	var v struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil || len(rest) != 0 || v.R == nil || v.S == nil || v.R.Sign() <= 0 || v.S.Sign() <= 0 ||
		v.R.BitLen() > 256 || v.S.BitLen() > 256 {
		return nil, false
	}
	out := make([]byte, sigSize)
	v.R.FillBytes(out[:32])
	v.S.FillBytes(out[32:])
	return out, true
}

// Digest is what an air-gapped signer needs: the exact signed bytes and
// their SHA-256 (P-256 and RSA sign the SHA-256; Ed25519 signs the bytes).
type Digest struct {
	Identity string // hex SHA-256 of the manifest
	Message  []byte // SignedMessage(manifest)
	SHA256   [32]byte
}

// DigestOf reads a bundle's front matter (signatures NOT checked) and
// returns what a signature over it covers.
func DigestOf(src io.Reader) (*Digest, error) {
	f, err := Inspect(src)
	if err != nil {
		return nil, err
	}
	msg := signedMessage(f.ManifestBytes)
	return &Digest{Identity: f.Identity, Message: msg, SHA256: sha256.Sum256(msg)}, nil
}

// AddSignatures copies the bundle from src to dst with one more signature
// per signer; an existing signature by the same key id is replaced. Every
// new signature is verified against its public key before anything is
// written. The manifest bytes, and so the bundle's Identity, stay the same.
func AddSignatures(ctx context.Context, dst io.Writer, src io.Reader, signers ...Signer) error {
	f, err := Inspect(src)
	if err != nil {
		return err
	}
	var add []Signature
	for _, s := range signers {
		sig, err := SignManifest(ctx, s, f.ManifestBytes)
		if err != nil {
			return err
		}
		add = append(add, sig)
	}
	return rewriteFront(dst, src, f, add)
}

// AttachSignature adds a signature made elsewhere (air-gapped signing:
// `otad bundle digest`, sign, `otad bundle attach-signature`). sig is in
// any form ParseSignatureBytes takes; it must verify against pub over this
// bundle's manifest, else nothing is written.
func AttachSignature(dst io.Writer, src io.Reader, pub *PublicKey, sig []byte) error {
	f, err := Inspect(src)
	if err != nil {
		return err
	}
	raw, err := ParseSignatureBytes(pub, sig)
	if err != nil {
		return err
	}
	s, err := checkedSignature(pub, f.ManifestBytes, raw)
	if err != nil {
		return err
	}
	return rewriteFront(dst, src, f, []Signature{s})
}

// rewriteFront writes header, manifest and the signature block (old
// entries minus those replaced by add, then add), then copies the rest of
// src unchanged.
func rewriteFront(dst io.Writer, src io.Reader, f *Front, add []Signature) error {
	replaced := map[string]bool{}
	for _, s := range add {
		replaced[s.KeyID] = true
	}
	sigs := []Signature{}
	for _, old := range f.Signatures {
		if !replaced[old.KeyID] {
			sigs = append(sigs, old)
		}
	}
	sigs = append(sigs, add...)
	sb, err := marshalSignatures(sigs)
	if err != nil {
		return err
	}
	var front bytes.Buffer
	front.Write(header{ManifestLen: uint32(len(f.ManifestBytes)), SignatureLen: uint32(len(sb)), Flags: f.flags()}.marshal())
	front.Write(f.ManifestBytes)
	front.Write(sb)
	front.Write(f.Recipients) // encrypted bundles keep their recipients
	if _, err := dst.Write(front.Bytes()); err != nil {
		return fmt.Errorf("bundle: write: %w", err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		return fmt.Errorf("bundle: copy payload: %w", err)
	}
	return nil
}
