package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLocalFileReadSeek(t *testing.T) {
	want := payload(100_000, 1)
	path := filepath.Join(t.TempDir(), "b.otab")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Size() != int64(len(want)) {
		t.Fatalf("Size = %d, want %d", src.Size(), len(want))
	}
	got, err := readAll(t, src)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, want)
	viaURL, err := Open(context.Background(), "file://"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err = readAll(t, viaURL)
	viaURL.Close()
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, want)
	if off, err := src.Seek(60_000, io.SeekStart); err != nil || off != 60_000 {
		t.Fatalf("Seek = %d, %v", off, err)
	}
	if _, err := src.Seek(-10_000, io.SeekCurrent); err != nil {
		t.Fatal(err)
	}
	got, err = readAll(t, src)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, got, want[50_000:])
}

func TestLocalFileTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(path, payload(1000, 2), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), path, Options{MaxSize: 999})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	// The cap also holds if the file grows after Open.
	src, err := Open(context.Background(), path, Options{MaxSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("more"))
	f.Close()
	got, err := io.ReadAll(src)
	if !errors.Is(err, ErrTooLarge) || len(got) != 1000 {
		t.Fatalf("read %d bytes, err %v; want 1000 and ErrTooLarge", len(got), err)
	}
}

func TestLocalFileMissing(t *testing.T) {
	_, err := Open(context.Background(), filepath.Join(t.TempDir(), "nope"), Options{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want not-exist", err)
	}
}

func TestUnsupportedScheme(t *testing.T) {
	_, err := Open(context.Background(), "ftp://example.invalid/b", Options{})
	if err == nil || !strings.Contains(err.Error(), "scheme") {
		t.Fatalf("err = %v, want unsupported scheme", err)
	}
}

func TestStdinNotSeekable(t *testing.T) {
	want := payload(50_000, 3)
	src, err := Open(context.Background(), "-", Options{Stdin: bytes.NewReader(want)})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.Size() != -1 {
		t.Fatalf("Size = %d, want -1", src.Size())
	}
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(src, buf); err != nil {
		t.Fatal(err)
	}
	// Asking for the position, or "seeking" to it, is fine.
	if off, err := src.Seek(0, io.SeekCurrent); err != nil || off != 1000 {
		t.Fatalf("Seek(0, Current) = %d, %v", off, err)
	}
	if off, err := src.Seek(1000, io.SeekStart); err != nil || off != 1000 {
		t.Fatalf("Seek(1000, Start) = %d, %v", off, err)
	}
	for _, tc := range []struct {
		off    int64
		whence int
	}{{0, io.SeekStart}, {5000, io.SeekStart}, {10, io.SeekCurrent}, {0, io.SeekEnd}} {
		if _, err := src.Seek(tc.off, tc.whence); !errors.Is(err, ErrNotSeekable) {
			t.Errorf("Seek(%d, %d) err = %v, want ErrNotSeekable", tc.off, tc.whence, err)
		}
	}
	rest, err := io.ReadAll(src)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, append(buf, rest...), want)
}

func TestStdinTooLarge(t *testing.T) {
	src, err := Open(context.Background(), "-", Options{Stdin: bytes.NewReader(payload(5000, 4)), MaxSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(src)
	if !errors.Is(err, ErrTooLarge) || len(got) != 4096 {
		t.Fatalf("read %d bytes, err %v; want 4096 and ErrTooLarge", len(got), err)
	}
}
