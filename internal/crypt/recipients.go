package crypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sort"
)

// Recipient block layout (all integers big endian):
//
//	magic "OTAR" (4) | version 1 (1) | reserved 0 (3) | count (4)
//	count entries of EntrySize bytes, key ids strictly ascending:
//	  key id (16) | KEM (1) | ephemeral public key (65; X25519 uses the
//	  first 32, the rest must be zero) | wrapped content key (32 + 16 tag)
const (
	BlockMagic      = "OTAR"
	BlockVersion    = 1
	BlockHeaderSize = 12
	EntrySize       = KeyIDSize + 1 + encSize + KeySize + TagSize
	// MaxRecipients bounds the block (~8.5 MB) so a reader can refuse a
	// hostile count before allocating; groups keep real fleets far below.
	MaxRecipients = 1 << 16

	encSize  = 65
	infoWrap = "otad key wrap v1\x00"
)

// Entry is one recipient's wrapped copy of the content key.
type Entry struct {
	ID      KeyID
	KEM     byte
	Enc     []byte // ephemeral public key (32 or 65 bytes)
	Wrapped [KeySize + TagSize]byte
}

// BlockSize is the encoded size of a block with n entries.
func BlockSize(n int) int64 { return BlockHeaderSize + int64(n)*EntrySize }

func wrapKey(shared []byte, id KeyID, kem byte, enc, recipient []byte, commitment []byte) (cipher.AEAD, error) {
	info := make([]byte, 0, len(infoWrap)+KeyIDSize+1+len(enc)+len(recipient)+len(commitment))
	info = append(info, infoWrap...)
	info = append(info, id[:]...)
	info = append(info, kem)
	info = append(info, enc...)
	info = append(info, recipient...)
	info = append(info, commitment...)
	k, err := hkdf.Key(sha256.New, shared, nil, string(info), KeySize)
	if err != nil {
		return nil, fmt.Errorf("crypt: hkdf: %w", err)
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("crypt: %w", err)
	}
	return cipher.NewGCM(b)
}

// The wrap key is single-use (fresh ephemeral key per entry), so a fixed
// nonce is safe.
var zeroNonce [12]byte

// Wrap encrypts k for recipient pub with a fresh ephemeral key, bound to the
// bundle's commitment (an entry copied into another bundle fails to open).
func Wrap(rand io.Reader, pub *PublicKey, k *ContentKey, commitment []byte) (Entry, error) {
	c, err := curve(pub.KEM)
	if err != nil {
		return Entry{}, err
	}
	eph, err := c.GenerateKey(rand)
	if err != nil {
		return Entry{}, fmt.Errorf("crypt: ephemeral key: %w", err)
	}
	shared, err := eph.ECDH(pub.key)
	if err != nil {
		return Entry{}, fmt.Errorf("crypt: ECDH: %w", err)
	}
	e := Entry{ID: pub.ID, KEM: pub.KEM, Enc: eph.PublicKey().Bytes()}
	aead, err := wrapKey(shared, e.ID, e.KEM, e.Enc, pub.key.Bytes(), commitment)
	if err != nil {
		return Entry{}, err
	}
	aead.Seal(e.Wrapped[:0], zeroNonce[:], k[:], e.ID[:])
	return e, nil
}

// Unwrap recovers the content key from e with the device's key and checks
// it against the signed commitment: ErrAuth when the entry does not open
// (another key's entry, altered or from another bundle), ErrWrongKey when it
// opens to a key the manifest does not commit to.
func (k *PrivateKey) Unwrap(e *Entry, commitment []byte) (*ContentKey, error) {
	if e.ID != k.Public.ID || e.KEM != k.Public.KEM {
		return nil, fmt.Errorf("%w: entry %s is not for key %s", ErrNotRecipient, e.ID, k.Public.ID)
	}
	c, _ := curve(e.KEM)
	eph, err := c.NewPublicKey(e.Enc)
	if err != nil {
		return nil, fmt.Errorf("%w: entry %s: ephemeral key is not a valid point", ErrMalformed, e.ID)
	}
	shared, err := k.key.ECDH(eph)
	if err != nil {
		return nil, fmt.Errorf("%w: entry %s: ECDH: %v", ErrAuth, e.ID, err)
	}
	aead, err := wrapKey(shared, e.ID, e.KEM, e.Enc, k.Public.key.Bytes(), commitment)
	if err != nil {
		return nil, err
	}
	var ck ContentKey
	if _, err := aead.Open(ck[:0], zeroNonce[:], e.Wrapped[:], e.ID[:]); err != nil {
		return nil, fmt.Errorf("%w: recipient entry %s does not open with this device's key", ErrAuth, e.ID)
	}
	if err := CheckCommitment(&ck, commitment); err != nil {
		return nil, fmt.Errorf("%w (entry %s)", err, e.ID)
	}
	return &ck, nil
}

// MarshalBlock encodes entries sorted by key id; a key id twice is refused
// (one device must find one entry).
func MarshalBlock(entries []Entry) ([]byte, error) {
	if len(entries) > MaxRecipients {
		return nil, fmt.Errorf("%w: %d recipients, limit %d", ErrTooLarge, len(entries), MaxRecipients)
	}
	es := slices.Clone(entries)
	slices.SortFunc(es, func(a, b Entry) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	b := make([]byte, BlockHeaderSize, BlockSize(len(es)))
	copy(b, BlockMagic)
	b[4] = BlockVersion
	binary.BigEndian.PutUint32(b[8:], uint32(len(es)))
	for i := range es {
		if i > 0 && es[i].ID == es[i-1].ID {
			return nil, fmt.Errorf("%w: key id %s appears twice", ErrMalformed, es[i].ID)
		}
		if err := es[i].check(); err != nil {
			return nil, err
		}
		b = es[i].appendTo(b)
	}
	return b, nil
}

func (e *Entry) appendTo(b []byte) []byte {
	b = append(b, e.ID[:]...)
	b = append(b, e.KEM)
	var enc [encSize]byte
	copy(enc[:], e.Enc)
	b = append(b, enc[:]...)
	return append(b, e.Wrapped[:]...)
}

func (e *Entry) check() error {
	c, err := curve(e.KEM)
	if err != nil {
		return fmt.Errorf("%w (entry %s)", err, e.ID)
	}
	if _, err := c.NewPublicKey(e.Enc); err != nil {
		return fmt.Errorf("%w: entry %s: ephemeral key is not a valid %s point", ErrMalformed, e.ID, KEMName(e.KEM))
	}
	return nil
}

// decodeEntry parses one fixed-size entry strictly.
func decodeEntry(b []byte) (Entry, error) {
	var e Entry
	copy(e.ID[:], b)
	e.KEM = b[KeyIDSize]
	enc := b[KeyIDSize+1 : KeyIDSize+1+encSize]
	n := encSize
	if e.KEM == KEMX25519 {
		n = 32
		for _, x := range enc[n:] {
			if x != 0 {
				return e, fmt.Errorf("%w: entry %s: X25519 padding not zero", ErrMalformed, e.ID)
			}
		}
	}
	e.Enc = bytes.Clone(enc[:n])
	copy(e.Wrapped[:], b[KeyIDSize+1+encSize:])
	return e, e.check()
}

// BlockHeader checks the fixed header and returns the entry count; the
// caller then reads exactly BlockSize(count) - BlockHeaderSize bytes.
func BlockHeader(h []byte) (int, error) {
	if len(h) < BlockHeaderSize {
		return 0, fmt.Errorf("%w: recipient block header: %d bytes", ErrMalformed, len(h))
	}
	if string(h[:4]) != BlockMagic {
		return 0, fmt.Errorf("%w: recipient block magic %q", ErrMalformed, h[:4])
	}
	if h[4] != BlockVersion || h[5] != 0 || h[6] != 0 || h[7] != 0 {
		return 0, fmt.Errorf("%w: recipient block version %d or reserved bytes set", ErrMalformed, h[4])
	}
	n := binary.BigEndian.Uint32(h[8:])
	if n == 0 {
		return 0, fmt.Errorf("%w: recipient block has no entries", ErrMalformed)
	}
	if n > MaxRecipients {
		return 0, fmt.Errorf("%w: %d recipients, limit %d", ErrTooLarge, n, MaxRecipients)
	}
	return int(n), nil
}

func framed(b []byte) (int, error) {
	n, err := BlockHeader(b)
	if err != nil {
		return 0, err
	}
	if int64(len(b)) != BlockSize(n) {
		return 0, fmt.Errorf("%w: recipient block is %d bytes, %d entries need %d", ErrMalformed, len(b), n, BlockSize(n))
	}
	return n, nil
}

// ParseBlock decodes every entry and checks the strict order (for tooling
// and tests; a device uses Lookup).
func ParseBlock(b []byte) ([]Entry, error) {
	n, err := framed(b)
	if err != nil {
		return nil, err
	}
	es := make([]Entry, n)
	for i := range es {
		off := BlockHeaderSize + i*EntrySize
		if es[i], err = decodeEntry(b[off : off+EntrySize]); err != nil {
			return nil, err
		}
		if i > 0 && bytes.Compare(es[i-1].ID[:], es[i].ID[:]) >= 0 {
			return nil, fmt.Errorf("%w: recipient entries not in strict key id order at %d", ErrMalformed, i)
		}
	}
	return es, nil
}

// Lookup finds id's entry by binary search, decoding only O(log n) key ids
// and the one entry. Its neighbours must be strictly ordered around it; an
// unsorted block may hide an entry (ErrNotRecipient), never yield another
// key's entry as ours (the id is compared, and Unwrap binds it).
func Lookup(b []byte, id KeyID) (Entry, error) {
	n, err := framed(b)
	if err != nil {
		return Entry{}, err
	}
	idAt := func(i int) []byte {
		off := BlockHeaderSize + i*EntrySize
		return b[off : off+KeyIDSize]
	}
	i := sort.Search(n, func(i int) bool { return bytes.Compare(idAt(i), id[:]) >= 0 })
	if i == n || !bytes.Equal(idAt(i), id[:]) {
		return Entry{}, fmt.Errorf("%w: key id %s has no entry among %d recipients", ErrNotRecipient, id, n)
	}
	if i > 0 && bytes.Compare(idAt(i-1), id[:]) >= 0 || i+1 < n && bytes.Compare(idAt(i+1), id[:]) <= 0 {
		return Entry{}, fmt.Errorf("%w: recipient entries around %s are not in strict order", ErrMalformed, id)
	}
	off := BlockHeaderSize + i*EntrySize
	return decodeEntry(b[off : off+EntrySize])
}

// Open is the device path: find this key's entry and unwrap it.
func (k *PrivateKey) Open(block []byte, commitment []byte) (*ContentKey, error) {
	e, err := Lookup(block, k.Public.ID)
	if err != nil {
		return nil, err
	}
	return k.Unwrap(&e, commitment)
}
