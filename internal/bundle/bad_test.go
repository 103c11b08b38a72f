package bundle

import (
	"bytes"
	"crypto/elliptic"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// badCase is one malicious or broken bundle. allowed is how many leading
// bytes of the true image may reach the writer before the refusal: 0 for
// anything wrong before the payload, k chunks for a bad chunk k.
type badCase struct {
	name    string
	bundle  []byte
	opts    func(*Options)
	want    error
	msg     string
	allowed int
}

// TestBadBundles proves each bad bundle is refused with the right sentinel
// and a clear message, and that no byte of a bad chunk (and no byte at all
// for front-matter errors) reached the writer.
func TestBadBundles(t *testing.T) {
	k := testKeys(t)
	const size = 4*testChunk + 1000 // 5 chunks, short last one
	img := content(1, size, false)
	good := makeBundle(t, createOpts(), []Source{rawSource("rootfs", img, EncodingRaw)}, k.ed)
	mb, sb, rest := parts(t, good)
	payloadStart := len(good) - size
	tableStart := payloadStart - 5*tableEntrySize
	frontEnd := HeaderSize + len(mb) + len(sb)
	if tableStart != frontEnd {
		t.Fatalf("layout: table at %d, front ends at %d", tableStart, frontEnd)
	}
	chunkOff := func(c int) int { return payloadStart + c*testChunk }

	editManifest := func(old, new string) []byte {
		if !bytes.Contains(mb, []byte(old)) {
			t.Fatalf("manifest lacks %q: %s", old, mb)
		}
		return resign(t, bytes.Replace(mb, []byte(old), []byte(new), 1), rest, k.ed)
	}
	withHeader := func(off int, v uint32) []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint32(b[off:], v)
		return b
	}
	rawSigBlock := func(entries ...[]byte) []byte { return assemble(mb, bytes.Join(entries, nil), rest) }
	sigEntry := func(code byte, id string, sig []byte) []byte {
		e := append([]byte{code, byte(len(id))}, id...)
		e = binary.BigEndian.AppendUint16(e, uint16(len(sig)))
		return append(e, sig...)
	}
	edSig, _ := k.ed.Sign(nil, mb)
	pSig, err := k.p256.Sign(randReader{}, mb)
	if err != nil {
		t.Fatal(err)
	}

	// Another bundle of the same shape: its table and payload must not mix.
	other := makeBundle(t, createOpts(), []Source{rawSource("rootfs", content(2, size, false), EncodingRaw)}, k.ed)
	_, _, otherRest := parts(t, other)

	cases := []badCase{
		{name: "unknown key", bundle: makeBundle(t, createOpts(), []Source{rawSource("rootfs", img, EncodingRaw)}, k.stranger), want: ErrUnknownKey, msg: "someone-else"},
		{name: "wrong role", bundle: makeBundle(t, createOpts(), []Source{rawSource("rootfs", img, EncodingRaw)}, k.dev), want: ErrThreshold, msg: "wrong role: dev-laptop (dev)"},
		{name: "threshold 2 of 1 signer", bundle: good, opts: func(o *Options) { o.Keyring = testKeyring(t, 2) }, want: ErrThreshold, msg: "1 of 2"},
		{name: "bad magic", bundle: flip(good, 0), want: ErrMalformed, msg: "not a bundle"},
		{name: "format version 2", bundle: func() []byte { b := bytes.Clone(good); b[5] = 2; return b }(), want: ErrMalformed, msg: "format version 2"},
		{name: "header flags", bundle: flip(good, 7), want: ErrMalformed, msg: "header flags"},
		{name: "manifest length 4 GiB", bundle: withHeader(8, 0xFFFFFFFF), want: ErrTooLarge, msg: "manifest length 4294967295"},
		{name: "manifest length zero", bundle: withHeader(8, 0), want: ErrMalformed, msg: "empty manifest"},
		{name: "signature block 5000", bundle: withHeader(12, 5000), want: ErrTooLarge, msg: "signature block"},
		{name: "flipped byte manifest start", bundle: flip(good, HeaderSize), want: ErrBadSignature},
		{name: "flipped byte manifest middle", bundle: flip(good, HeaderSize+len(mb)/2), want: ErrBadSignature},
		{name: "flipped byte manifest end", bundle: flip(good, HeaderSize+len(mb)-1), want: ErrBadSignature},
		{name: "flipped byte signature", bundle: flip(good, frontEnd-1), want: ErrBadSignature, msg: "release-2026"},
		{name: "flipped byte signature key id", bundle: flip(good, HeaderSize+len(mb)+2), want: ErrUnknownKey},
		{name: "flipped byte chunk table length", bundle: flip(good, tableStart+7), want: ErrChunkHash, msg: "chunk table"},
		{name: "flipped byte chunk table hash", bundle: flip(good, tableStart+5*tableEntrySize-1), want: ErrChunkHash, msg: "chunk table"},
		{name: "chunk table from another bundle", bundle: assemble(mb, sb, append(bytes.Clone(otherRest[:5*tableEntrySize]), rest[5*tableEntrySize:]...)), want: ErrChunkHash, msg: "another bundle"},
		{name: "payload from another bundle", bundle: assemble(mb, sb, append(bytes.Clone(rest[:5*tableEntrySize]), otherRest[5*tableEntrySize:]...)), want: ErrChunkHash, msg: "chunk 0 of 5"},
		{name: "flipped last byte", bundle: flip(good, len(good)-1), want: ErrChunkHash, msg: "chunk 4", allowed: 4 * testChunk},
		{name: "payload longer than declared", bundle: append(bytes.Clone(good), 0), want: ErrMalformed, msg: "after the last declared", allowed: 4 * testChunk},
		{name: "payload one chunk longer", bundle: append(bytes.Clone(good), img[:testChunk]...), want: ErrMalformed, msg: "after the last declared", allowed: 4 * testChunk},
		{name: "image larger than slot", bundle: good, opts: func(o *Options) { o.SlotSizes = map[string]int64{"rootfs": size - 1} }, want: ErrTooLarge, msg: "slot holds"},
		{name: "no slot of that class", bundle: good, opts: func(o *Options) { o.SlotSizes = map[string]int64{"kernel": 1 << 30} }, want: ErrIncompatible, msg: `"rootfs"`},
		{name: "wrong compatible", bundle: good, opts: func(o *Options) { o.Compatible = "acme-gw2" }, want: ErrIncompatible, msg: `"acme-gw1"`},
		{name: "device compatible unset", bundle: good, opts: func(o *Options) { o.Compatible = "" }, want: ErrIncompatible, msg: "not set"},
		{name: "security version below floor", bundle: good, opts: func(o *Options) { o.SecurityFloor = 6 }, want: ErrDowngrade, msg: "5 < floor 6"},
		{name: "expired", bundle: func() []byte {
			o := createOpts()
			o.Expires = testNow.Add(-time.Minute)
			return makeBundle(t, o, []Source{rawSource("rootfs", img, EncodingRaw)}, k.ed)
		}(), want: ErrExpired, msg: "expired at"},
		{name: "no keyring", bundle: good, opts: func(o *Options) { o.Keyring = nil }, want: ErrUnknownKey},
		{name: "duplicate JSON key", bundle: editManifest(`{"type"`, `{"version":"9.9","type"`), want: ErrMalformed, msg: `duplicate key "version"`},
		{name: "case-variant JSON key", bundle: editManifest(`"version"`, `"Version"`), want: ErrMalformed, msg: `"Version" differs in case`},
		{name: "case-variant nested key", bundle: editManifest(`"class"`, `"CLASS"`), want: ErrMalformed, msg: "differs in case"},
		{name: "unknown field", bundle: editManifest(`{"type"`, `{"hooks":"rm -rf /","type"`), want: ErrMalformed, msg: `unknown field "hooks"`},
		{name: "unknown nested field", bundle: editManifest(`"class"`, `"mode":"force","class"`), want: ErrMalformed, msg: `unknown field "mode"`},
		{name: "non-canonical whitespace", bundle: editManifest(`,"version"`, `, "version"`), want: ErrMalformed, msg: "canonical"},
		{name: "trailing JSON", bundle: resign(t, append(bytes.Clone(mb), []byte(`{}`)...), rest, k.ed), want: ErrMalformed, msg: "trailing data"},
		{name: "wrong manifest type", bundle: editManifest(ManifestType, "otad-delta-v1"), want: ErrMalformed, msg: `type "otad-delta-v1"`},
		{name: "chunk size above 8 MiB", bundle: editManifest(`"chunk_size":4096`, `"chunk_size":16777216`), want: ErrTooLarge, msg: "chunk_size"},
		{name: "chunk count inconsistent", bundle: editManifest(`"chunks":5`, `"chunks":4`), want: ErrMalformed, msg: "needs 5"},
		{name: "empty signature block", bundle: rawSigBlock(), want: ErrUnknownKey, msg: "no signatures"},
		{name: "empty signature", bundle: rawSigBlock(sigEntry(1, "release-2026", nil)), want: ErrMalformed, msg: "0 bytes"},
		{name: "oversized signature", bundle: rawSigBlock(sigEntry(1, "release-2026", append(bytes.Clone(edSig.Sig), 0))), want: ErrMalformed, msg: "65 bytes"},
		{name: "truncated signature entry", bundle: rawSigBlock(sigEntry(1, "release-2026", edSig.Sig)[:20]), want: ErrMalformed, msg: "truncated"},
		{name: "unknown signature algorithm", bundle: rawSigBlock(sigEntry(9, "release-2026", edSig.Sig)), want: ErrMalformed, msg: "algorithm code 9"},
		{name: "algorithm differs from key's", bundle: rawSigBlock(sigEntry(2, "release-2026", edSig.Sig)), want: ErrBadSignature, msg: "claims p256"},
		{name: "all-zero signature", bundle: rawSigBlock(sigEntry(1, "release-2026", make([]byte, 64))), want: ErrBadSignature},
		{name: "good plus forged signature", bundle: rawSigBlock(sigEntry(1, "release-2026", edSig.Sig), sigEntry(1, "release-2027", edSig.Sig)), want: ErrBadSignature, msg: "release-2027"},
		{name: "malleated ECDSA as second signer", bundle: rawSigBlock(sigEntry(2, "release-hsm", pSig.Sig), sigEntry(2, "release-hsm", malleate(pSig.Sig))),
			opts: func(o *Options) { o.Keyring = testKeyring(t, 2) }, want: ErrMalformed, msg: "signs twice"},
		{name: "decompression bomb", bundle: bombBundle(t, 1<<20), want: ErrTooLarge, msg: "declared"},
		{name: "chunk decompresses short", bundle: bombBundle(t, 100), want: ErrMalformed, msg: "want 4096"},
		{name: "chunk not zstd", bundle: bombBundle(t, -1), want: ErrMalformed, msg: "zstd"},
		{name: "compressed image hash differs from manifest", bundle: lyingImageHash(t), want: ErrChunkHash, msg: "decoded SHA-256", allowed: testChunk},
	}
	for c := 0; c < 5; c++ {
		cases = append(cases,
			badCase{name: fmt.Sprintf("flipped first byte of chunk %d", c), bundle: flip(good, chunkOff(c)), want: ErrChunkHash, msg: fmt.Sprintf("chunk %d of 5", c), allowed: c * testChunk},
			badCase{name: fmt.Sprintf("flipped last byte of chunk %d", c), bundle: flip(good, min(chunkOff(c+1), len(good))-1), want: ErrChunkHash, msg: fmt.Sprintf("chunk %d of 5", c), allowed: c * testChunk},
			badCase{name: fmt.Sprintf("truncated mid chunk %d", c), bundle: good[:chunkOff(c)+100], want: ErrTruncated, msg: fmt.Sprintf("chunk %d", c), allowed: c * testChunk},
		)
		if c > 0 {
			cases = append(cases, badCase{name: fmt.Sprintf("truncated before chunk %d", c), bundle: good[:chunkOff(c)], want: ErrTruncated, msg: fmt.Sprintf("chunk %d", c), allowed: c * testChunk})
		}
	}
	for _, cut := range []struct {
		name string
		at   int
	}{
		{"empty file", 0}, {"mid header", 7}, {"after header", HeaderSize}, {"mid manifest", HeaderSize + 10},
		{"after manifest", HeaderSize + len(mb)}, {"mid signatures", frontEnd - 3}, {"after signatures", frontEnd},
		{"mid chunk table", tableStart + 41}, {"after chunk table", payloadStart}, {"one byte short", len(good) - 1},
	} {
		allowed := 0
		if cut.at == len(good)-1 {
			allowed = 4 * testChunk
		}
		cases = append(cases, badCase{name: "truncated " + cut.name, bundle: good[:cut.at], want: ErrTruncated, allowed: allowed})
	}

	if n := runBadCases(t, cases, img); n < 25 {
		t.Fatalf("only %d cases", n)
	}
}

// runBadCases drains every case through the verifying reader, both via
// Read and WriteTo, and checks the sentinel, the message and exactly which
// bytes reached the writer. It returns the number of cases.
func runBadCases(t *testing.T, cases []badCase, img []byte) int {
	seen := map[string]bool{}
	for _, tc := range cases {
		if seen[tc.name] {
			t.Fatalf("duplicate case %q", tc.name)
		}
		seen[tc.name] = true
		for _, writeTo := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/writeTo=%v", tc.name, writeTo), func(t *testing.T) {
				o := testOptions(t)
				if tc.opts != nil {
					tc.opts(&o)
				}
				rec, err := drain(bytes.NewReader(tc.bundle), o, writeTo)
				if !errors.Is(err, tc.want) {
					t.Fatalf("error %v, want %v", err, tc.want)
				}
				t.Logf("refused: %v", err)
				if !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("error %q does not mention %q", err, tc.msg)
				}
				got := rec.Bytes()
				if len(got) != tc.allowed {
					t.Fatalf("writer got %d bytes before the refusal, want %d", len(got), tc.allowed)
				}
				if tc.allowed > 0 && !bytes.Equal(got, expectedPrefix(tc, img)) {
					t.Fatal("writer got bytes that are not the signed image")
				}
			})
		}
	}
	t.Logf("%d bad-bundle cases", len(seen))
	return len(seen)
}

// expectedPrefix is the true image content a case may have delivered; the
// zstd cases use their own image.
func expectedPrefix(tc badCase, img []byte) []byte {
	if strings.HasPrefix(tc.name, "compressed") {
		return content(3, 3*testChunk, true)[:tc.allowed]
	}
	return img[:tc.allowed]
}

// malleate turns (r, s) into (r, n-s), which verifies just the same.
func malleate(sig []byte) []byte {
	n := elliptic.P256().Params().N
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(n, s)
	out := bytes.Clone(sig)
	s.FillBytes(out[32:])
	return out
}

// bombBundle signs a one-image zstd bundle whose single 4 KiB chunk's stored
// bytes decode to decoded bytes (or are not zstd at all when decoded < 0).
// The chunk hash is right: only the decompression cap can catch it.
func bombBundle(t *testing.T, decoded int) []byte {
	var stored []byte
	if decoded < 0 {
		stored = []byte("this is not a zstd frame at all")
	} else {
		enc, _ := zstd.NewWriter(nil)
		stored = enc.EncodeAll(make([]byte, decoded), nil)
		enc.Close()
	}
	return signedRaw(t, Image{Class: "rootfs", Size: testChunk, SHA256: strings.Repeat("0", 64), Encoding: EncodingZstd,
		ChunkSize: testChunk, Chunks: 1}, [][]byte{stored})
}

// lyingImageHash: a zstd image whose chunks are fine but whose manifest
// carries the wrong whole-image SHA-256 (a broken signer).
func lyingImageHash(t *testing.T) []byte {
	data := content(3, 2*testChunk, true)
	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()
	var chunks [][]byte
	for c := 0; c < 2; c++ {
		chunks = append(chunks, enc.EncodeAll(data[c*testChunk:(c+1)*testChunk], nil))
	}
	return signedRaw(t, Image{Class: "rootfs", Size: int64(len(data)), SHA256: strings.Repeat("ab", 32), Encoding: EncodingZstd,
		ChunkSize: testChunk, Chunks: 2}, chunks)
}

// signedRaw assembles and signs a bundle from hand-made chunks.
func signedRaw(t *testing.T, img Image, chunks [][]byte) []byte {
	var table []chunkEntry
	var payload []byte
	for _, c := range chunks {
		table = append(table, chunkEntry{Len: int64(len(c)), Hash: sha256Sum(c)})
		payload = append(payload, c...)
	}
	img.PayloadSize = int64(len(payload))
	tb := marshalTable(table)
	ts := sha256Sum(tb)
	img.ChunkTableSHA256 = hex.EncodeToString(ts[:])
	m := &Manifest{Type: ManifestType, Compatible: testCompat, Version: "1", SecurityVersion: 5, Created: testNow.Add(-time.Hour), Images: []Image{img}}
	mb, err := MarshalManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	return resign(t, mb, append(tb, payload...), testKeys(t).ed)
}
