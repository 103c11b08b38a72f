package bundle

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
)

// ErrWeakKey refuses a key otad will not trust or sign with: RSA below
// 2048 bits (or of another size than 2048, 3072, 4096) or with a weak
// public exponent. It is a key-file or keyring error, never a bundle one.
var ErrWeakKey = errors.New("bundle: weak key")

// RSASizes are the RSA modulus sizes otad accepts, in bits.
var RSASizes = []int{2048, 3072, 4096}

// minRSAExponent follows FIPS 186-5 (e > 2^16): e = 1 makes the
// "signature" the padded message itself (anyone can forge), and small
// exponents are where padding mistakes become forgeries.
const minRSAExponent = 65537

// keyHashSize is the length of the key hash an RSA signature entry
// carries in front of the signature: SHA-256 of the key's PKIX DER.
const keyHashSize = sha256.Size

// checkRSAPublic refuses keys that are too short, of an odd size, or with a
// weak exponent, with an error that says which and what is required.
func checkRSAPublic(k *rsa.PublicKey) error {
	if k == nil || k.N == nil {
		return fmt.Errorf("%w: RSA key without a modulus", ErrWeakKey)
	}
	bits := k.N.BitLen()
	if bits < RSASizes[0] {
		return fmt.Errorf("%w: RSA key is %d bits; otad requires at least 2048 (RSA-2048, -3072 or -4096)", ErrWeakKey, bits)
	}
	if !slices.Contains(RSASizes, bits) {
		return fmt.Errorf("%w: RSA key is %d bits; otad accepts RSA-2048, -3072 or -4096", ErrWeakKey, bits)
	}
	if k.N.Bit(0) == 0 {
		return fmt.Errorf("%w: RSA modulus is even", ErrWeakKey)
	}
	if k.E < minRSAExponent || k.E%2 == 0 {
		return fmt.Errorf("%w: RSA public exponent %d; otad requires an odd exponent >= %d (e = 1 lets anyone forge)", ErrWeakKey, k.E, minRSAExponent)
	}
	return nil
}

// GenerateRSAKey makes a new RSA signing key of bits (2048, 3072 or 4096)
// for alg AlgRSAPSS or AlgRSAPKCS1. crypto/rsa draws its own randomness.
func GenerateRSAKey(bits int, alg, id, role string) (*PrivateKey, error) {
	if err := checkKeyMeta(id, alg, role); err != nil {
		return nil, err
	}
	if !isRSA(alg) {
		return nil, fmt.Errorf("%w: %s is not an RSA algorithm", ErrMalformed, alg)
	}
	if !slices.Contains(RSASizes, bits) {
		return nil, fmt.Errorf("%w: RSA-%d; otad makes RSA-2048, -3072 or -4096 keys", ErrWeakKey, bits)
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, fmt.Errorf("bundle: generate RSA-%d key: %w", bits, err)
	}
	return &PrivateKey{ID: id, Alg: alg, Role: role, key: k}, nil
}

// keyHash is SHA-256 of the key's PKIX DER: for RSA it binds a signature
// entry to one exact (modulus, exponent).
func (k *PublicKey) keyHash() []byte {
	der, err := x509.MarshalPKIXPublicKey(k.key)
	if err != nil {
		return nil
	}
	h := sha256.Sum256(der)
	return h[:]
}

// Fingerprint is "SHA256:" and the hex SHA-256 of the key's PKIX DER (what
// `openssl pkey -pubin -outform DER | sha256sum` prints for the same key).
func (k *PublicKey) Fingerprint() string { return "SHA256:" + hex.EncodeToString(k.keyHash()) }

// Bits is the key size: the RSA modulus length, 256 for Ed25519 and P-256.
func (k *PublicKey) Bits() int {
	if rk, ok := k.key.(*rsa.PublicKey); ok {
		return rk.N.BitLen()
	}
	return 256
}

// PKIX returns the key's SubjectPublicKeyInfo DER.
func (k *PublicKey) PKIX() ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k.key)
	if err != nil {
		return nil, fmt.Errorf("bundle: encode public key %s: %w", k.ID, err)
	}
	return der, nil
}
