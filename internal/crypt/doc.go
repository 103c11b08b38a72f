// Package crypt encrypts otad bundle payloads and wraps their content key
// for each recipient device. It is a leaf package: standard library only,
// no I/O beyond the io.Reader it is handed, no logging, no global state.
//
// Invariants:
//   - One random 256-bit content key per bundle. Chunks are sealed with
//     AES-256-GCM under a key derived from it (HKDF-SHA256), with the nonce
//     taken from the (image, chunk) position and the image's chunk count in
//     the additional data: a chunk moved to another position, another image,
//     or replayed from another bundle (other content key) fails to open.
//     Open never returns plaintext of a chunk whose tag did not verify.
//   - Commitment(key) is what the signed manifest carries; a device that
//     unwrapped some key compares it before opening any chunk, so a wrong or
//     substituted key (anyone can wrap a key for a public key) is refused
//     before the first payload byte. GCM alone does not commit to its key.
//   - The recipient block is not signed. Each entry is HPKE-style: an
//     ephemeral X25519 or P-256 key, ECDH with the recipient's key,
//     HKDF-SHA256 over the shared secret bound to the entry, the recipient
//     key and the commitment, then AES-256-GCM over the content key. Entries
//     have a fixed size and are sorted strictly by key id, so Lookup finds a
//     device's entry by binary search without parsing the others.
//   - Nothing here writes files; keys given to the package stay in memory.
//     What survives power loss is the caller's business (the slot writer).
package crypt

import "errors"

// Sentinel errors; every refusal wraps exactly one.
var (
	// ErrNotRecipient: the block has no entry for this device's key id.
	ErrNotRecipient = errors.New("crypt: this device is not a recipient")
	// ErrWrongKey: the unwrapped key does not match the signed commitment.
	ErrWrongKey = errors.New("crypt: content key does not match the signed commitment")
	// ErrAuth: an AEAD tag (key wrap or chunk) did not verify.
	ErrAuth = errors.New("crypt: authentication failed")
	// ErrMalformed: a recipient block or key that does not parse strictly.
	ErrMalformed = errors.New("crypt: malformed")
	// ErrTooLarge: a recipient block beyond MaxRecipients.
	ErrTooLarge = errors.New("crypt: too large")
)
