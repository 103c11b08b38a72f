package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/otadev/otad/internal/crypt"
)

// ErrNotSeekable is returned by SeekChunk when the source is a pipe.
var ErrNotSeekable = errors.New("bundle: source is not seekable")

// Options are the device's facts a bundle is checked against.
type Options struct {
	Keyring       *Keyring // required
	Compatible    string   // required unless AnyCompatible
	AnyCompatible bool     // host tooling only: skip the compatible check
	SecurityFloor uint64
	Now           time.Time // zero: time.Now()
	// SlotSizes maps slot class to slot bytes; an image larger than its
	// slot, or of a class not listed, is refused before any payload.
	SlotSizes map[string]int64
	// HashRawImages adds a whole-image SHA-256 over raw images. Raw output
	// is exactly the stored bytes, each hashed against the signed table, so
	// this second pass only catches a signer whose manifest disagrees with
	// its own chunks; the engine's read-back check covers that anyway.
	// Compressed images are always hashed end to end.
	HashRawImages bool
}

// Front is the verified-or-not front matter of a bundle: everything before
// the chunk tables.
type Front struct {
	Manifest      *Manifest
	ManifestBytes []byte
	Signatures    []Signature
	Identity      string // hex SHA-256 of ManifestBytes
	Size          int64  // bytes from the bundle start to the first chunk table
	// Recipients is the unsigned recipient block of an encrypted bundle
	// (header flag set), nil otherwise; see encrypt.go.
	Recipients []byte
}

// readFront reads header, manifest bytes and signature block; it parses
// the signatures but not the manifest.
func readFront(r io.Reader) (*Front, error) {
	hb := make([]byte, HeaderSize)
	if err := readFull(r, hb, "header"); err != nil {
		return nil, err
	}
	h, err := parseHeader(hb)
	if err != nil {
		return nil, err
	}
	f := &Front{ManifestBytes: make([]byte, h.ManifestLen), Size: HeaderSize + int64(h.ManifestLen) + int64(h.SignatureLen)}
	if err := readFull(r, f.ManifestBytes, "manifest"); err != nil {
		return nil, err
	}
	sb := make([]byte, h.SignatureLen)
	if err := readFull(r, sb, "signature block"); err != nil {
		return nil, err
	}
	if f.Signatures, err = parseSignatures(sb); err != nil {
		return nil, err
	}
	if h.Flags&flagRecipients != 0 {
		if f.Recipients, err = readRecipients(r); err != nil {
			return nil, err
		}
		f.Size += int64(len(f.Recipients))
	}
	sum := sha256.Sum256(f.ManifestBytes)
	f.Identity = hex.EncodeToString(sum[:])
	return f, nil
}

// Inspect reads and strictly parses the front matter WITHOUT checking any
// signature: for `otad bundle info` and re-signing, never for installing.
func Inspect(r io.Reader) (*Front, error) {
	f, err := readFront(r)
	if err != nil {
		return nil, err
	}
	if f.Manifest, err = ParseManifest(f.ManifestBytes); err != nil {
		return nil, err
	}
	return f, nil
}

// Reader streams the verified images of a bundle.
type Reader struct {
	src     io.Reader
	opts    Options
	front   *Front
	signers []string
	tables  [][]chunkEntry
	starts  []int64 // payload offset of each image from the bundle start
	base    int64   // source offset of the bundle start (seekable sources)
	size    int64   // declared bundle length (Size)

	img       int // current image, -1 before the first Next
	chunk     int // next chunk to load
	done      int // chunks fully returned
	out       []byte
	stored    []byte
	decoded   []byte
	imgHash   hash.Hash // nil: no whole-image check (raw, delta, or after a seek)
	trailDone bool
	dec       *zstd.Decoder
	err       error // sticky

	// Encrypted bundles (encrypt.go): every stored chunk is followed by its
	// GCM tag (over bytes), opened by sealer after its hash matched.
	sealer *crypt.Sealer
	over   int64
}

// NewReader reads and verifies header, manifest, signatures, metadata and
// all chunk tables. It returns before reading any payload byte.
func NewReader(r io.Reader, opts Options) (*Reader, error) {
	if opts.Keyring == nil {
		return nil, fmt.Errorf("%w: no keyring given", ErrUnknownKey)
	}
	if opts.Compatible == "" && !opts.AnyCompatible {
		return nil, fmt.Errorf("%w: device compatible string not set", ErrIncompatible)
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	br := &Reader{src: r, opts: opts, img: -1}
	if s, ok := r.(io.Seeker); ok {
		if off, err := s.Seek(0, io.SeekCurrent); err == nil {
			br.base = off
		}
	}
	f, err := readFront(r)
	if err != nil {
		return nil, err
	}
	// Signatures first, over the exact bytes; only then parse them.
	if br.signers, err = opts.Keyring.Verify(f.ManifestBytes, f.Signatures); err != nil {
		return nil, err
	}
	if f.Manifest, err = ParseManifest(f.ManifestBytes); err != nil {
		return nil, err
	}
	br.front = f
	if err := checkMetadata(f.Manifest, &opts); err != nil {
		return nil, err
	}
	if err := br.openSealed(); err != nil {
		return nil, err
	}
	off := f.Size
	for i := range f.Manifest.Images {
		img := &f.Manifest.Images[i]
		tb := make([]byte, img.Chunks*tableEntrySize)
		if err := readFull(r, tb, fmt.Sprintf("chunk table of image %q", img.Class)); err != nil {
			return nil, err
		}
		t, err := parseTable(tb, img)
		if err != nil {
			return nil, err
		}
		br.tables = append(br.tables, t)
		off += int64(len(tb))
	}
	for i := range f.Manifest.Images {
		br.starts = append(br.starts, off)
		off += f.Manifest.Images[i].PayloadSize + int64(f.Manifest.Images[i].Chunks)*br.over
	}
	br.size = off
	return br, nil
}

// Size is the bundle's length in bytes as its verified manifest declares
// it; a source may cap its reads there (one more byte lets the reader see
// trailing data and refuse it).
func (r *Reader) Size() int64 { return r.size }

func checkMetadata(m *Manifest, o *Options) error {
	if !o.AnyCompatible && m.Compatible != o.Compatible {
		return fmt.Errorf("%w: bundle is for %q, this device is %q", ErrIncompatible, m.Compatible, o.Compatible)
	}
	if m.SecurityVersion < o.SecurityFloor {
		return fmt.Errorf("%w: bundle security_version %d < floor %d", ErrDowngrade, m.SecurityVersion, o.SecurityFloor)
	}
	if !m.Expires.IsZero() && !o.Now.Before(m.Expires) {
		return fmt.Errorf("%w: bundle expired at %s (now %s)", ErrExpired, m.Expires.Format(time.RFC3339), o.Now.UTC().Format(time.RFC3339))
	}
	if o.SlotSizes != nil {
		for i := range m.Images {
			img := &m.Images[i]
			size, ok := o.SlotSizes[img.Class]
			if !ok {
				return fmt.Errorf("%w: device has no slot of class %q", ErrIncompatible, img.Class)
			}
			if err := img.Fits(size); err != nil {
				return err
			}
		}
	}
	return nil
}

// Manifest returns the verified manifest.
func (r *Reader) Manifest() *Manifest { return r.front.Manifest }

// Identity is the hex SHA-256 of the signed manifest bytes; signatures do
// not enter it, so re-signing or malleating a signature keeps it.
func (r *Reader) Identity() string { return r.front.Identity }

// Signers are the key ids that met the policy.
func (r *Reader) Signers() []string { return r.signers }

// Next advances to the next image, discarding the rest of the current one.
// It returns io.EOF after the last image.
func (r *Reader) Next() (*Image, error) {
	if r.err != nil {
		return nil, r.err
	}
	imgs := r.front.Manifest.Images
	if r.img >= 0 && r.img < len(imgs) && r.chunk < imgs[r.img].Chunks {
		if err := r.skipTo(r.starts[r.img] + imgs[r.img].PayloadSize + int64(imgs[r.img].Chunks)*r.over); err != nil {
			r.err = err
			return nil, err
		}
	}
	if r.img < len(imgs) {
		r.img++
	}
	r.chunk, r.done, r.out, r.imgHash = 0, 0, nil, nil
	if r.img == len(imgs) {
		if err := r.checkTrailing(); err != nil {
			r.err = err
			return nil, err
		}
		return nil, io.EOF
	}
	img := &imgs[r.img]
	if img.Encoding == EncodingZstd || img.Encoding == EncodingRaw && r.opts.HashRawImages {
		r.imgHash = sha256.New()
	}
	c := *img
	return &c, nil
}

// pos is the current payload offset from the bundle start.
func (r *Reader) pos() int64 {
	if r.img < 0 || r.img >= len(r.starts) {
		return r.front.Size
	}
	off := r.starts[r.img]
	for _, e := range r.tables[r.img][:r.chunk] {
		off += e.Len + r.over
	}
	return off
}

// skipTo moves the source to payload offset target (ahead of pos). A seek
// is only a shortcut: if the source refuses it (stdin behind an io.Seeker),
// the bytes are read and dropped. Either way the next chunk is hashed, so a
// misplaced source cannot go unnoticed.
func (r *Reader) skipTo(target int64) error {
	if s, ok := r.src.(io.Seeker); ok {
		if _, err := s.Seek(r.base+target, io.SeekStart); err == nil {
			return nil
		}
	}
	n := target - r.pos()
	if m, err := io.CopyN(io.Discard, r.src, n); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: skipping image: got %d of %d bytes", ErrTruncated, m, n)
		}
		return fmt.Errorf("bundle: skipping image: %w", err)
	}
	return nil
}

// checkTrailing refuses a bundle with bytes after the last payload.
func (r *Reader) checkTrailing() error {
	if r.trailDone {
		return nil
	}
	var one [1]byte
	_, err := io.ReadFull(r.src, one[:])
	switch {
	case err == nil:
		return fmt.Errorf("%w: data after the last declared payload byte", ErrMalformed)
	case errors.Is(err, io.EOF):
		r.trailDone = true
		return nil
	default:
		return fmt.Errorf("bundle: reading past the last payload: %w", err)
	}
}

// SeekChunk continues the current image at chunk k (0 <= k <= chunks),
// e.g. after a power cut at ChunksDone() == k. The whole-image hash is
// skipped after a seek to k > 0; every chunk is still checked against the
// signed table and the engine verifies the slot by read-back.
func (r *Reader) SeekChunk(k int) error {
	imgs := r.front.Manifest.Images
	if r.img < 0 || r.img >= len(imgs) {
		return fmt.Errorf("bundle: SeekChunk without a current image")
	}
	img := &imgs[r.img]
	if k < 0 || k > img.Chunks {
		return fmt.Errorf("bundle: SeekChunk(%d): image %q has %d chunks", k, img.Class, img.Chunks)
	}
	s, ok := r.src.(io.Seeker)
	if !ok {
		return ErrNotSeekable
	}
	r.chunk = k
	if _, err := s.Seek(r.base+r.pos(), io.SeekStart); err != nil {
		r.err = fmt.Errorf("%w: seek to chunk %d: %v", ErrNotSeekable, k, err)
		return r.err
	}
	r.done, r.out, r.err = k, nil, nil
	r.imgHash = nil
	if k == 0 && (img.Encoding == EncodingZstd || img.Encoding == EncodingRaw && r.opts.HashRawImages) {
		r.imgHash = sha256.New()
	}
	return nil
}

// ChunksDone is the number of chunks of the current image fully returned.
func (r *Reader) ChunksDone() int { return r.done }

// Read returns verified, decoded bytes of the current image.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	for len(r.out) == 0 {
		if r.img < 0 || r.img >= len(r.tables) || r.chunk >= len(r.tables[r.img]) {
			return 0, io.EOF
		}
		if err := r.loadChunk(); err != nil {
			r.err = err
			return 0, err
		}
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	if len(r.out) == 0 {
		r.done = r.chunk
	}
	return n, nil
}

// WriteTo streams the rest of the current image to w without an extra copy.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if r.err != nil {
			return total, r.err
		}
		if len(r.out) == 0 {
			if r.img < 0 || r.img >= len(r.tables) || r.chunk >= len(r.tables[r.img]) {
				return total, nil
			}
			if err := r.loadChunk(); err != nil {
				r.err = err
				return total, err
			}
		}
		n, err := w.Write(r.out)
		total += int64(n)
		r.out = r.out[n:]
		if len(r.out) == 0 {
			r.done = r.chunk
		}
		if err != nil {
			return total, err
		}
		if n == 0 {
			// The writer broke the io.Writer contract; spinning on it would
			// hang the install.
			return total, io.ErrShortWrite
		}
	}
}

// loadChunk reads, hashes, then decodes chunk r.chunk into r.out. Nothing
// is exposed unless every check passed.
func (r *Reader) loadChunk() error {
	img := &r.front.Manifest.Images[r.img]
	k := r.chunk
	e := r.tables[r.img][k]
	if int64(cap(r.stored)) < e.Len+r.over {
		r.stored = make([]byte, zstdBound(img.ChunkSize)+r.over)
	}
	buf := r.stored[:e.Len+r.over]
	if err := readFull(r.src, buf, fmt.Sprintf("image %q chunk %d", img.Class, k)); err != nil {
		return err
	}
	if sha256.Sum256(buf) != e.Hash {
		return fmt.Errorf("%w: image %q chunk %d of %d: stored bytes do not match the signed chunk table", ErrChunkHash, img.Class, k, img.Chunks)
	}
	if r.sealer != nil {
		var err error
		if buf, err = r.sealer.Open(buf, r.img, k, img.Chunks); err != nil {
			return fmt.Errorf("%w: image %q chunk %d of %d: %w", ErrDecrypt, img.Class, k, img.Chunks, err)
		}
	}
	lastImage := r.img == len(r.tables)-1
	lastChunk := k == img.Chunks-1
	if lastImage && lastChunk {
		if err := r.checkTrailing(); err != nil {
			return err
		}
	}
	want := img.chunkLen(k)
	out := buf
	if img.Encoding == EncodingZstd {
		var err error
		if out, err = r.decode(buf, want, img.ChunkSize); err != nil {
			return fmt.Errorf("%w (image %q chunk %d)", err, img.Class, k)
		}
	}
	if r.imgHash != nil {
		r.imgHash.Write(out)
		if lastChunk {
			if sum := r.imgHash.Sum(nil); hex.EncodeToString(sum) != img.SHA256 {
				return fmt.Errorf("%w: image %q: decoded SHA-256 %x, manifest says %s", ErrChunkHash, img.Class, sum, img.SHA256)
			}
		}
	}
	r.out = out
	r.chunk++
	return nil
}

// decode decompresses one verified chunk into at most want bytes.
func (r *Reader) decode(src []byte, want, chunkSize int64) ([]byte, error) {
	if r.dec == nil {
		d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true),
			zstd.WithDecoderMaxMemory(MaxChunkSize), zstd.WithDecoderMaxWindow(MaxChunkSize))
		if err != nil {
			return nil, fmt.Errorf("bundle: zstd: %w", err)
		}
		r.dec = d
	}
	if int64(cap(r.decoded)) < want {
		r.decoded = make([]byte, 0, chunkSize)
	}
	out, err := r.dec.DecodeAll(src, r.decoded[:0:want])
	switch {
	case errors.Is(err, zstd.ErrDecoderSizeExceeded) || int64(len(out)) > want:
		return nil, fmt.Errorf("%w: chunk decompresses beyond its declared %d bytes", ErrTooLarge, want)
	case err != nil:
		return nil, fmt.Errorf("%w: chunk is not valid zstd: %v", ErrMalformed, err)
	case int64(len(out)) != want:
		return nil, fmt.Errorf("%w: chunk decompresses to %d bytes, want %d", ErrMalformed, len(out), want)
	}
	return out, nil
}

// Close releases the decompressor. The source is the caller's to close.
func (r *Reader) Close() error {
	if r.dec != nil {
		r.dec.Close()
		r.dec = nil
	}
	return nil
}
