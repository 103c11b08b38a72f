package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// header is the fixed 16-byte start of a bundle. Its lengths are framing
// only: the manifest they delimit is signed, so a changed length fails
// the signature check or the parse.
type header struct {
	ManifestLen  uint32
	SignatureLen uint32
	Flags        uint16 // flagRecipients or 0
}

func (h header) marshal() []byte {
	b := make([]byte, HeaderSize)
	copy(b, Magic)
	binary.BigEndian.PutUint16(b[4:], FormatVersion)
	binary.BigEndian.PutUint16(b[6:], h.Flags)
	binary.BigEndian.PutUint32(b[8:], h.ManifestLen)
	binary.BigEndian.PutUint32(b[12:], h.SignatureLen)
	return b
}

func parseHeader(b []byte) (header, error) {
	var h header
	if string(b[:4]) != Magic {
		return h, fmt.Errorf("%w: not a bundle (no %q magic)", ErrMalformed, Magic) // never the file's bytes: errors reach bus callers
	}
	if v := binary.BigEndian.Uint16(b[4:]); v != FormatVersion {
		return h, fmt.Errorf("%w: format version %d, this otad reads %d", ErrMalformed, v, FormatVersion)
	}
	if f := binary.BigEndian.Uint16(b[6:]); f&^flagRecipients != 0 {
		return h, fmt.Errorf("%w: unknown header flags %#04x", ErrMalformed, f)
	}
	h.Flags = binary.BigEndian.Uint16(b[6:])
	h.ManifestLen = binary.BigEndian.Uint32(b[8:])
	h.SignatureLen = binary.BigEndian.Uint32(b[12:])
	if h.ManifestLen == 0 {
		return h, fmt.Errorf("%w: empty manifest", ErrMalformed)
	}
	if h.ManifestLen > MaxManifestSize {
		return h, fmt.Errorf("%w: manifest length %d exceeds %d", ErrTooLarge, h.ManifestLen, MaxManifestSize)
	}
	if h.SignatureLen > MaxSignatureSize {
		return h, fmt.Errorf("%w: signature block length %d exceeds %d", ErrTooLarge, h.SignatureLen, MaxSignatureSize)
	}
	return h, nil
}

// Signature is one entry of the signature block.
type Signature struct {
	KeyID     string
	Algorithm string // AlgEd25519, AlgP256, AlgRSAPSS or AlgRSAPKCS1
	Sig       []byte // Ed25519: 64 bytes; P-256: r||s, 32 bytes each; RSA: modulus size
	// KeyHash (RSA only) is SHA-256 of the signing key's PKIX DER: it binds
	// the key id to one modulus. RSA signatures admit key substitution
	// (for a given signature and message one can construct another key
	// under which it verifies), and an OEM re-keyed under an old id gets a
	// precise refusal instead of a bare "does not verify". Always present
	// in a bundle's block (parseSignatures); nil means "not carried" to
	// PublicKey.Verify, for other documents' envelopes.
	KeyHash []byte
}

const (
	algCodeEd25519  = 1
	algCodeP256     = 2
	algCodeRSAPSS   = 3
	algCodeRSAPKCS1 = 4
	sigSize         = 64
)

var algCodes = map[string]byte{AlgEd25519: algCodeEd25519, AlgP256: algCodeP256, AlgRSAPSS: algCodeRSAPSS, AlgRSAPKCS1: algCodeRSAPKCS1}

// rsaEntrySizes are the valid siglen values of an RSA entry: key hash plus
// a 2048-, 3072- or 4096-bit signature.
func rsaEntrySize(n int) bool {
	for _, bits := range RSASizes {
		if n == keyHashSize+bits/8 {
			return true
		}
	}
	return false
}

// marshalSignatures encodes entries as
// alg(1) idlen(1) id siglen(2, big endian) sig, back to back.
func marshalSignatures(sigs []Signature) ([]byte, error) {
	var b bytes.Buffer
	for _, s := range sigs {
		code, ok := algCodes[s.Algorithm]
		if !ok {
			return nil, fmt.Errorf("%w: signature algorithm %q", ErrMalformed, s.Algorithm)
		}
		if !keyIDRe.MatchString(s.KeyID) {
			return nil, fmt.Errorf("%w: key id %q", ErrMalformed, s.KeyID)
		}
		body := s.Sig
		if isRSA(s.Algorithm) {
			if len(s.KeyHash) != keyHashSize {
				return nil, fmt.Errorf("%w: RSA signature by %s without its key hash", ErrMalformed, s.KeyID)
			}
			body = append(bytes.Clone(s.KeyHash), s.Sig...)
		}
		if len(body) > 0xFFFF {
			return nil, fmt.Errorf("%w: signature by %s is %d bytes", ErrTooLarge, s.KeyID, len(body))
		}
		b.WriteByte(code)
		b.WriteByte(byte(len(s.KeyID)))
		b.WriteString(s.KeyID)
		b.Write(binary.BigEndian.AppendUint16(nil, uint16(len(body))))
		b.Write(body)
	}
	if b.Len() > MaxSignatureSize {
		return nil, fmt.Errorf("%w: %d signatures need %d bytes, limit %d", ErrTooLarge, len(sigs), b.Len(), MaxSignatureSize)
	}
	return b.Bytes(), nil
}

// parseSignatures decodes the block strictly: every byte belongs to an
// entry, each signature has its algorithm's exact size and a key id appears
// once (so one key, e.g. via a malleated ECDSA signature, is never counted
// twice).
func parseSignatures(b []byte) ([]Signature, error) {
	var sigs []Signature
	seen := map[string]bool{}
	for i := 0; len(b) > 0; i++ {
		if len(b) < 2 {
			return nil, fmt.Errorf("%w: signature %d: truncated entry", ErrMalformed, i)
		}
		code, idLen := b[0], int(b[1])
		b = b[2:]
		if len(b) < idLen+2 {
			return nil, fmt.Errorf("%w: signature %d: truncated key id", ErrMalformed, i)
		}
		id := string(b[:idLen])
		if !keyIDRe.MatchString(id) {
			return nil, fmt.Errorf("%w: signature %d: invalid key id %q", ErrMalformed, i, id)
		}
		n := int(binary.BigEndian.Uint16(b[idLen:]))
		b = b[idLen+2:]
		var alg string
		switch code {
		case algCodeEd25519:
			alg = AlgEd25519
		case algCodeP256:
			alg = AlgP256
		case algCodeRSAPSS:
			alg = AlgRSAPSS
		case algCodeRSAPKCS1:
			alg = AlgRSAPKCS1
		default:
			return nil, fmt.Errorf("%w: signature %d (key %s): unknown algorithm code %d", ErrMalformed, i, id, code)
		}
		switch {
		case isRSA(alg) && !rsaEntrySize(n):
			hint := ""
			if bits := (n - keyHashSize) * 8; bits > 0 && bits < RSASizes[0] {
				hint = fmt.Sprintf(" (RSA-%d is below otad's 2048-bit minimum)", bits)
			}
			return nil, fmt.Errorf("%w: signature %d (key %s): %d bytes; an RSA entry is a 32-byte key hash and an RSA-2048, -3072 or -4096 signature%s", ErrMalformed, i, id, n, hint)
		case !isRSA(alg) && n != sigSize:
			return nil, fmt.Errorf("%w: signature %d (key %s): %d bytes, %s signatures are %d", ErrMalformed, i, id, n, alg, sigSize)
		}
		if len(b) < n {
			return nil, fmt.Errorf("%w: signature %d (key %s): truncated", ErrMalformed, i, id)
		}
		if seen[id] {
			return nil, fmt.Errorf("%w: key id %s signs twice", ErrMalformed, id)
		}
		seen[id] = true
		s := Signature{KeyID: id, Algorithm: alg, Sig: bytes.Clone(b[:n])}
		if isRSA(alg) {
			s.KeyHash, s.Sig = s.Sig[:keyHashSize], s.Sig[keyHashSize:]
		}
		sigs = append(sigs, s)
		b = b[n:]
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w: bundle carries no signatures", ErrUnknownKey)
	}
	return sigs, nil
}

// chunkEntry is one row of an image's chunk table: the stored (possibly
// compressed) length of the chunk and the SHA-256 of those stored bytes.
type chunkEntry struct {
	Len  int64
	Hash [32]byte
}

func marshalTable(t []chunkEntry) []byte {
	b := make([]byte, 0, len(t)*tableEntrySize)
	for _, e := range t {
		b = binary.BigEndian.AppendUint64(b, uint64(e.Len))
		b = append(b, e.Hash[:]...)
	}
	return b
}

// parseTable checks the table against its signed hash, then the stored
// lengths against the image's encoding and payload size.
func parseTable(b []byte, img *Image) ([]chunkEntry, error) {
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != img.ChunkTableSHA256 {
		return nil, fmt.Errorf("%w: chunk table of image %q: SHA-256 %x, manifest signs %s (table from another bundle?)", ErrChunkHash, img.Class, sum, img.ChunkTableSHA256)
	}
	t := make([]chunkEntry, img.Chunks)
	var total int64
	maxStored := zstdBound(img.ChunkSize)
	for k := range t {
		e := &t[k]
		e.Len = int64(binary.BigEndian.Uint64(b[k*tableEntrySize:]))
		copy(e.Hash[:], b[k*tableEntrySize+8:])
		switch {
		case img.Encoding == EncodingZstd && (e.Len <= 0 || e.Len > maxStored):
			return nil, fmt.Errorf("%w: image %q chunk %d: stored length %d outside 1..%d", ErrMalformed, img.Class, k, e.Len, maxStored)
		case img.Encoding != EncodingZstd && e.Len != img.chunkLen(k):
			return nil, fmt.Errorf("%w: image %q chunk %d: stored length %d, want %d", ErrMalformed, img.Class, k, e.Len, img.chunkLen(k))
		}
		total += e.Len
	}
	if total != img.PayloadSize {
		return nil, fmt.Errorf("%w: image %q: chunk lengths sum to %d, payload_size is %d", ErrMalformed, img.Class, total, img.PayloadSize)
	}
	return t, nil
}

// zstdBound is the largest stored size accepted for a compressed chunk of n
// bytes: incompressible data grows by a few bytes per 128 KiB block.
func zstdBound(n int64) int64 { return n + n/128 + 512 }

// readFull reads exactly len(b) bytes; a short read is ErrTruncated.
func readFull(r io.Reader, b []byte, what string) error {
	n, err := io.ReadFull(r, b)
	if err == nil {
		return nil
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s: got %d of %d bytes", ErrTruncated, what, n, len(b))
	}
	return fmt.Errorf("bundle: reading %s: %w", what, err)
}
