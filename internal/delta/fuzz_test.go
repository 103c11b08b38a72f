package delta

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func writeBody(t testing.TB, w io.Writer, body []byte, window int) {
	t.Helper()
	enc, err := zstd.NewWriter(w, zstd.WithWindowSize(window), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(body)
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
}

// limitWriter fails once more than n bytes are written, so a fuzzed header
// declaring a huge image cannot make one run take long.
type limitWriter struct{ n int }

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n -= len(p); l.n < 0 {
		return 0, io.ErrShortWrite
	}
	return len(p), nil
}

// FuzzApply feeds arbitrary patches (and arbitrary bodies behind a valid
// header) to Apply: it must return an error or the right output, never panic,
// and never allocate beyond the header's capped limits.
func FuzzApply(f *testing.F) {
	old := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	nw := append(bytes.Clone(old[:30000]), old[20000:50000]...)
	nw[100] = 'x'
	var buf bytes.Buffer
	if _, err := Generate(context.Background(), bytes.NewReader(old), int64(len(old)), bytes.NewReader(nw), int64(len(nw)), &buf, GenOptions{WindowSize: 8192, ZstdWindow: 1 << 16, FullSize: -1}); err != nil {
		f.Fatal(err)
	}
	patch := buf.Bytes()
	// A second seed whose diff section is sparse bzip2 (the edits are too
	// dense for exact matches).
	nw2 := bytes.Clone(old[:40000])
	for i := 0; i < len(nw2); i += 50 {
		nw2[i] ^= 0x11
	}
	var buf2 bytes.Buffer
	if _, err := Generate(context.Background(), bytes.NewReader(old), int64(len(old)), bytes.NewReader(nw2), int64(len(nw2)), &buf2, GenOptions{WindowSize: 8192, ZstdWindow: 1 << 16, FullSize: -1}); err != nil {
		f.Fatal(err)
	}
	// A third seed made of LZ windows (built-in coder: no outside program).
	var buf3 bytes.Buffer
	if _, err := Generate(context.Background(), bytes.NewReader(old), int64(len(old)), bytes.NewReader(nw2), int64(len(nw2)), &buf3, GenOptions{WindowSize: 8192, ZstdWindow: 1 << 16, FullSize: -1, LZ: BuiltinLZ{}, lzAlways: true}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf3.Bytes(), false)
	f.Add(decodeBodyF(f, buf3.Bytes()), true)
	// A fourth whose LZ dictionaries read back the written image.
	rOld, rNew := repeatPair()
	var buf4 bytes.Buffer
	if _, err := Generate(context.Background(), bytes.NewReader(rOld), int64(len(rOld)), bytes.NewReader(rNew), int64(len(rNew)), &buf4, GenOptions{WindowSize: 256 << 10, FullSize: -1, LZ: BuiltinLZ{}, lzAlways: true}); err != nil {
		f.Fatal(err)
	}
	f.Add(buf4.Bytes(), false)
	f.Add(buf2.Bytes(), false)
	f.Add(decodeBodyF(f, buf2.Bytes()), true)
	f.Add(patch, false)
	f.Add(patch[:HeaderSize+10], false)
	f.Add(decodeBodyF(f, patch), true)
	f.Add([]byte{}, true)
	h, _ := ReadHeader(bytes.NewReader(patch))
	h.LZDict = 64 << 10    // fuzzed bodies may hold LZ windows
	h.Flags = FlagReadsNew // that read back the written image
	enc, err := zstd.NewWriter(nil, zstd.WithWindowSize(1<<16), zstd.WithEncoderConcurrency(1))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte, bodyOnly bool) {
		p := data
		if bodyOnly { // valid header, fuzzed (then compressed) body
			p = enc.EncodeAll(data, h.marshal())
		}
		lw := &limitWriter{n: max(len(nw), len(rNew))}
		var back recorder // what was written, for patches that read it back
		a := &Applier{Target: &back}
		err := a.Apply(context.Background(), bytes.NewReader(p), bytes.NewReader(old), io.MultiWriter(lw, &back))
		if err == nil && bodyOnly && lw.n != max(len(nw), len(rNew))-len(nw) {
			t.Fatalf("Apply succeeded but wrote %d of %d bytes", back.Len(), len(nw))
		}
		VerifySource(context.Background(), bytes.NewReader(p), bytes.NewReader(old))
	})
}

func decodeBodyF(f *testing.F, patch []byte) []byte {
	h, err := ReadHeader(bytes.NewReader(patch))
	if err != nil {
		f.Fatal(err)
	}
	s, err := newStream(bytes.NewReader(patch[HeaderSize:]), h)
	if err != nil {
		f.Fatal(err)
	}
	defer s.close()
	b, err := io.ReadAll(s.r)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
