// Package bundle defines otad's signed update bundle (".otab") and reads it
// with verify-while-streaming semantics, shaped like archive/tar.
//
// A bundle is one file read front to back from a single io.Reader:
//
//	header (16 bytes) | manifest (canonical JSON, ≤ 64 KiB) |
//	signatures (≤ 4 KiB) | chunk table per image | payload per image
//
// Invariants the Reader guarantees (docs/bundle-format.md has the layout):
//   - NewReader returns only after the signatures over the exact manifest
//     bytes met the keyring's policy (k distinct keys of the listed roles,
//     and each role in "require" its own count), the manifest parsed strictly
//     (no duplicate, unknown or case-variant keys; byte-for-byte canonical),
//     the metadata matched the device (compatible, security floor, expiry,
//     slot sizes) and every chunk table matched the SHA-256 the manifest
//     signs. No payload byte has been read at that point.
//   - Read never returns a byte of a chunk before all stored bytes of that
//     chunk were hashed and matched the signed table; decompression runs only
//     on verified bytes and is capped at the chunk's declared size.
//   - Bytes are read once into memory, hashed, and handed out from that same
//     memory, so a file changed under the reader cannot slip in unhashed data.
//   - Each chunk is self-contained, so an install interrupted by power loss
//     resumes at chunk ChunksDone() via SeekChunk and loses at most one chunk.
//   - Encrypted bundles (encrypt.go, internal/crypt): NewReader also finds
//     the device's entry in the unsigned recipient block, unwraps the
//     content key and checks it against the commitment the manifest signs,
//     all before the chunk tables; each chunk is hashed against the signed
//     table, then AES-256-GCM-opened at its position, then decoded, and only
//     then released. Plaintext lives only in the chunk buffer.
//
// Keys are Ed25519, P-256 or RSA-2048/3072/4096 (PSS or PKCS#1 v1.5, fixed
// per key); weak RSA keys never enter a keyring (ErrWeakKey). Signing goes
// through the Signer interface, and every signature made or attached is
// verified against its public key before a byte of the signed bundle is
// written; internal/bundle/extsign has signers for PKCS#11 tokens and
// signing commands (host only).
//
// The package does no logging and holds no global state; refusals wrap one
// of the sentinels below so callers can branch with errors.Is. The layout is
// documented in docs/bundle-format.md.
package bundle

import "errors"

// Sentinel errors. Every refusal of bundle content wraps exactly one; I/O
// errors of the source and API misuse (SeekChunk without an image) are
// returned wrapped as they are.
var (
	ErrBadSignature = errors.New("bundle: bad signature")
	ErrUnknownKey   = errors.New("bundle: no signature by a trusted key")
	ErrThreshold    = errors.New("bundle: signature threshold not met")
	ErrIncompatible = errors.New("bundle: incompatible with this device")
	ErrDowngrade    = errors.New("bundle: security version below the device's floor")
	ErrExpired      = errors.New("bundle: expired")
	ErrMalformed    = errors.New("bundle: malformed")
	ErrTruncated    = errors.New("bundle: truncated")
	ErrChunkHash    = errors.New("bundle: hash mismatch")
	ErrTooLarge     = errors.New("bundle: too large")
	// ErrNotRecipient: an encrypted bundle with no recipient entry for this
	// device's decryption key (or no key configured); refused before any
	// payload byte.
	ErrNotRecipient = errors.New("bundle: this device is not a recipient of the encrypted bundle")
	// ErrDecrypt: a recipient entry, the content key (signed commitment)
	// or a chunk's GCM tag did not check out.
	ErrDecrypt = errors.New("bundle: decryption failed")
)

// Limits of format version 1. They are part of the format: a reader rejects
// anything beyond them before allocating memory for it.
const (
	Magic            = "OTAB"
	FormatVersion    = 1
	HeaderSize       = 16
	MaxManifestSize  = 64 << 10
	MaxSignatureSize = 4 << 10
	MinChunkSize     = 4 << 10
	MaxChunkSize     = 8 << 20
	DefaultChunkSize = 1 << 20
	// MaxTableBytes caps the chunk tables of all images together (memory the
	// reader holds): 8 MiB is ~200k chunks, ~200 GiB at the default size.
	MaxTableBytes = 8 << 20
	// ManifestType is the manifest's "type": it separates bundle manifests
	// from any other JSON a release key might ever sign.
	ManifestType = "otad-bundle-v1"
	// SignaturePrefix is prepended to the manifest bytes before signing.
	SignaturePrefix = "otad bundle v1\x00"
	tableEntrySize  = 8 + 32
)

// Image encodings.
const (
	EncodingRaw   = "raw"
	EncodingZstd  = "zstd"
	EncodingDelta = "delta"
)
