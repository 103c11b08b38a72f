package bundle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Source is one image to put into a bundle.
type Source struct {
	Class    string
	Encoding string      // EncodingRaw, EncodingZstd or EncodingDelta
	Data     io.ReaderAt // slot image (raw, zstd) or patch stream (delta)
	Size     int64       // bytes in Data
	// Delta images only: the target slot image the patch produces, and the
	// image it applies to.
	TargetSize   int64
	TargetSHA256 string
	Delta        *DeltaSource
}

// CreateOptions are the manifest fields a bundle author chooses.
type CreateOptions struct {
	Compatible      string
	Version         string
	SecurityVersion uint64
	Created         time.Time // zero: now
	Expires         time.Time // zero: never
	ChunkSize       int64     // zero: DefaultChunkSize
	TempDir         string    // spool for compressed chunks; "" = os.TempDir()
	ZstdLevel       zstd.EncoderLevel
}

// prepared is an image after the first pass: its manifest entry, chunk
// table and where its stored bytes come from.
type prepared struct {
	img    Image
	table  []chunkEntry
	stored io.ReaderAt
	spool  *os.File
}

// Create writes a bundle to w, signed by every key in keys. Pass one reads
// each source to hash it (and compress it to a spool file); pass two writes
// the bundle front to back, so w may be a pipe.
func Create(ctx context.Context, w io.Writer, o CreateOptions, srcs []Source, keys []*PrivateKey) (*Manifest, error) {
	signers := make([]Signer, len(keys))
	for i, k := range keys {
		signers[i] = k
	}
	return CreateSigned(ctx, w, o, srcs, signers)
}

// CreateSigned is Create with any signers (key files, PKCS#11 tokens,
// signing commands); each signature is verified against its signer's
// public key before the first byte is written.
func CreateSigned(ctx context.Context, w io.Writer, o CreateOptions, srcs []Source, keys []Signer) (*Manifest, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no signing key", ErrUnknownKey)
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.Created.IsZero() {
		o.Created = time.Now()
	}
	m := &Manifest{Type: ManifestType, Compatible: o.Compatible, Version: o.Version,
		SecurityVersion: o.SecurityVersion, Created: o.Created, Expires: o.Expires}
	var preps []*prepared
	defer func() {
		for _, p := range preps {
			if p.spool != nil {
				p.spool.Close()
				os.Remove(p.spool.Name())
			}
		}
	}()
	for _, s := range srcs {
		p, err := prepare(ctx, s, &o)
		if p != nil {
			preps = append(preps, p)
		}
		if err != nil {
			return nil, err
		}
		m.Images = append(m.Images, p.img)
	}
	mb, err := MarshalManifest(m)
	if err != nil {
		return nil, err
	}
	sb, err := signAll(ctx, keys, mb)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(header{ManifestLen: uint32(len(mb)), SignatureLen: uint32(len(sb))}.marshal()); err != nil {
		return nil, fmt.Errorf("bundle: write: %w", err)
	}
	for _, b := range [][]byte{mb, sb} {
		if _, err := w.Write(b); err != nil {
			return nil, fmt.Errorf("bundle: write: %w", err)
		}
	}
	for _, p := range preps {
		if _, err := w.Write(marshalTable(p.table)); err != nil {
			return nil, fmt.Errorf("bundle: write: %w", err)
		}
	}
	for _, p := range preps {
		if err := writePayload(ctx, w, p); err != nil {
			return nil, err
		}
	}
	return ParseManifest(mb)
}

// writePayload copies the stored chunks, re-hashing each against the table
// built in pass one: an input file changed between the passes fails here
// instead of producing a bundle every device would refuse.
func writePayload(ctx context.Context, w io.Writer, p *prepared) error {
	buf := make([]byte, zstdBound(p.img.ChunkSize))
	var off int64
	for k, e := range p.table {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := buf[:e.Len]
		if n, err := p.stored.ReadAt(chunk, off); int64(n) != e.Len {
			return fmt.Errorf("bundle: read payload of %q chunk %d: %w", p.img.Class, k, err)
		}
		if sha256.Sum256(chunk) != e.Hash {
			return fmt.Errorf("%w: image %q chunk %d changed while the bundle was being created", ErrChunkHash, p.img.Class, k)
		}
		if _, err := w.Write(chunk); err != nil {
			return fmt.Errorf("bundle: write payload of %q: %w", p.img.Class, err)
		}
		off += e.Len
	}
	return nil
}

func prepare(ctx context.Context, s Source, o *CreateOptions) (*prepared, error) {
	p := &prepared{img: Image{Class: s.Class, Encoding: s.Encoding, ChunkSize: o.ChunkSize}, stored: s.Data}
	img := &p.img
	var enc *zstd.Encoder
	switch s.Encoding {
	case EncodingRaw:
		img.Size, img.PayloadSize = s.Size, s.Size
	case EncodingZstd:
		img.Size = s.Size
		f, err := os.CreateTemp(o.TempDir, "otab-spool-*")
		if err != nil {
			return nil, fmt.Errorf("bundle: spool: %w", err)
		}
		p.spool, p.stored = f, f
		level := o.ZstdLevel
		if level == 0 {
			level = zstd.SpeedDefault
		}
		if enc, err = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(level)); err != nil {
			return p, fmt.Errorf("bundle: zstd: %w", err)
		}
		defer enc.Close()
	case EncodingDelta:
		img.Size, img.SHA256, img.PayloadSize, img.Delta = s.TargetSize, s.TargetSHA256, s.Size, s.Delta
	default:
		return nil, fmt.Errorf("%w: image %q: encoding %q", ErrMalformed, s.Class, s.Encoding)
	}
	total := img.DecodedSize()
	if total <= 0 {
		return p, fmt.Errorf("%w: image %q is empty", ErrMalformed, s.Class)
	}
	img.Chunks = int((total + o.ChunkSize - 1) / o.ChunkSize)
	whole := sha256.New()
	buf := make([]byte, o.ChunkSize)
	var stored []byte
	for k := 0; k < img.Chunks; k++ {
		if err := ctx.Err(); err != nil {
			return p, err
		}
		n := img.chunkLen(k)
		if got, err := s.Data.ReadAt(buf[:n], int64(k)*o.ChunkSize); int64(got) != n {
			return p, fmt.Errorf("bundle: read image %q at chunk %d: %w", s.Class, k, err)
		}
		chunk := buf[:n]
		if s.Encoding != EncodingDelta {
			whole.Write(chunk)
		}
		if enc != nil {
			stored = enc.EncodeAll(chunk, stored[:0])
			if _, err := p.spool.Write(stored); err != nil {
				return p, fmt.Errorf("bundle: spool: %w", err)
			}
			chunk = stored
		}
		p.table = append(p.table, chunkEntry{Len: int64(len(chunk)), Hash: sha256.Sum256(chunk)})
		if enc != nil {
			img.PayloadSize += int64(len(chunk))
		}
	}
	if s.Encoding != EncodingDelta {
		img.SHA256 = hex.EncodeToString(whole.Sum(nil))
	}
	ts := sha256.Sum256(marshalTable(p.table))
	img.ChunkTableSHA256 = hex.EncodeToString(ts[:])
	return p, nil
}

// AddSignature copies the bundle from src to dst with one more signature
// by key; an existing signature by the same key id is replaced. The
// manifest bytes, and so the bundle's Identity, stay the same.
func AddSignature(dst io.Writer, src io.Reader, key *PrivateKey) error {
	return AddSignatures(context.Background(), dst, src, key)
}
