package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/otadev/otad/internal/crypt"
)

// Encrypted bundles (docs/bundle-format.md, "Encryption"):
//
//	header (flag 0x8000) | manifest with "encryption" | signatures |
//	recipient block (crypt package, NOT signed) | chunk tables | payloads
//
// The manifest and the chunk tables keep their plain meaning (payload_size
// and table lengths are the stored bytes before sealing); on the wire each
// chunk is its stored bytes sealed with AES-256-GCM, TagSize bytes longer,
// and its table hash is over those sealed bytes. So a chunk is hashed
// against the signed table, then opened, then decompressed, and only then
// released; the recipient block can be rewritten (Rewrap) without touching
// the signed part.

// flagRecipients in the header says a recipient block follows the
// signatures. The flag is framing only: the signed manifest decides
// whether the bundle is encrypted, and both must agree.
const flagRecipients = 0x8000

// CipherAES256GCM is the only "cipher" of format version 1.
const CipherAES256GCM = "aes-256-gcm"

// Encryption is the signed part of an encrypted bundle.
type Encryption struct {
	Cipher string `json:"cipher"`
	// KeyCommitment is hex of crypt.Commitment(content key): a device
	// checks the key it unwrapped against it before the first chunk.
	KeyCommitment string `json:"key_commitment"`
}

var encryptionShape = &shape{fields: map[string]*shape{"cipher": scalar, "key_commitment": scalar}}

func (e *Encryption) validate() error {
	if e == nil {
		return nil
	}
	if e.Cipher != CipherAES256GCM {
		return fmt.Errorf("%w: manifest: encryption cipher %q, want %q", ErrMalformed, e.Cipher, CipherAES256GCM)
	}
	if !hexSHA256.MatchString(e.KeyCommitment) {
		return fmt.Errorf("%w: manifest: key_commitment must be 64 lower-case hex digits", ErrMalformed)
	}
	return nil
}

func (f *Front) flags() uint16 {
	if f.Recipients != nil {
		return flagRecipients
	}
	return 0
}

// readRecipients reads a recipient block, refusing a hostile count before
// allocating for it.
func readRecipients(r io.Reader) ([]byte, error) {
	h := make([]byte, crypt.BlockHeaderSize)
	if err := readFull(r, h, "recipient block header"); err != nil {
		return nil, err
	}
	n, err := crypt.BlockHeader(h)
	if err != nil {
		return nil, cryptErr(err)
	}
	b := make([]byte, crypt.BlockSize(n))
	copy(b, h)
	if err := readFull(r, b[len(h):], "recipient block"); err != nil {
		return nil, err
	}
	return b, nil
}

// cryptErr maps a crypt refusal onto the bundle sentinel a caller branches
// on, keeping the crypt error in the chain.
func cryptErr(err error) error {
	switch {
	case errors.Is(err, crypt.ErrNotRecipient):
		return fmt.Errorf("%w: %w", ErrNotRecipient, err)
	case errors.Is(err, crypt.ErrTooLarge):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, crypt.ErrMalformed):
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	case errors.Is(err, crypt.ErrAuth), errors.Is(err, crypt.ErrWrongKey):
		return fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	return err
}

// openSealed runs after the manifest was verified and before the chunk
// tables: it finds this device's entry, unwraps the content key and checks
// it against the signed commitment, so a device that cannot decrypt is
// refused before the first payload byte.
func (r *Reader) openSealed() error {
	f := r.front
	enc := f.Manifest.Encryption
	if enc == nil {
		if f.Recipients != nil {
			return fmt.Errorf("%w: recipient block on a bundle whose signed manifest is not encrypted", ErrMalformed)
		}
		return nil
	}
	if f.Recipients == nil {
		return fmt.Errorf("%w: encrypted bundle without a recipient block", ErrMalformed)
	}
	key := r.opts.Keyring.Decryption
	if key == nil {
		return fmt.Errorf("%w: bundle is encrypted and no decryption key is configured ([keyring] decryption-key)", ErrNotRecipient)
	}
	c, _ := hex.DecodeString(enc.KeyCommitment) // validated with the manifest
	ck, err := key.Open(f.Recipients, c)
	if err != nil {
		return cryptErr(err)
	}
	if r.sealer, err = crypt.NewSealer(ck); err != nil {
		return err
	}
	r.over = crypt.TagSize
	return nil
}

// Encrypt turns the plain bundle src (size bytes) into an encrypted one on
// dst: a fresh content key, every stored chunk sealed, the manifest
// extended with the key commitment and the sealed chunk tables and signed
// again by signers (a new bundle identity), the key wrapped for each of to.
// Every source chunk is checked against its table first. Like Create it
// reads the source twice and re-checks in the second pass, so dst may be a
// pipe. rand is crypto/rand.Reader outside tests.
func Encrypt(ctx context.Context, dst io.Writer, src io.ReaderAt, size int64, signers []Signer, to []*crypt.PublicKey, rand io.Reader) (*Manifest, error) {
	if len(signers) == 0 {
		return nil, fmt.Errorf("%w: no signing key", ErrUnknownKey)
	}
	if len(to) == 0 {
		return nil, fmt.Errorf("%w: no recipients", ErrMalformed)
	}
	f, err := Inspect(io.NewSectionReader(src, 0, size))
	if err != nil {
		return nil, err
	}
	if f.Manifest.Encryption != nil || f.Recipients != nil {
		return nil, fmt.Errorf("%w: bundle is already encrypted (use Rewrap for recipients)", ErrMalformed)
	}
	m := *f.Manifest
	m.Images = append([]Image(nil), m.Images...)
	tables, payloads, err := readTables(src, f.Size, size, m.Images)
	if err != nil {
		return nil, err
	}
	ck, err := crypt.NewContentKey(rand)
	if err != nil {
		return nil, err
	}
	sealer, err := crypt.NewSealer(&ck)
	if err != nil {
		return nil, err
	}
	commit := crypt.Commitment(&ck)
	m.Encryption = &Encryption{Cipher: CipherAES256GCM, KeyCommitment: hex.EncodeToString(commit[:])}

	// Pass one: seal to learn the sealed hashes (the nonce is the
	// position, so sealing again in pass two gives the same bytes).
	sealedTables := make([][]chunkEntry, len(tables))
	err = sealChunks(ctx, src, payloads, m.Images, tables, sealer, func(i, k int, sealed []byte) error {
		sealedTables[i] = append(sealedTables[i], chunkEntry{Len: tables[i][k].Len, Hash: sha256.Sum256(sealed)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := range m.Images {
		ts := sha256.Sum256(marshalTable(sealedTables[i]))
		m.Images[i].ChunkTableSHA256 = hex.EncodeToString(ts[:])
	}
	mb, err := MarshalManifest(&m)
	if err != nil {
		return nil, err
	}
	sb, err := signAll(ctx, signers, mb)
	if err != nil {
		return nil, err
	}
	block, err := wrapAll(rand, to, &ck, commit[:], nil)
	if err != nil {
		return nil, err
	}
	if err := writeEncryptedFront(dst, mb, sb, block, sealedTables); err != nil {
		return nil, err
	}
	err = sealChunks(ctx, src, payloads, m.Images, tables, sealer, func(i, k int, sealed []byte) error {
		if sha256.Sum256(sealed) != sealedTables[i][k].Hash {
			return fmt.Errorf("%w: image %q chunk %d changed while the bundle was being encrypted", ErrChunkHash, m.Images[i].Class, k)
		}
		if _, err := dst.Write(sealed); err != nil {
			return fmt.Errorf("bundle: write payload of %q: %w", m.Images[i].Class, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ParseManifest(mb)
}

// writeEncryptedFront writes everything before the sealed payloads: the
// header, manifest, signatures, recipient block and sealed chunk tables.
func writeEncryptedFront(dst io.Writer, mb, sb, block []byte, tables [][]chunkEntry) error {
	var front bytes.Buffer
	front.Write(header{ManifestLen: uint32(len(mb)), SignatureLen: uint32(len(sb)), Flags: flagRecipients}.marshal())
	front.Write(mb)
	front.Write(sb)
	front.Write(block)
	for _, t := range tables {
		front.Write(marshalTable(t))
	}
	if _, err := dst.Write(front.Bytes()); err != nil {
		return fmt.Errorf("bundle: write: %w", err)
	}
	return nil
}

// readTables reads the plain chunk tables that start at off in src and
// checks that the payloads after them end the bundle at size; it returns
// the tables and where the payloads start.
func readTables(src io.ReaderAt, off, size int64, imgs []Image) ([][]chunkEntry, int64, error) {
	var tables [][]chunkEntry
	for i := range imgs {
		img := &imgs[i]
		tb := make([]byte, img.Chunks*tableEntrySize)
		if n, err := src.ReadAt(tb, off); n != len(tb) {
			return nil, 0, fmt.Errorf("%w: chunk table of image %q: %v", ErrTruncated, img.Class, err)
		}
		t, err := parseTable(tb, img)
		if err != nil {
			return nil, 0, err
		}
		tables = append(tables, t)
		off += int64(len(tb))
	}
	payloads := off
	for i := range imgs {
		off += imgs[i].PayloadSize
	}
	if off != size {
		return nil, 0, fmt.Errorf("%w: bundle is %d bytes, its manifest declares %d", ErrMalformed, size, off)
	}
	return tables, payloads, nil
}

// sealChunks reads every stored chunk from src, checks it against its
// plain table entry, seals it and hands the sealed bytes to fn.
func sealChunks(ctx context.Context, src io.ReaderAt, off int64, imgs []Image, tables [][]chunkEntry, s *crypt.Sealer, fn func(i, k int, sealed []byte) error) error {
	var buf, sealed []byte
	for i := range imgs {
		img := &imgs[i]
		for k, e := range tables[i] {
			if err := ctx.Err(); err != nil {
				return err
			}
			if int64(cap(buf)) < e.Len {
				buf = make([]byte, zstdBound(img.ChunkSize))
			}
			chunk := buf[:e.Len]
			if n, err := src.ReadAt(chunk, off); int64(n) != e.Len {
				return fmt.Errorf("%w: image %q chunk %d: %v", ErrTruncated, img.Class, k, err)
			}
			if sha256.Sum256(chunk) != e.Hash {
				return fmt.Errorf("%w: image %q chunk %d of %d: stored bytes do not match the signed chunk table", ErrChunkHash, img.Class, k, img.Chunks)
			}
			sealed = s.Seal(sealed[:0], chunk, i, k, img.Chunks)
			if err := fn(i, k, sealed); err != nil {
				return err
			}
			off += e.Len
		}
	}
	return nil
}

// wrapAll wraps ck for every key in to, on top of keep (entries of other
// keys already in the block); a key already present is wrapped afresh.
func wrapAll(rand io.Reader, to []*crypt.PublicKey, ck *crypt.ContentKey, commit []byte, keep []crypt.Entry) ([]byte, error) {
	byID := map[crypt.KeyID]crypt.Entry{}
	for _, e := range keep {
		byID[e.ID] = e
	}
	for _, pub := range to {
		e, err := crypt.Wrap(rand, pub, ck, commit)
		if err != nil {
			return nil, err
		}
		byID[e.ID] = e
	}
	es := make([]crypt.Entry, 0, len(byID))
	for _, e := range byID {
		es = append(es, e)
	}
	b, err := crypt.MarshalBlock(es)
	if err != nil {
		return nil, cryptErr(err)
	}
	return b, nil
}

// Rewrap rewrites the recipient block of the encrypted bundle src onto dst
// and copies everything else unchanged: no re-signing, same Identity. The
// content key comes from identity's own entry (a publisher keeps one) and
// is checked against the signed commitment. With replace the block holds
// exactly to; otherwise to is added to the existing recipients.
func Rewrap(dst io.Writer, src io.Reader, identity *crypt.PrivateKey, to []*crypt.PublicKey, replace bool, rand io.Reader) error {
	f, err := Inspect(src)
	if err != nil {
		return err
	}
	if f.Manifest.Encryption == nil || f.Recipients == nil {
		return fmt.Errorf("%w: bundle is not encrypted", ErrMalformed)
	}
	if len(to) == 0 {
		return fmt.Errorf("%w: no recipients", ErrMalformed)
	}
	c, _ := hex.DecodeString(f.Manifest.Encryption.KeyCommitment)
	ck, err := identity.Open(f.Recipients, c)
	if err != nil {
		return cryptErr(err)
	}
	var keep []crypt.Entry
	if !replace {
		if keep, err = crypt.ParseBlock(f.Recipients); err != nil {
			return cryptErr(err)
		}
	}
	block, err := wrapAll(rand, to, ck, c, keep)
	if err != nil {
		return err
	}
	sb, err := marshalSignatures(f.Signatures)
	if err != nil {
		return err
	}
	var front bytes.Buffer
	front.Write(header{ManifestLen: uint32(len(f.ManifestBytes)), SignatureLen: uint32(len(sb)), Flags: flagRecipients}.marshal())
	front.Write(f.ManifestBytes)
	front.Write(sb)
	front.Write(block)
	if _, err := dst.Write(front.Bytes()); err != nil {
		return fmt.Errorf("bundle: write: %w", err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		return fmt.Errorf("bundle: copy tables and payload: %w", err)
	}
	return nil
}

// RecipientsOf lists the recipient entries of an encrypted bundle (NOT
// verified: for `otad bundle recipients list`).
func RecipientsOf(src io.Reader) (*Front, []crypt.Entry, error) {
	f, err := Inspect(src)
	if err != nil {
		return nil, nil, err
	}
	if f.Recipients == nil {
		return f, nil, nil
	}
	es, err := crypt.ParseBlock(f.Recipients)
	if err != nil {
		return nil, nil, cryptErr(err)
	}
	return f, es, nil
}
