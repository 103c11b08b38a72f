package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Manifest is the signed description of a bundle. Its canonical JSON bytes
// are what the signatures cover and what Identity hashes.
type Manifest struct {
	Type            string    `json:"type"`
	Compatible      string    `json:"compatible"`
	Version         string    `json:"version"`
	SecurityVersion uint64    `json:"security_version"`
	Created         time.Time `json:"created"`
	Expires         time.Time `json:"expires,omitzero"`
	Images          []Image   `json:"images"`
	// Encryption is set on encrypted bundles (encrypt.go); the recipient
	// block it refers to is outside the signature.
	Encryption *Encryption `json:"encryption,omitempty"`
}

// Image describes one slot image in the bundle.
type Image struct {
	Class            string       `json:"class"`
	Size             int64        `json:"size"`   // bytes written to the slot
	SHA256           string       `json:"sha256"` // hex of the slot image
	Encoding         string       `json:"encoding"`
	PayloadSize      int64        `json:"payload_size"` // stored bytes in the bundle
	ChunkSize        int64        `json:"chunk_size"`   // decoded bytes per chunk (last may be shorter)
	Chunks           int          `json:"chunks"`
	ChunkTableSHA256 string       `json:"chunk_table_sha256"`
	Delta            *DeltaSource `json:"delta,omitempty"`
}

// DeltaSource names the slot image a delta payload must be applied to.
type DeltaSource struct {
	SourceSHA256 string `json:"source_sha256"`
	SourceSize   int64  `json:"source_size"`
}

// DecodedSize is the number of bytes Read yields for the image: the slot
// image for raw and zstd, the patch stream for delta.
func (img *Image) DecodedSize() int64 {
	if img.Encoding == EncodingDelta {
		return img.PayloadSize
	}
	return img.Size
}

// chunkLen is the decoded length of chunk k.
func (img *Image) chunkLen(k int) int64 {
	if k == img.Chunks-1 {
		return img.DecodedSize() - int64(k)*img.ChunkSize
	}
	return img.ChunkSize
}

// Fits reports ErrTooLarge when the image does not fit a slot of slotSize bytes.
func (img *Image) Fits(slotSize int64) error {
	if img.Size > slotSize {
		return fmt.Errorf("%w: image %q is %d bytes, slot holds %d", ErrTooLarge, img.Class, img.Size, slotSize)
	}
	return nil
}

// MarshalManifest returns the canonical encoding: encoding/json's output for
// the struct (fixed key order, no whitespace), times in UTC whole seconds.
func MarshalManifest(m *Manifest) ([]byte, error) {
	c := *m
	c.Created = c.Created.UTC().Truncate(time.Second)
	if !c.Expires.IsZero() {
		c.Expires = c.Expires.UTC().Truncate(time.Second)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest is %d bytes, limit %d", ErrTooLarge, len(b), MaxManifestSize)
	}
	return b, nil
}

// shape is the allowed key set of a JSON value: object (fields), array
// (elem) or scalar (both nil).
type shape struct {
	fields map[string]*shape
	elem   *shape
	values *shape // object with free keys (a map), each value of this shape
}

var (
	scalar      = &shape{}
	deltaShape  = &shape{fields: map[string]*shape{"source_sha256": scalar, "source_size": scalar}}
	imageShape  = &shape{fields: map[string]*shape{"class": scalar, "size": scalar, "sha256": scalar, "encoding": scalar, "payload_size": scalar, "chunk_size": scalar, "chunks": scalar, "chunk_table_sha256": scalar, "delta": deltaShape}}
	manifestTop = &shape{fields: map[string]*shape{"type": scalar, "compatible": scalar, "version": scalar, "security_version": scalar, "created": scalar, "expires": scalar, "images": {elem: imageShape}, "encryption": encryptionShape}}
)

// ParseManifest parses manifest bytes strictly: encoding/json alone accepts
// duplicate keys and matches keys case-insensitively, so the token stream is
// checked against the schema first, then decoded, then re-encoded and
// compared byte for byte (one canonical form per manifest).
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest is %d bytes, limit %d", ErrTooLarge, len(b), MaxManifestSize)
	}
	if err := checkJSONShape(b, manifestTop); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrMalformed, err)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	canon, err := MarshalManifest(&m)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, b) {
		return nil, fmt.Errorf("%w: manifest is not in canonical form (whitespace, key order, number or time format)", ErrMalformed)
	}
	return &m, nil
}

// checkJSONShape rejects duplicate, unknown and case-variant keys and any
// value whose nesting differs from s (manifest, key files, policy).
func checkJSONShape(b []byte, s *shape) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := walkJSON(dec, s, "$"); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after JSON value", ErrMalformed)
	}
	return nil
}

func walkJSON(dec *json.Decoder, s *shape, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, path, err)
	}
	d, isDelim := tok.(json.Delim)
	switch {
	case s.fields != nil || s.values != nil:
		if !isDelim || d != '{' {
			return fmt.Errorf("%w: %s: want an object", ErrMalformed, path)
		}
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrMalformed, path, err)
			}
			key := kt.(string) // the decoder guarantees object keys are strings
			if seen[key] {
				return fmt.Errorf("%w: %s: duplicate key %q", ErrMalformed, path, key)
			}
			seen[key] = true
			sub, ok := s.fields[key]
			if s.values != nil {
				sub, ok = s.values, true
			}
			if !ok {
				for name := range s.fields {
					if strings.EqualFold(name, key) {
						return fmt.Errorf("%w: %s: key %q differs in case from %q", ErrMalformed, path, key, name)
					}
				}
				return fmt.Errorf("%w: %s: unknown field %q", ErrMalformed, path, key)
			}
			for other := range seen {
				if other != key && strings.EqualFold(other, key) {
					return fmt.Errorf("%w: %s: keys %q and %q differ only in case", ErrMalformed, path, other, key)
				}
			}
			if err := walkJSON(dec, sub, path+"."+key); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
	case s.elem != nil:
		if !isDelim || d != '[' {
			if tok == nil { // null array: decoded as empty, rejected by validate
				return nil
			}
			return fmt.Errorf("%w: %s: want an array", ErrMalformed, path)
		}
		for i := 0; dec.More(); i++ {
			if err := walkJSON(dec, s.elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
	default:
		if isDelim {
			return fmt.Errorf("%w: %s: want a string or number", ErrMalformed, path)
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, path, err)
	}
	return nil
}

var (
	maxImages  = 16
	maxPayload = int64(1) << 50
)

// validate checks what the struct types cannot: required fields, ranges and
// the arithmetic linking size, chunk size and chunk count.
func (m *Manifest) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: manifest: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	if m.Type != ManifestType {
		return bad("type %q, want %q", m.Type, ManifestType)
	}
	if !printable.MatchString(m.Compatible) {
		return bad("compatible %q must be 1-128 printable ASCII characters", m.Compatible)
	}
	if !printable.MatchString(m.Version) {
		return bad("version %q must be 1-128 printable ASCII characters", m.Version)
	}
	if m.Created.IsZero() {
		return bad("created is missing")
	}
	if !m.Expires.IsZero() && !m.Expires.After(m.Created) {
		return bad("expires %s is not after created %s", m.Expires.Format(time.RFC3339), m.Created.Format(time.RFC3339))
	}
	if len(m.Images) == 0 || len(m.Images) > maxImages {
		return bad("%d images, want 1..%d", len(m.Images), maxImages)
	}
	classes := map[string]bool{}
	var tableBytes int64
	for i := range m.Images {
		img := &m.Images[i]
		if err := img.validate(); err != nil {
			return fmt.Errorf("%w (image %d)", err, i)
		}
		if classes[img.Class] {
			return bad("two images for slot class %q", img.Class)
		}
		classes[img.Class] = true
		tableBytes += int64(img.Chunks) * tableEntrySize
	}
	if err := m.Encryption.validate(); err != nil {
		return err
	}
	if tableBytes > MaxTableBytes {
		return fmt.Errorf("%w: chunk tables need %d bytes, limit %d", ErrTooLarge, tableBytes, MaxTableBytes)
	}
	return nil
}

func (img *Image) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: image %q: %s", ErrMalformed, img.Class, fmt.Sprintf(format, a...))
	}
	if !classRe.MatchString(img.Class) {
		return bad("class must match %s", classRe)
	}
	if img.Size <= 0 || img.Size > maxPayload {
		return bad("size %d out of range", img.Size)
	}
	if !hexSHA256.MatchString(img.SHA256) {
		return bad("sha256 must be 64 lower-case hex digits")
	}
	if !hexSHA256.MatchString(img.ChunkTableSHA256) {
		return bad("chunk_table_sha256 must be 64 lower-case hex digits")
	}
	if img.ChunkSize < MinChunkSize || img.ChunkSize > MaxChunkSize || img.ChunkSize&(img.ChunkSize-1) != 0 {
		if img.ChunkSize > MaxChunkSize {
			return fmt.Errorf("%w: image %q: chunk_size %d above %d", ErrTooLarge, img.Class, img.ChunkSize, MaxChunkSize)
		}
		return bad("chunk_size %d must be a power of two in [%d, %d]", img.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if img.PayloadSize <= 0 || img.PayloadSize > maxPayload {
		return bad("payload_size %d out of range", img.PayloadSize)
	}
	switch img.Encoding {
	case EncodingRaw:
		if img.PayloadSize != img.Size {
			return bad("raw payload_size %d differs from size %d", img.PayloadSize, img.Size)
		}
	case EncodingZstd:
	case EncodingDelta:
		if img.Delta == nil {
			return bad("delta image without delta source")
		}
		if !hexSHA256.MatchString(img.Delta.SourceSHA256) || img.Delta.SourceSize <= 0 {
			return bad("delta source needs source_sha256 and a positive source_size")
		}
	default:
		return bad("encoding %q, want raw, zstd or delta", img.Encoding)
	}
	if img.Encoding != EncodingDelta && img.Delta != nil {
		return bad("delta source on a %s image", img.Encoding)
	}
	want := (img.DecodedSize() + img.ChunkSize - 1) / img.ChunkSize
	if int64(img.Chunks) != want {
		return bad("chunks %d, size %d at chunk_size %d needs %d", img.Chunks, img.DecodedSize(), img.ChunkSize, want)
	}
	return nil
}
