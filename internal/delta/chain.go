package delta

import (
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
)

// Every byte of the new image goes through one SHA-256, in order. A window
// that ends on a multiple of ChainAlign is checked against the hash's
// chaining value at its end: the eight state words after compressing
// new[0:end], which fix that whole prefix as firmly as a SHA-256 digest fixes
// its input (Merkle–Damgård: equal chaining values over different prefixes
// are a collision of the compression function). The last window is checked
// against the digest itself, which is the image's SHA-256 — so the apply
// pass is also the final image check, and no output byte is hashed twice.

// chain is the running SHA-256 over the new image.
type chain struct {
	h   hash.Hash
	n   int64
	buf []byte // scratch for the marshaled state
}

func newChain() *chain { return &chain{h: sha256.New()} }

func (c *chain) write(p []byte) {
	c.h.Write(p)
	c.n += int64(len(p))
}

// errChainState means the SHA-256 implementation does not export its state in
// the layout chain.value relies on; a test pins that layout to the standard's
// compression function, so this is a build problem, not a patch problem.
var errChainState = errors.New("delta: sha256 state not exportable")

// value returns the chaining value after the bytes written so far, which must
// be a multiple of ChainAlign. It reads the state words out of
// crypto/sha256's binary marshaling: "sha\x03", the eight words big-endian,
// the pending block, the length.
func (c *chain) value() ([32]byte, error) {
	var v [32]byte
	if c.n%ChainAlign != 0 {
		return v, fmt.Errorf("delta: chaining value at %d, not a multiple of %d", c.n, ChainAlign)
	}
	m, ok := c.h.(encoding.BinaryAppender)
	if !ok {
		return v, errChainState
	}
	b, err := m.AppendBinary(c.buf[:0])
	if err != nil || len(b) < 4+32 || string(b[:4]) != "sha\x03" {
		return v, errChainState
	}
	c.buf = b
	copy(v[:], b[4:36])
	return v, nil
}

// sum returns the digest of everything written.
func (c *chain) sum() [32]byte {
	var v [32]byte
	c.h.Sum(v[:0])
	return v
}

// castagnoli is CRC-32C, in hardware on amd64 (SSE4.2) and arm64 (CRC32
// instructions). The source table uses it: the table only has to notice,
// before anything is written, that the active slot is not the image the patch
// was made from. Integrity of the output does not rest on it — every output
// byte, copies from the source included, is checked by the SHA-256 chain
// before its window is written.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)
