package delta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic starts every patch; the last byte is the format version.
const Magic = "OTADDLT5"

// formatVersion is the only version Apply accepts. Versions 1 and 2
// (per-window SHA-256 of the window's own output; source extents checked with
// SHA-256) were development formats, never shipped, and are refused; version
// 3 had no LZ operation, version 4 had LZ dictionaries of old extents only
// (patches made by otad 0.4 and 0.5 must be regenerated).
const formatVersion = 5

// FlagReadsNew in Header.Flags: some LZ dictionary names extents of the new
// image that earlier windows wrote, so Apply must be able to read the slot
// it writes (Applier.Target); it refuses the patch up front otherwise.
const FlagReadsNew = 1

// ChainAlign is the alignment of every window end but the last: the SHA-256
// block size, so that the window's check value is the hash's chaining value
// over the new image up to that end (see chain.value).
const ChainAlign = 64

// HeaderSize is the size of the fixed, uncompressed patch header.
const HeaderSize = 112

// Hard caps a header may declare. They bound what Apply allocates whatever
// the patch says: WindowSize + MaxCtrl + zstd window + small fixed buffers.
const (
	MaxWindowSize = 4 << 20
	MaxCtrlSize   = 1 << 20
	MaxZstdWindow = 8 << 20
	// MaxLZDict caps the slot bytes (old and new extents) one LZ operation
	// may name as its dictionary. Apply maps them read-only from the two
	// slots, so they cost page cache, not memory of its own; where it cannot
	// map them it copies them, and then refuses a header LZDict over
	// MaxLZDictCopy.
	MaxLZDict     = 32 << 20
	MaxLZDictCopy = 8 << 20
	// MaxLZWindow caps the window size an LZ frame may declare. Apply
	// decodes a frame in one call into the window's own buffer, so this
	// bounds what the decoder accepts, not what it allocates.
	MaxLZWindow = 64 << 20
	// SourceBlock is the granularity of the source table and of the
	// generator's "never read an all-zero block" rule.
	SourceBlock = 4096
)

// Operation codes inside a window's control section.
const (
	opCopy = 0 // len, old offset delta: out = old[off:off+len]
	opZero = 1 // len: out = zeros
	opLit  = 2 // len: out = next len bytes of the window's literal section
	opAdd  = 3 // len, old offset delta: out = old[off:off+len] + next len diff bytes
	// opLZ: len, old extent count k, k × (old offset delta, extent len),
	// new extent count j, j × (new offset delta, extent len), previous
	// output length p: out = the next zstd frame of the window's literal
	// section (preceded by its length), decoded with a raw dictionary (what
	// `zstd --patch-from` makes) of the last p bytes of the previous
	// window's output, then the old extents, then the new extents (bytes
	// of the new image before this window, read back from the slot). Every
	// extent starts and ends on a SourceBlock boundary, so Apply can map it.
	opLZ = 4
)

var (
	// ErrSourceMismatch means the image in the source slot is not the one the
	// patch was made from (only the bytes the patch reads are compared).
	// Errors returned by Apply and VerifySource match it with errors.Is.
	ErrSourceMismatch = errors.New("delta source mismatch")
	// ErrMalformed: the patch is not a well-formed delta patch.
	ErrMalformed = errors.New("delta: malformed patch")
	// ErrOutputHash: the output does not hash to the patch's check value at a
	// window's end (corrupt patch, or a source that differs where the source
	// table's CRC-32C did not notice or that changed after the check); that
	// window was not written.
	ErrOutputHash = errors.New("delta: output hash mismatch")
	// ErrDeltaNotSmaller is returned by Generate when the patch would not be
	// smaller than the full image compressed with zstd; nothing is written.
	ErrDeltaNotSmaller = errors.New("delta: patch not smaller than full image")
)

// SourceMismatchError says where the source differs; it matches
// ErrSourceMismatch with errors.Is.
type SourceMismatchError struct {
	Where string // "source table chunk 3", "window 17"
}

func (e *SourceMismatchError) Error() string {
	return ErrSourceMismatch.Error() + ": " + e.Where
}

// Is makes errors.Is(err, ErrSourceMismatch) true.
func (e *SourceMismatchError) Is(target error) bool { return target == ErrSourceMismatch }

// Header is the fixed start of a patch.
type Header struct {
	Version    uint16 // formatVersion
	Flags      uint16 // FlagReadsNew
	WindowSize uint32 // max output bytes per window
	MaxCtrl    uint32 // max control bytes per window
	ZstdWindow uint32 // zstd window size the body was compressed with
	LZDict     uint32 // most dictionary bytes of any LZ operation (0: none)
	OldSize    int64
	NewSize    int64
	OldSHA256  [32]byte // whole source image (informational: Apply checks extents)
	NewSHA256  [32]byte // whole new image; Apply's last check
}

func (h *Header) marshal() []byte {
	b := make([]byte, HeaderSize)
	v := uint16(formatVersion)
	copy(b, Magic[:7])
	b[7] = '0' + byte(v)
	binary.LittleEndian.PutUint16(b[8:], v)
	binary.LittleEndian.PutUint16(b[10:], h.Flags)
	binary.LittleEndian.PutUint32(b[12:], SourceBlock)
	binary.LittleEndian.PutUint32(b[16:], h.WindowSize)
	binary.LittleEndian.PutUint32(b[20:], h.MaxCtrl)
	binary.LittleEndian.PutUint32(b[24:], h.ZstdWindow)
	binary.LittleEndian.PutUint32(b[28:], h.LZDict)
	binary.LittleEndian.PutUint64(b[32:], uint64(h.OldSize))
	binary.LittleEndian.PutUint64(b[40:], uint64(h.NewSize))
	copy(b[48:80], h.OldSHA256[:])
	copy(b[80:112], h.NewSHA256[:])
	return b
}

// ReadHeader reads and validates the fixed header from the start of a patch.
func ReadHeader(r io.Reader) (*Header, error) {
	b := make([]byte, HeaderSize)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if string(b[:7]) != Magic[:7] {
		return nil, fmt.Errorf("%w: bad magic", ErrMalformed)
	}
	v := binary.LittleEndian.Uint16(b[8:])
	if b[7] != '0'+byte(v) {
		return nil, fmt.Errorf("%w: version %q/%d", ErrMalformed, b[7], v)
	}
	if v != formatVersion {
		return nil, fmt.Errorf("%w: format version %d (this otad applies version %d; regenerate the patch)", ErrMalformed, v, formatVersion)
	}
	flags := binary.LittleEndian.Uint16(b[10:])
	if flags&^FlagReadsNew != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, flags)
	}
	if bs := binary.LittleEndian.Uint32(b[12:]); bs != SourceBlock {
		return nil, fmt.Errorf("%w: source block size %d", ErrMalformed, bs)
	}
	h := &Header{
		Version:    v,
		Flags:      flags,
		WindowSize: binary.LittleEndian.Uint32(b[16:]),
		MaxCtrl:    binary.LittleEndian.Uint32(b[20:]),
		ZstdWindow: binary.LittleEndian.Uint32(b[24:]),
		LZDict:     binary.LittleEndian.Uint32(b[28:]),
		OldSize:    int64(binary.LittleEndian.Uint64(b[32:])),
		NewSize:    int64(binary.LittleEndian.Uint64(b[40:])),
	}
	copy(h.OldSHA256[:], b[48:80])
	copy(h.NewSHA256[:], b[80:112])
	if h.WindowSize < ChainAlign || h.WindowSize > MaxWindowSize || h.WindowSize%ChainAlign != 0 ||
		h.MaxCtrl < 1 || h.MaxCtrl > MaxCtrlSize ||
		h.ZstdWindow < 1<<10 || h.ZstdWindow > MaxZstdWindow ||
		h.LZDict > MaxLZDict ||
		h.OldSize < 0 || h.NewSize < 0 || h.OldSize > 1<<50 || h.NewSize > 1<<50 {
		return nil, fmt.Errorf("%w: header out of range (window %d, control %d, zstd window %d, LZ dictionary %d, image sizes %d/%d)",
			ErrMalformed, h.WindowSize, h.MaxCtrl, h.ZstdWindow, h.LZDict, h.OldSize, h.NewSize)
	}
	return h, nil
}

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendVarint(b []byte, v int64) []byte { return binary.AppendVarint(b, v) }
