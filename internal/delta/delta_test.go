package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// genPatch makes a patch without the full-image fallback (tests want the
// patch even when it is not smaller).
func genPatch(t testing.TB, old, nw []byte, opts GenOptions) ([]byte, Stats) {
	t.Helper()
	if opts.FullSize == 0 {
		opts.FullSize = -1
	}
	var buf bytes.Buffer
	st, err := Generate(context.Background(), bytes.NewReader(old), int64(len(old)), bytes.NewReader(nw), int64(len(nw)), &buf, opts)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if st.PatchSize != int64(buf.Len()) {
		t.Fatalf("Stats.PatchSize %d, wrote %d", st.PatchSize, buf.Len())
	}
	return buf.Bytes(), st
}

func roundTrip(t testing.TB, old, nw []byte, opts GenOptions) Stats {
	t.Helper()
	patch, st := genPatch(t, old, nw, opts)
	var out recorder
	if err := Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(old), &out); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if !bytes.Equal(out.Bytes(), nw) {
		t.Fatalf("round trip differs: got %d bytes, want %d", out.Len(), len(nw))
	}
	h, err := ReadHeader(bytes.NewReader(patch))
	if err != nil {
		t.Fatal(err)
	}
	if h.NewSHA256 != sha256.Sum256(nw) || h.OldSHA256 != sha256.Sum256(old) || h.NewSize != int64(len(nw)) {
		t.Fatal("header does not describe the images")
	}
	return st
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// textish returns compressible, non-repeating data (like code or text).
func textish(r *rand.Rand, n int) []byte {
	words := []string{"load ", "store ", "branch ", "call ", "ret\n", "mov x0, ", "add ", "0x", "sp, ", "#16\n"}
	var b []byte
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
		if r.IntN(8) == 0 {
			b = append(b, byte('a'+r.IntN(26)))
		}
	}
	return b[:n]
}

func syntheticPairs() map[string][2][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	base := textish(r, 3<<20)
	pairs := map[string][2][]byte{}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	pairs["identical"] = [2][]byte{base, bytes.Clone(base)}
	pairs["empty old"] = [2][]byte{nil, base[:100000]}
	pairs["empty new"] = [2][]byte{base[:100000], nil}
	pairs["both empty"] = [2][]byte{nil, nil}
	pairs["tiny"] = [2][]byte{[]byte("abc"), []byte("abd!")}
	pairs["random"] = [2][]byte{randBytes(r, 1<<20), randBytes(r, 1<<20+12345)}
	pairs["inserted"] = [2][]byte{base, cat(base[:1<<20], randBytes(r, 70000), base[1<<20:])}
	pairs["deleted"] = [2][]byte{base, cat(base[:500000], base[900001:])}
	pairs["shifted"] = [2][]byte{base, cat(base[2<<20:], base[:2<<20])}
	mod := bytes.Clone(base)
	for i := 0; i < len(mod); i += 1000 + r.IntN(3000) {
		mod[i]++
	}
	pairs["sparse edits"] = [2][]byte{base, mod}
	zeroOld := cat(base[:1<<20], make([]byte, 5<<20), base[1<<20:2<<20])
	zeroNew := cat(base[:1<<20], make([]byte, 3<<20+17), randBytes(r, 9000), make([]byte, 2<<20), base[1<<20:2<<20])
	pairs["zero runs"] = [2][]byte{zeroOld, zeroNew}
	pairs["smaller"] = [2][]byte{base, base[:12345]}
	pairs["larger"] = [2][]byte{base[:500000], cat(base, base[:400000])}
	return pairs
}

func TestRoundTripSynthetic(t *testing.T) {
	for name, p := range syntheticPairs() {
		t.Run(name, func(t *testing.T) {
			st := roundTrip(t, p[0], p[1], GenOptions{})
			t.Logf("%d -> %d bytes: patch %d (copy %d zero %d add %d literal %d)", len(p[0]), len(p[1]),
				st.PatchSize, st.CopyBytes, st.ZeroBytes, st.AddBytes, st.LitBytes)
			if st.CopyBytes+st.ZeroBytes+st.AddBytes+st.LitBytes != int64(len(p[1])) {
				t.Errorf("operations cover %d bytes of %d", st.CopyBytes+st.ZeroBytes+st.AddBytes+st.LitBytes, len(p[1]))
			}
		})
	}
}

// Small windows and a segmented suffix array exercise window cuts and the
// large-image path on small inputs.
func TestRoundTripSmallWindowsAndSegments(t *testing.T) {
	p := syntheticPairs()["inserted"]
	opts := GenOptions{WindowSize: SourceBlock, ZstdWindow: 1 << 16, MaxSuffixArray: 1 << 20, SegmentSize: 1 << 20}
	st := roundTrip(t, p[0], p[1], opts)
	if st.Windows < len(p[1])/SourceBlock {
		t.Errorf("%d windows for %d bytes in %d-byte windows", st.Windows, len(p[1]), SourceBlock)
	}
}

func TestRoundTripRawDiff(t *testing.T) {
	p := syntheticPairs()["sparse edits"]
	raw := roundTrip(t, p[0], p[1], GenOptions{DiffCoding: DiffRaw})
	bzOnly := roundTrip(t, p[0], p[1], GenOptions{DiffCoding: DiffBzip2})
	bz := roundTrip(t, p[0], p[1], GenOptions{})
	zs := roundTrip(t, p[0], p[1], GenOptions{DiffCoding: DiffSparseZstd})
	if raw.AddBytes == 0 || raw.AddBytes != bz.AddBytes || zs.AddBytes != bz.AddBytes {
		t.Fatalf("add bytes raw %d bzip2 %d sparse zstd %d", raw.AddBytes, bz.AddBytes, zs.AddBytes)
	}
	t.Logf("patch with raw diff %d bytes, bzip2 %d, sparse (bzip2 or zstd per window) %d, sparse zstd %d", raw.PatchSize, bzOnly.PatchSize, bz.PatchSize, zs.PatchSize)
}

func TestPatchIsSmallForSmallChanges(t *testing.T) {
	p := syntheticPairs()["sparse edits"]
	_, st := genPatch(t, p[0], p[1], GenOptions{})
	// ~1000 one-byte edits in 3 MiB: a few bytes per edit, far below the
	// size of the new image compressed on its own.
	if full := zstdSize(p[1]); st.PatchSize*20 > full {
		t.Errorf("patch %d bytes, full image zstd %d", st.PatchSize, full)
	}
	if st.LitBytes > 4096 {
		t.Errorf("%d literal bytes for single-byte edits", st.LitBytes)
	}
}

func TestFallbackWhenNotSmaller(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	old, nw := randBytes(r, 1<<18), randBytes(r, 1<<18) // unrelated and incompressible
	var buf bytes.Buffer
	st, err := Generate(context.Background(), bytes.NewReader(old), int64(len(old)), bytes.NewReader(nw), int64(len(nw)), &buf, GenOptions{})
	if !errors.Is(err, ErrDeltaNotSmaller) {
		t.Fatalf("err = %v, want ErrDeltaNotSmaller (patch %d, full %d)", err, st.PatchSize, st.FullSize)
	}
	if buf.Len() != 0 {
		t.Errorf("%d bytes written despite fallback", buf.Len())
	}
	if st.FullSize <= 0 || st.PatchSize < st.FullSize {
		t.Errorf("stats patch %d full %d", st.PatchSize, st.FullSize)
	}
}

// recorder is a dst that remembers what was written.
// recorder is a slot in memory: written sequentially, read back with
// ReadAt (what patches that read the new image back need).
type recorder struct{ bytes.Buffer }

func (r *recorder) ReadAt(p []byte, off int64) (int, error) {
	b := r.Bytes()
	if off < 0 || off > int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestMismatchedSourceRefusedBeforeWriting(t *testing.T) {
	p := syntheticPairs()["sparse edits"]
	patch, _ := genPatch(t, p[0], p[1], GenOptions{})
	for name, src := range map[string][]byte{
		"one byte changed": func() []byte { b := bytes.Clone(p[0]); b[len(b)/2] ^= 1; return b }(),
		"truncated":        p[0][:len(p[0])-5000],
		"other image":      syntheticPairs()["random"][0],
	} {
		t.Run(name, func(t *testing.T) {
			var dst recorder
			err := Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(src), &dst)
			if !errors.Is(err, ErrSourceMismatch) {
				t.Fatalf("err = %v, want ErrSourceMismatch", err)
			}
			if dst.Len() != 0 {
				t.Fatalf("%d bytes written before the mismatch was found", dst.Len())
			}
			if err := VerifySource(context.Background(), bytes.NewReader(patch), bytes.NewReader(src)); !errors.Is(err, ErrSourceMismatch) {
				t.Fatalf("VerifySource = %v", err)
			}
		})
	}
	if err := VerifySource(context.Background(), bytes.NewReader(patch), bytes.NewReader(p[0])); err != nil {
		t.Fatalf("VerifySource on the right source: %v", err)
	}
}

// A source whose all-zero blocks were discarded (fstrim) and now read back
// as garbage still applies: the patch never reads them.
func TestTrimmedSourceBlocksStillApply(t *testing.T) {
	p := syntheticPairs()["zero runs"]
	old := p[0]
	patch, st := genPatch(t, old, p[1], GenOptions{})
	trimmed := bytes.Clone(old)
	r := rand.New(rand.NewPCG(5, 6))
	n := 0
	for off := 0; off+SourceBlock <= len(trimmed); off += SourceBlock {
		if allZero(trimmed[off : off+SourceBlock]) {
			copy(trimmed[off:], randBytes(r, SourceBlock))
			n++
		}
	}
	if n < 1000 {
		t.Fatalf("only %d zero blocks in the test image", n)
	}
	if st.SourceBytes > int64(len(old)-n*SourceBlock) {
		t.Errorf("patch reads %d source bytes, only %d are not zero blocks", st.SourceBytes, len(old)-n*SourceBlock)
	}
	var out bytes.Buffer
	if err := Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(trimmed), &out); err != nil {
		t.Fatalf("Apply on trimmed source: %v", err)
	}
	if !bytes.Equal(out.Bytes(), p[1]) {
		t.Fatal("wrong output from trimmed source")
	}
}

// Flipping a byte anywhere in the body must fail, and every byte written
// before the failure must be a correct prefix of the new image (the bad
// window's output never reaches dst).
func TestTamperedPatchRefused(t *testing.T) {
	p := syntheticPairs()["inserted"]
	patch, st := genPatch(t, p[0], p[1], GenOptions{WindowSize: 64 << 10})
	if st.Windows < 10 {
		t.Fatalf("only %d windows", st.Windows)
	}
	r := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < 40; i++ {
		bad := bytes.Clone(patch)
		at := HeaderSize + r.IntN(len(bad)-HeaderSize)
		bad[at] ^= byte(1 + r.IntN(255))
		var dst recorder
		err := Apply(context.Background(), bytes.NewReader(bad), bytes.NewReader(p[0]), &dst)
		if err == nil {
			t.Fatalf("byte %d flipped: Apply succeeded", at)
		}
		if !bytes.Equal(dst.Bytes(), p[1][:dst.Len()]) {
			t.Fatalf("byte %d flipped: wrong bytes written before the error %v", at, err)
		}
	}
	// A diff byte changed inside a still-valid zstd stream: rebuild the
	// patch with one output byte wrong in a window's diff section.
	var buf bytes.Buffer
	h, _ := ReadHeader(bytes.NewReader(patch))
	buf.Write(h.marshal())
	body := decodeBody(t, patch)
	k := bytes.Index(body, p[1][2<<20:2<<20+64]) // literal or diff bytes of a late window
	if k < 0 {
		k = len(body) - 100
	}
	body[k] ^= 0x40
	writeBody(t, &buf, body, int(h.ZstdWindow))
	var dst recorder
	err := Apply(context.Background(), bytes.NewReader(buf.Bytes()), bytes.NewReader(p[0]), &dst)
	if !errors.Is(err, ErrOutputHash) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSourceMismatch) {
		t.Fatalf("err = %v", err)
	}
	if dst.Len() >= len(p[1]) || !bytes.Equal(dst.Bytes(), p[1][:dst.Len()]) {
		t.Fatalf("bad window written (%d bytes out, err %v)", dst.Len(), err)
	}
}

func decodeBody(t *testing.T, patch []byte) []byte {
	t.Helper()
	h, err := ReadHeader(bytes.NewReader(patch))
	if err != nil {
		t.Fatal(err)
	}
	s, err := newStream(bytes.NewReader(patch[HeaderSize:]), h)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	b, err := io.ReadAll(s.r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCorpusPairs(t *testing.T) {
	// Opt-in: the corpus pairs take minutes (`make bench-delta` runs them
	// all); a cache that happens to exist must not change what make test does.
	dir := os.Getenv("OTAD_DELTA_CORPUS")
	if dir == "" {
		t.Skip("OTAD_DELTA_CORPUS not set (e.g. OTAD_DELTA_CORPUS=$HOME/.cache/otad-corpus, built by scripts/delta-corpus.sh)")
	}
	pairs := [][2]string{{"esbuild-0.25.11.bin", "esbuild-0.25.12.bin"}}
	if testing.Short() || raceOn {
		t.Log("rootfs and BusyBox pairs skipped under -short and -race (about 2 GB and 40 CPU-s without the race detector)")
	} else {
		pairs = append(pairs, [2]string{"rootfs-v1.ext4", "rootfs-v2.ext4"}, [2]string{"busybox-bookworm.ext4", "busybox-trixie.ext4"})
	}
	for _, pr := range pairs {
		old, err1 := os.ReadFile(filepath.Join(dir, pr[0]))
		nw, err2 := os.ReadFile(filepath.Join(dir, pr[1]))
		if err1 != nil || err2 != nil {
			t.Logf("%s: corpus pair not present in %s (build it with scripts/delta-corpus.sh, OUT=%s): %v %v", pr[1], dir, dir, err1, err2)
			continue
		}
		t.Run(pr[1], func(t *testing.T) {
			st := roundTrip(t, old, nw, GenOptions{})
			t.Logf("patch %d bytes (%.2f%% of %d), %d of %d windows LZ (%s), generated in %v", st.PatchSize,
				100*float64(st.PatchSize)/float64(len(nw)), len(nw), st.LZWindows, st.Windows, st.LZCoder, st.Duration)
			// The major-release pair is where LZ windows pay: without them
			// the patch is 10 % larger (2,313,379 against 2,101,459 B).
			if pr[1] == "busybox-trixie.ext4" && st.LZWindows == 0 {
				t.Errorf("no LZ window on the major-release pair (%s)", st.LZCoder)
			}
		})
	}
}

// firstWindow generates a patch for a pair whose first window is a single
// COPY of 64 KiB from offset 0 and returns its decoded body with the offsets
// of that window and of its control section.
func firstWindow(t *testing.T) (old []byte, h *Header, body []byte, winAt, ctrlAt, ctrlLen int) {
	t.Helper()
	r := rand.New(rand.NewPCG(11, 12))
	old = randBytes(r, 256<<10)
	nw := bytes.Clone(old)
	nw[200<<10] ^= 1 // one edit late: the first windows are single COPYs
	patch, _ := genPatch(t, old, nw, GenOptions{WindowSize: 64 << 10})
	h, _ = ReadHeader(bytes.NewReader(patch))
	if h.Version != formatVersion || string(patch[:8]) != "OTADDLT5" {
		t.Fatalf("version %d, magic %q", h.Version, patch[:8])
	}
	body = decodeBody(t, patch)
	// Skip the source table to the first window.
	rd := bytes.NewReader(body)
	uv := func() uint64 {
		v, err := binary.ReadUvarint(rd)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for c := uv(); c > 0; c-- {
		for runs := uv(); runs > 0; runs-- {
			uv()
			uv()
		}
		rd.Seek(4, io.SeekCurrent) // CRC-32C
	}
	winAt = len(body) - rd.Len()
	uv() // outLen
	ctrlLen = int(uv())
	rd.Seek(32, io.SeekCurrent)
	ctrlAt = len(body) - rd.Len()
	if ctrl := body[ctrlAt : ctrlAt+ctrlLen]; !bytes.Equal(ctrl, []byte{1, opCopy, 3, 0x80, 0x80, 0x04, 0}) {
		t.Fatalf("first window is not one COPY of 64 KiB from 0: % x", ctrl)
	}
	return old, h, body, winAt, ctrlAt, ctrlLen
}

func applyBody(t *testing.T, h *Header, body, old []byte) (int, error) {
	t.Helper()
	var buf bytes.Buffer
	buf.Write(h.marshal())
	writeBody(t, &buf, body, int(h.ZstdWindow))
	var dst recorder
	err := Apply(context.Background(), bytes.NewReader(buf.Bytes()), bytes.NewReader(old), &dst)
	return dst.Len(), err
}

// A COPY moved to another offset of the (genuine) source passes the source
// table (the blocks are all listed) but makes other output, which the chain
// refuses before its window is written.
func TestMovedCopyRefused(t *testing.T) {
	old, h, body, winAt, ctrlAt, ctrlLen := firstWindow(t)
	moved := bytes.Clone(body[:winAt])
	moved = append(moved, body[winAt:ctrlAt]...)
	moved = append(moved, 1, opCopy, 3, 0x80, 0x80, 0x04, 0x80, 0x40) // Δoff +4096
	moved = append(moved, body[ctrlAt+ctrlLen:]...)
	moved[winAt+3] = byte(ctrlLen + 1) // outLen is 3 bytes, ctrlLen one
	if n, err := applyBody(t, h, moved, old); !errors.Is(err, ErrOutputHash) || n != 0 {
		t.Fatalf("moved COPY: err %v, %d bytes written", err, n)
	}
}

// Every window but the last must end on a multiple of ChainAlign (its check
// value is a chaining value there): a first window one byte short is
// malformed, and nothing is written.
func TestMisalignedWindowRefused(t *testing.T) {
	old, h, body, winAt, ctrlAt, _ := firstWindow(t)
	short := bytes.Clone(body)
	copy(short[winAt:], []byte{0xff, 0xff, 0x03})    // outLen 65535
	copy(short[ctrlAt+3:], []byte{0xff, 0xff, 0x03}) // the COPY's length
	n, err := applyBody(t, h, short, old)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "not a multiple of 64") || n != 0 {
		t.Fatalf("window ending at 65535: err %v, %d bytes written", err, n)
	}
}
