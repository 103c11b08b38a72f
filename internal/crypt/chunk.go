package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
)

const (
	// KeySize is the content key size (AES-256).
	KeySize = 32
	// TagSize is what sealing adds to every chunk.
	TagSize = 16
	// CommitmentSize is the size of Commitment's result.
	CommitmentSize = 32

	infoPayload    = "otad payload key v1"
	infoCommitment = "otad key commitment v1"
	aadPrefix      = "otad chunk v1\x00"
)

// ContentKey is a bundle's secret key. It never leaves memory unwrapped.
type ContentKey [KeySize]byte

// NewContentKey draws a fresh key from rand (crypto/rand.Reader).
func NewContentKey(rand io.Reader) (ContentKey, error) {
	var k ContentKey
	if _, err := io.ReadFull(rand, k[:]); err != nil {
		return k, fmt.Errorf("crypt: content key: %w", err)
	}
	return k, nil
}

func derive(k *ContentKey, info string) []byte {
	// HKDF with SHA-256 and a 32-byte output cannot fail.
	b, err := hkdf.Key(sha256.New, k[:], nil, info, KeySize)
	if err != nil {
		panic("crypt: hkdf: " + err.Error())
	}
	return b
}

// Commitment is the value the signed manifest carries for key k. It is
// derived under another label than the payload key, so publishing it says
// nothing about the payload key.
func Commitment(k *ContentKey) [CommitmentSize]byte {
	var c [CommitmentSize]byte
	copy(c[:], derive(k, infoCommitment))
	return c
}

// CheckCommitment returns ErrWrongKey unless k matches commitment c.
func CheckCommitment(k *ContentKey, c []byte) error {
	got := Commitment(k)
	if subtle.ConstantTimeCompare(got[:], c) != 1 {
		return ErrWrongKey
	}
	return nil
}

// Sealer seals and opens the chunks of one bundle. It is not safe for
// concurrent use (one scratch buffer for the additional data).
type Sealer struct {
	aead cipher.AEAD
	aad  [len(aadPrefix) + 4 + 8 + 8]byte
}

// NewSealer derives the payload key from k.
func NewSealer(k *ContentKey) (*Sealer, error) {
	block, err := aes.NewCipher(derive(k, infoPayload))
	if err != nil {
		return nil, fmt.Errorf("crypt: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("crypt: %w", err)
	}
	s := &Sealer{aead: aead}
	copy(s.aad[:], aadPrefix)
	return s, nil
}

// nonce is image (4 bytes) || chunk (8 bytes): unique per key as long as
// positions are, and the key is fresh per bundle.
func nonce(image, chunk int) [12]byte {
	var n [12]byte
	binary.BigEndian.PutUint32(n[:4], uint32(image))
	binary.BigEndian.PutUint64(n[4:], uint64(chunk))
	return n
}

// ad binds the image's chunk count too, so a chunk cannot be presented as
// the last one of a shortened image.
func (s *Sealer) ad(image, chunk, chunks int) []byte {
	b := s.aad[len(aadPrefix):]
	binary.BigEndian.PutUint32(b, uint32(image))
	binary.BigEndian.PutUint64(b[4:], uint64(chunk))
	binary.BigEndian.PutUint64(b[12:], uint64(chunks))
	return s.aad[:]
}

// Seal appends the sealed chunk (len(plain)+TagSize bytes) to dst.
func (s *Sealer) Seal(dst, plain []byte, image, chunk, chunks int) []byte {
	n := nonce(image, chunk)
	return s.aead.Seal(dst, n[:], plain, s.ad(image, chunk, chunks))
}

// Open decrypts sealed in place and returns the plaintext (a prefix of
// sealed's memory). On ErrAuth the contents of sealed are unspecified and
// must not be used; nothing of them is returned.
func (s *Sealer) Open(sealed []byte, image, chunk, chunks int) ([]byte, error) {
	if len(sealed) < TagSize {
		return nil, fmt.Errorf("%w: chunk %d shorter than its tag", ErrAuth, chunk)
	}
	n := nonce(image, chunk)
	out, err := s.aead.Open(sealed[:0], n[:], sealed, s.ad(image, chunk, chunks))
	if err != nil {
		return nil, fmt.Errorf("%w: image %d chunk %d (moved, replayed, altered, or another bundle's key)", ErrAuth, image, chunk)
	}
	return out, nil
}
