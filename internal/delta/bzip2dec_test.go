package delta

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bz2DecodeAll decodes data as one section holding one stream.
func bz2DecodeAll(data []byte) ([]byte, error) {
	var z bz2Reader
	if err := z.reset(bufio.NewReader(bytes.NewReader(data)), int64(len(data))); err != nil {
		return nil, err
	}
	out, err := io.ReadAll(&z)
	if err != nil {
		return out, err
	}
	return out, z.finish()
}

// TestBzip2DecodeReference decodes streams written by the reference bzip2
// (testdata/ref.bz2: `bzip2 -9` of ref.txt, which has long runs, every byte
// value and text, so several tables, selectors and run-length counts); and,
// when bzip2 is installed, fresh streams of the round-trip inputs.
func TestBzip2DecodeReference(t *testing.T) {
	want, err := os.ReadFile("testdata/ref.txt")
	if err != nil {
		t.Fatal(err)
	}
	enc, err := os.ReadFile("testdata/ref.bz2")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := bz2DecodeAll(enc); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ref.bz2: %v (%d vs %d bytes)", err, len(got), len(want))
	}
	if _, err := exec.LookPath("bzip2"); err != nil {
		t.Log("bzip2 not installed: only the stored reference stream checked")
		return
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, in := range [][]byte{textish(r, 1<<20), randBytes(r, 100000), bytes.Repeat([]byte{0, 0, 0, 0, 0, 1}, 300000), {0}} {
		for _, lvl := range []string{"-1", "-9"} {
			f := filepath.Join(t.TempDir(), "in")
			os.WriteFile(f, in, 0o644)
			enc, err := exec.Command("bzip2", lvl, "-c", f).Output()
			if err != nil {
				t.Fatal(err)
			}
			if got, err := bz2DecodeAll(enc); err != nil || !bytes.Equal(got, in) {
				t.Fatalf("bzip2 %s of %d bytes: %v (%d bytes back)", lvl, len(in), err, len(got))
			}
		}
	}
}

// TestBzip2DecodeDamaged: cut or flipped streams fail (the CRCs make a
// wrong result that passes practically impossible), and never panic.
func TestBzip2DecodeDamaged(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	in := textish(r, 50000)
	enc := bzip2Encode(in)
	for cut := 0; cut < len(enc); cut += 1 + len(enc)/97 {
		if _, err := bz2DecodeAll(enc[:cut]); err == nil {
			t.Fatalf("stream cut at %d of %d decoded", cut, len(enc))
		}
	}
	if _, err := bz2DecodeAll(append(bytes.Clone(enc), 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	if _, err := bz2DecodeAll(append(bytes.Clone(enc), enc...)); err == nil {
		t.Fatal("second stream accepted")
	}
	for i := 0; i < 300; i++ {
		bad := bytes.Clone(enc)
		bad[4+r.IntN(len(bad)-4)] ^= 1 << r.IntN(8)
		if got, err := bz2DecodeAll(bad); err == nil && !bytes.Equal(got, in) {
			t.Fatalf("flipped bit decoded to other data")
		}
	}
}

// TestBzip2DecoderReuse: one reader decodes streams of different block sizes
// in turn, as a patch's windows do.
func TestBzip2DecoderReuse(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var z bz2Reader
	for i, n := range []int{800000, 1000, 300000, 5} {
		in := textish(r, n)
		enc := bzip2Encode(in)
		if err := z.reset(bufio.NewReader(bytes.NewReader(enc)), int64(len(enc))); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(&z)
		if err == nil {
			err = z.finish()
		}
		if err != nil || !bytes.Equal(got, in) {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
}

// FuzzBzip2Decode: whatever the input, the decoder returns an error or
// exactly what compress/bzip2 returns for it.
func FuzzBzip2Decode(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 2))
	f.Add(bzip2Encode([]byte("aaaaaaaaaaaaaaaaaaaaaaabcabcabc")))
	f.Add(bzip2Encode(textish(r, 3000)))
	f.Add(bzip2Encode(sparseTokens(append(make([]byte, 5000), 1, 2, 3))))
	if ref, err := os.ReadFile("testdata/ref.bz2"); err == nil {
		f.Add(ref)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := bz2DecodeAll(data)
		if err != nil {
			return
		}
		want, werr := io.ReadAll(bzip2.NewReader(bytes.NewReader(data)))
		if werr != nil || !bytes.Equal(got, want) {
			t.Fatalf("decoded %d bytes; compress/bzip2: %v, %d bytes", len(got), werr, len(want))
		}
	})
}

// BenchmarkBzip2Decode compares with compress/bzip2 on diff-like tokens.
func BenchmarkBzip2Decode(b *testing.B) {
	r := rand.New(rand.NewPCG(9, 9))
	diff := make([]byte, 1<<20)
	for i := 0; i < len(diff); i += 1 + r.IntN(40) {
		diff[i] = byte(r.IntN(8))
	}
	tok := sparseTokens(diff)
	enc := bzip2Encode(tok)
	b.Run("otad", func(b *testing.B) {
		b.SetBytes(int64(len(tok)))
		var z bz2Reader
		for i := 0; i < b.N; i++ {
			z.reset(bufio.NewReader(bytes.NewReader(enc)), int64(len(enc)))
			io.Copy(io.Discard, &z)
		}
	})
	b.Run("stdlib", func(b *testing.B) {
		b.SetBytes(int64(len(tok)))
		for i := 0; i < b.N; i++ {
			io.Copy(io.Discard, bzip2.NewReader(bytes.NewReader(enc)))
		}
	})
}
