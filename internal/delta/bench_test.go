package delta

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkApplyCorpus applies the executable pair's patch in memory
// (skipped without the corpus); go test -bench ApplyCorpus -cpuprofile ...
func BenchmarkApplyCorpus(b *testing.B) {
	home, _ := os.UserHomeDir()
	dir := filepath.Join(home, ".cache", "otad-corpus")
	old, err1 := os.ReadFile(filepath.Join(dir, "esbuild-0.25.11.bin"))
	nw, err2 := os.ReadFile(filepath.Join(dir, "esbuild-0.25.12.bin"))
	if err1 != nil || err2 != nil {
		b.Skip("corpus not present")
	}
	patch, _ := genPatch(b, old, nw, GenOptions{})
	b.SetBytes(int64(len(nw)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := Apply(context.Background(), bytes.NewReader(patch), bytes.NewReader(old), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
