package delta

import (
	"bytes"
	"compress/bzip2"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestBzip2EncodeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	sparse := make([]byte, 3<<20) // mostly zero, like diff bytes: spans 4 blocks
	for i := 0; i < len(sparse); i += 1 + r.IntN(200) {
		sparse[i] = byte(r.IntN(4) + 1)
	}
	cases := map[string][]byte{
		"one byte": {7},
		"run":      bytes.Repeat([]byte{0}, 1000),
		"runs 4":   []byte("aaaabbbbbccccccccccccc d"),
		"text":     textish(r, 300000),
		"random":   randBytes(r, 200000),
		"sparse":   sparse,
		"all bytes": func() []byte {
			b := make([]byte, 256*40)
			for i := range b {
				b[i] = byte(i * 7)
			}
			return b
		}(),
		"long run": bytes.Repeat([]byte{9}, 2<<20),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			enc := bzip2Encode(in)
			got, err := io.ReadAll(bzip2.NewReader(bytes.NewReader(enc)))
			if err != nil {
				t.Fatalf("compress/bzip2: %v", err)
			}
			if !bytes.Equal(got, in) {
				t.Fatalf("round trip differs (%d vs %d bytes)", len(got), len(in))
			}
			if got, err := bz2DecodeAll(enc); err != nil || !bytes.Equal(got, in) {
				t.Fatalf("bz2Reader: %v (%d vs %d bytes)", err, len(got), len(in))
			}
			// The reference decoder agrees, when installed.
			if _, err := exec.LookPath("bzip2"); err == nil {
				f := filepath.Join(t.TempDir(), "x.bz2")
				os.WriteFile(f, enc, 0o644)
				out, err := exec.Command("bzip2", "-dc", f).Output()
				if err != nil || !bytes.Equal(out, in) {
					t.Fatalf("bzip2 -d: %v (%d bytes)", err, len(out))
				}
			}
			t.Logf("%d -> %d", len(in), len(enc))
		})
	}
}
