package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"
)

// refChain is SHA-256's compression function as FIPS 180-4 §6.2.2 defines
// it, run from the initial value over whole 64-byte blocks: an independent
// check that chain.value reads the real chaining value out of crypto/sha256.
func refChain(msg []byte) [32]byte {
	k := [64]uint32{
		0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
		0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
		0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
		0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
		0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
		0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
		0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
		0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
	}
	h := [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}
	for ; len(msg) >= 64; msg = msg[64:] {
		var w [64]uint32
		for i := 0; i < 16; i++ {
			w[i] = binary.BigEndian.Uint32(msg[4*i:])
		}
		for i := 16; i < 64; i++ {
			s0 := bits.RotateLeft32(w[i-15], -7) ^ bits.RotateLeft32(w[i-15], -18) ^ w[i-15]>>3
			s1 := bits.RotateLeft32(w[i-2], -17) ^ bits.RotateLeft32(w[i-2], -19) ^ w[i-2]>>10
			w[i] = w[i-16] + s0 + w[i-7] + s1
		}
		a, b, c, d, e, f, g, hh := h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]
		for i := 0; i < 64; i++ {
			t1 := hh + (bits.RotateLeft32(e, -6) ^ bits.RotateLeft32(e, -11) ^ bits.RotateLeft32(e, -25)) + (e&f ^ ^e&g) + k[i] + w[i]
			t2 := (bits.RotateLeft32(a, -2) ^ bits.RotateLeft32(a, -13) ^ bits.RotateLeft32(a, -22)) + (a&b ^ a&c ^ b&c)
			hh, g, f, e, d, c, b, a = g, f, e, d+t1, c, b, a, t1+t2
		}
		for i, v := range [8]uint32{a, b, c, d, e, f, g, hh} {
			h[i] += v
		}
	}
	var out [32]byte
	for i, v := range h {
		binary.BigEndian.PutUint32(out[4*i:], v)
	}
	return out
}

func TestChainValueIsTheCompressionState(t *testing.T) {
	// The reference is right: with one block of padding after "abc" it gives
	// the FIPS 180-4 example digest.
	abc := make([]byte, 64)
	copy(abc, "abc")
	abc[3], abc[63] = 0x80, 24
	if got := refChain(abc); got != sha256.Sum256([]byte("abc")) {
		t.Fatalf("reference compression: %x", got)
	}
	r := rand.New(rand.NewPCG(5, 6))
	msg := randBytes(r, 64*300)
	c := newChain()
	for _, n := range []int{64, 128, 64 * 7, 4096, 64 * 300} {
		c.write(msg[c.n:n])
		got, err := c.value()
		if err != nil {
			t.Fatal(err)
		}
		if want := refChain(msg[:n]); got != want {
			t.Fatalf("after %d bytes: chain %x, compression %x", n, got, want)
		}
	}
	if c.sum() != sha256.Sum256(msg) {
		t.Fatal("chain digest is not the SHA-256 of what was written")
	}
	c.write([]byte{1})
	if _, err := c.value(); err == nil {
		t.Fatal("chaining value taken off a block boundary")
	}
}

// Windows cut early because their control section filled up still end on a
// multiple of ChainAlign (Apply refuses any other), and the patch applies.
func TestControlFullWindowsAligned(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	old := randBytes(r, 256<<10)
	// Short pieces of the old image from all over it, each followed by a
	// byte of its own: two operations per ~40 bytes, a control section that
	// fills before the window does.
	var nw []byte
	for len(nw) < len(old) {
		off := r.IntN(len(old) - 64)
		nw = append(nw, old[off:off+24+r.IntN(24)]...)
		nw = append(nw, byte(r.Uint32()))
	}
	ws := 16 << 10
	st := roundTrip(t, old, nw, GenOptions{WindowSize: ws, CopyRun: -1})
	if st.Windows <= (len(nw)+ws-1)/ws {
		t.Fatalf("%d windows for %d bytes: no window was cut by a full control section, the test proves nothing", st.Windows, len(nw))
	}
}

// flakySource returns the genuine source until changed is set, then one
// altered byte: a source that changes between the source table check and the
// reads of a window (or a change the CRC did not see).
type flakySource struct {
	old     []byte
	changed bool
	at      int64 // byte altered once changed
}

func (f *flakySource) ReadAt(p []byte, off int64) (int, error) {
	n := copy(p, f.old[min(off, int64(len(f.old))):])
	if f.changed && f.at >= off && f.at < off+int64(n) {
		p[f.at-off] ^= 0x40
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestSourceChangedAfterCheckRefusedBeforeItsWindow(t *testing.T) {
	old, nw := spacedEdits(9, 512<<10, 50<<10)
	ws := 64 << 10
	patch, _ := genPatch(t, old, nw, GenOptions{WindowSize: ws})
	src := &flakySource{old: old, at: 300<<10 + 17}
	var dst recorder
	// The source changes once the first window is written, long after the
	// source table check.
	err := Apply(context.Background(), bytes.NewReader(patch), src, writerFunc(func(p []byte) (int, error) {
		src.changed = true
		return dst.Write(p)
	}))
	if !errors.Is(err, ErrOutputHash) {
		t.Fatalf("source changed after the check: %v", err)
	}
	if dst.Len() != 300<<10-300<<10%ws || !bytes.Equal(dst.Bytes(), nw[:dst.Len()]) {
		t.Fatalf("wrote %d bytes; want exactly the good windows before offset %d", dst.Len(), 300<<10)
	}
}

func TestExpectedImageHashChecked(t *testing.T) {
	p := syntheticPairs()["inserted"]
	patch, _ := genPatch(t, p[0], p[1], GenOptions{WindowSize: 64 << 10})
	var dst recorder
	a := &Applier{NewSHA256: sha256.Sum256([]byte("another image"))}
	if err := a.Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(p[0]), &dst); !errors.Is(err, ErrMalformed) || dst.Len() != 0 {
		t.Fatalf("patch for another image: %v, %d bytes written", err, dst.Len())
	}
	var st ApplyStats
	a = &Applier{NewSHA256: sha256.Sum256(p[1]), Stats: &st}
	if err := a.Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(p[0]), &dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.Bytes(), p[1]) || st.HashedOutput != int64(len(p[1])) {
		t.Fatalf("output %v, hashed %d of %d bytes", bytes.Equal(dst.Bytes(), p[1]), st.HashedOutput, len(p[1]))
	}
}

// The last window is handed over only after the whole image hashed to the
// header's SHA-256: a header naming another image gets every window but the
// last, and only those.
func TestLastWindowWithheldOnImageHashMismatch(t *testing.T) {
	p := syntheticPairs()["inserted"]
	ws := 64 << 10
	patch, st := genPatch(t, p[0], p[1], GenOptions{WindowSize: ws})
	if st.Windows < 2 || len(p[1])%ws == 0 {
		t.Fatalf("%d windows for %d bytes", st.Windows, len(p[1]))
	}
	bad := bytes.Clone(patch)
	bad[80] ^= 1 // header NewSHA256
	var dst recorder
	err := Apply(context.Background(), bytes.NewReader(bad), bytes.NewReader(p[0]), &dst)
	if keep := len(p[1]) - len(p[1])%ws; !errors.Is(err, ErrOutputHash) || !bytes.Equal(dst.Bytes(), p[1][:keep]) {
		t.Fatalf("wrong image hash in header: %v, %d bytes written, want the first %d", err, dst.Len(), keep)
	}
}

// An empty new image has no window to check: its hash is checked at the end.
func TestEmptyImage(t *testing.T) {
	old := randBytes(rand.New(rand.NewPCG(3, 4)), 8<<10)
	roundTrip(t, old, nil, GenOptions{})
	patch, _ := genPatch(t, old, nil, GenOptions{})
	patch[80] ^= 1
	var dst recorder
	if err := Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(old), &dst); !errors.Is(err, ErrOutputHash) {
		t.Fatalf("empty image, wrong hash: %v", err)
	}
}

func TestOlderFormatVersionsRefused(t *testing.T) {
	p := syntheticPairs()["inserted"]
	patch, _ := genPatch(t, p[0], p[1], GenOptions{WindowSize: 64 << 10})
	for _, v := range []byte{1, 2} {
		old := bytes.Clone(patch)
		old[7] = '0' + v
		binary.LittleEndian.PutUint16(old[8:], uint16(v))
		var dst recorder
		err := Apply(context.Background(), bytes.NewReader(old), bytes.NewReader(p[0]), &dst)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "regenerate") || dst.Len() != 0 {
			t.Fatalf("version %d: %v", v, err)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

type countingReaderAt struct {
	r     io.ReaderAt
	bytes int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.bytes += int64(n)
	return n, err
}

// SourceChecked skips the source table's reads (the caller ran VerifySource)
// but not the output checks: a wrong source then fails at the first window
// it touches, as ErrOutputHash, with the windows before it intact.
func TestSourceCheckedSkipsTableReadsOnly(t *testing.T) {
	old, nw := spacedEdits(13, 512<<10, 40<<10)
	ws := 64 << 10
	patch, st := genPatch(t, old, nw, GenOptions{WindowSize: ws})
	full, skip := &countingReaderAt{r: bytes.NewReader(old)}, &countingReaderAt{r: bytes.NewReader(old)}
	var out1, out2 bytes.Buffer
	if err := Apply(context.Background(), bytes.NewReader(patch), full, &out1); err != nil {
		t.Fatal(err)
	}
	if err := (&Applier{SourceChecked: true}).Apply(context.Background(), bytes.NewReader(patch), skip, &out2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out1.Bytes(), nw) || !bytes.Equal(out2.Bytes(), nw) {
		t.Fatal("wrong output")
	}
	if full.bytes-skip.bytes != st.SourceBytes {
		t.Fatalf("read %d bytes with the table check, %d without; the table covers %d", full.bytes, skip.bytes, st.SourceBytes)
	}
	bad := bytes.Clone(old)
	bad[300<<10+5] ^= 1
	var dst recorder
	err := (&Applier{SourceChecked: true}).Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(bad), &dst)
	if !errors.Is(err, ErrOutputHash) || !bytes.Equal(dst.Bytes(), nw[:300<<10-300<<10%ws]) {
		t.Fatalf("changed source with SourceChecked: %v, %d bytes written", err, dst.Len())
	}
}

// Applier.VerifySource refuses what Apply would refuse before writing: a
// header that does not match the expectations, or a source too small.
func TestApplierVerifySourceChecksHeader(t *testing.T) {
	p := syntheticPairs()["inserted"]
	patch, _ := genPatch(t, p[0], p[1], GenOptions{WindowSize: 64 << 10})
	ctx := context.Background()
	if err := (&Applier{NewSize: int64(len(p[1])), NewSHA256: sha256.Sum256(p[1]), MaxOldSize: int64(len(p[0]))}).
		VerifySource(ctx, bytes.NewReader(patch), bytes.NewReader(p[0])); err != nil {
		t.Fatal(err)
	}
	if err := (&Applier{MaxOldSize: int64(len(p[0])) - 1}).VerifySource(ctx, bytes.NewReader(patch), bytes.NewReader(p[0])); !errors.Is(err, ErrSourceMismatch) {
		t.Fatalf("source larger than the slot: %v", err)
	}
	if err := (&Applier{NewSHA256: sha256.Sum256(nil)}).VerifySource(ctx, bytes.NewReader(patch), bytes.NewReader(p[0])); !errors.Is(err, ErrMalformed) {
		t.Fatalf("another image: %v", err)
	}
	if err := (&Applier{NewSize: 1}).VerifySource(ctx, bytes.NewReader(patch), bytes.NewReader(p[0])); !errors.Is(err, ErrMalformed) {
		t.Fatalf("another size: %v", err)
	}
}

// spacedEdits is a random image of n bytes and a copy with one byte changed
// every `every` bytes.
func spacedEdits(seed uint64, n, every int) (old, nw []byte) {
	old = randBytes(rand.New(rand.NewPCG(seed, seed+1)), n)
	nw = bytes.Clone(old)
	for i := 0; i < len(nw); i += every {
		nw[i] ^= 0x5a
	}
	return old, nw
}
