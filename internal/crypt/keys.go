package crypt

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
)

// KEM codes in the recipient block.
const (
	KEMX25519 byte = 1
	KEMP256   byte = 2
)

// KeyIDSize is the length of a recipient key id.
const KeyIDSize = 16

// KeyID names a recipient key: the first 16 bytes of SHA-256 over a label,
// the KEM code and the public key bytes. It is public information.
type KeyID [KeyIDSize]byte

func (id KeyID) String() string { return hex.EncodeToString(id[:]) }

// PublicKey is a recipient (a device, or a group of devices sharing a key).
type PublicKey struct {
	KEM byte
	key *ecdh.PublicKey
	ID  KeyID
}

// PrivateKey is a device's decryption key.
type PrivateKey struct {
	Public PublicKey
	key    *ecdh.PrivateKey
}

func curve(kem byte) (ecdh.Curve, error) {
	switch kem {
	case KEMX25519:
		return ecdh.X25519(), nil
	case KEMP256:
		return ecdh.P256(), nil
	}
	return nil, fmt.Errorf("%w: unknown KEM %d", ErrMalformed, kem)
}

// KEMName is "x25519" or "p256".
func KEMName(kem byte) string {
	switch kem {
	case KEMX25519:
		return "x25519"
	case KEMP256:
		return "p256"
	}
	return fmt.Sprintf("kem-%d", kem)
}

func newPublic(kem byte, k *ecdh.PublicKey) PublicKey {
	h := sha256.New()
	h.Write([]byte("otad recipient id v1\x00"))
	h.Write([]byte{kem})
	h.Write(k.Bytes())
	p := PublicKey{KEM: kem, key: k}
	copy(p.ID[:], h.Sum(nil))
	return p
}

// GenerateKey makes a new recipient key pair ("x25519" or "p256").
func GenerateKey(rand io.Reader, alg string) (*PrivateKey, error) {
	var kem byte
	switch alg {
	case "x25519":
		kem = KEMX25519
	case "p256":
		kem = KEMP256
	default:
		return nil, fmt.Errorf("%w: recipient algorithm %q, want x25519 or p256", ErrMalformed, alg)
	}
	c, _ := curve(kem)
	k, err := c.GenerateKey(rand)
	if err != nil {
		return nil, fmt.Errorf("crypt: generate key: %w", err)
	}
	return &PrivateKey{Public: newPublic(kem, k.PublicKey()), key: k}, nil
}

// MarshalPublicPEM encodes the public key as PKIX "PUBLIC KEY" PEM.
func (p *PublicKey) MarshalPublicPEM() ([]byte, error) {
	var pub any = p.key
	if p.KEM == KEMP256 {
		// x509 encodes P-256 keys as *ecdsa.PublicKey.
		ek, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), p.key.Bytes())
		if err != nil {
			return nil, fmt.Errorf("crypt: %w", err)
		}
		pub = ek
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("crypt: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// MarshalPrivatePEM encodes the key as PKCS#8 "PRIVATE KEY" PEM.
func (k *PrivateKey) MarshalPrivatePEM() ([]byte, error) {
	var priv any = k.key
	if k.Public.KEM == KEMP256 {
		ek, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), k.key.Bytes())
		if err != nil {
			return nil, fmt.Errorf("crypt: %w", err)
		}
		priv = ek
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("crypt: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePublicPEM reads a PKIX public key (X25519 or P-256) from PEM.
func ParsePublicPEM(b []byte) (*PublicKey, error) {
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" || len(rest) != 0 && len(trimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: want exactly one PEM \"PUBLIC KEY\" block", ErrMalformed)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrMalformed, err)
	}
	switch k := k.(type) {
	case *ecdh.PublicKey:
		if k.Curve() != ecdh.X25519() {
			return nil, fmt.Errorf("%w: unsupported ECDH curve", ErrMalformed)
		}
		p := newPublic(KEMX25519, k)
		return &p, nil
	case *ecdsa.PublicKey:
		e, err := k.ECDH()
		if err != nil || e.Curve() != ecdh.P256() {
			return nil, fmt.Errorf("%w: EC public key must be P-256", ErrMalformed)
		}
		p := newPublic(KEMP256, e)
		return &p, nil
	}
	return nil, fmt.Errorf("%w: public key type %T, want X25519 or P-256", ErrMalformed, k)
}

// ParsePrivatePEM reads a PKCS#8 private key (X25519 or P-256) from PEM.
// The error never quotes key material.
func ParsePrivatePEM(b []byte) (*PrivateKey, error) {
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" || len(trimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: want exactly one PEM \"PRIVATE KEY\" block", ErrMalformed)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: private key does not parse as PKCS#8", ErrMalformed)
	}
	switch k := k.(type) {
	case *ecdh.PrivateKey:
		if k.Curve() != ecdh.X25519() {
			return nil, fmt.Errorf("%w: unsupported ECDH curve", ErrMalformed)
		}
		return &PrivateKey{Public: newPublic(KEMX25519, k.PublicKey()), key: k}, nil
	case *ecdsa.PrivateKey:
		e, err := k.ECDH()
		if err != nil || e.Curve() != ecdh.P256() {
			return nil, fmt.Errorf("%w: EC private key must be P-256", ErrMalformed)
		}
		return &PrivateKey{Public: newPublic(KEMP256, e.PublicKey()), key: e}, nil
	}
	return nil, fmt.Errorf("%w: private key type %T, want X25519 or P-256", ErrMalformed, k)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\n' || b[0] == '\r' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}
