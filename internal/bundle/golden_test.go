package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// -update regenerates testdata/ (golden bundle and one file per edge case)
// with the test-only key in testdata/golden.key. Without it the files pin
// format version 1: a reader change that rejects them breaks devices in the
// field.
var update = flag.Bool("update", false, "rewrite testdata bundles")

// goldenEdgeCases: file → sentinel and how many leading bytes of the
// golden content (rootfs then boot) may reach the writer before the refusal.
var goldenEdgeCases = map[string]struct {
	err     error
	allowed int
}{
	"dup-key.otab":       {ErrMalformed, 0},
	"case-variant.otab":  {ErrMalformed, 0},
	"unknown-field.otab": {ErrMalformed, 0},
	"wrong-type.otab":    {ErrMalformed, 0},
	"manifest-4g.otab":   {ErrTooLarge, 0},
	"flipped-chunk.otab": {ErrChunkHash, testChunk},                      // rootfs chunk 1
	"truncated.otab":     {ErrTruncated, 2*testChunk + 50 + 2*testChunk}, // inside boot's last zstd chunk
	"trailing-byte.otab": {ErrMalformed, 2*testChunk + 50 + 2*testChunk},
}

func goldenContent() []byte {
	return append(content(100, 2*testChunk+50, false), content(101, 3*testChunk, true)...)
}

func goldenKeyring(t testing.TB) *Keyring {
	b, err := os.ReadFile("testdata/golden.pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(b)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := NewKeyring(DefaultPolicy, pub)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func writeGolden(t *testing.T) {
	seed := bytes.NewReader(bytes.Repeat([]byte("otad golden test key, never ship"), 2))
	k, err := GenerateKey(AlgEd25519, "golden-test", "release", seed)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := MarshalPrivateKey(k)
	pub, _ := MarshalPublicKey(k.Public())
	o := createOpts()
	o.Created = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	good := makeBundle(t, o, []Source{rawSource("rootfs", content(100, 2*testChunk+50, false), EncodingRaw),
		rawSource("boot", content(101, 3*testChunk, true), EncodingZstd)}, k)
	mb, sb, rest := parts(t, good)
	payloadStart := HeaderSize + len(mb) + len(sb) + (3+3)*tableEntrySize
	edit := func(old, new string) []byte {
		return resign(t, bytes.Replace(mb, []byte(old), []byte(new), 1), rest, k)
	}
	huge := bytes.Clone(good[:64])
	binary.BigEndian.PutUint32(huge[8:], 0xFFFFFFFF)
	files := map[string][]byte{
		"golden.key":         pb,
		"golden.pub":         pub,
		"golden.otab":        good,
		"dup-key.otab":       edit(`{"type"`, `{"compatible":"other","type"`),
		"case-variant.otab":  edit(`"chunks"`, `"Chunks"`),
		"unknown-field.otab": edit(`"class"`, `"script":"x","class"`),
		"trailing-byte.otab": append(bytes.Clone(good), '\n'),
		"manifest-4g.otab":   huge,
		"flipped-chunk.otab": flip(good, payloadStart+testChunk),
		"truncated.otab":     good[:len(good)-10],
		"wrong-type.otab":    edit(ManifestType, "otad-bundle-v2"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGoldenBundle(t *testing.T) {
	if *update {
		writeGolden(t)
	}
	b, err := os.ReadFile("testdata/golden.otab")
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Keyring: goldenKeyring(t), Compatible: testCompat, Now: testNow, HashRawImages: true}
	rec, err := drain(bytes.NewReader(b), o, false)
	if err != nil {
		t.Fatalf("golden bundle no longer verifies: %v", err)
	}
	if !bytes.Equal(rec.Bytes(), goldenContent()) {
		t.Fatal("golden bundle content differs")
	}
	r, _ := NewReader(bytes.NewReader(b), o)
	mb, _, _ := parts(t, b)
	sum := sha256.Sum256(mb)
	if r.Identity() != hex.EncodeToString(sum[:]) || r.Manifest().Created.Year() != 2026 || len(r.Manifest().Images) != 2 {
		t.Errorf("golden manifest: %+v", r.Manifest())
	}
	for name, tc := range goldenEdgeCases {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		rec, err := drain(bytes.NewReader(b), o, false)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", name, err, tc.err)
		}
		if !bytes.Equal(rec.Bytes(), goldenContent()[:tc.allowed]) {
			t.Errorf("%s: writer got %d bytes, want the first %d of the image", name, rec.Len(), tc.allowed)
		}
	}
}
