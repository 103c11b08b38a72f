package slot

import (
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/otadev/otad/internal/testutil/loopdev"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, device nodes)")
	}
}

// loopDevice attaches a fresh zero-filled file of size bytes to a loop
// device; both are detached and removed when the test ends, pass or fail.
func loopDevice(t *testing.T, size int64) (dev, backing string) {
	t.Helper()
	requireRoot(t)
	backing = filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, size); err != nil {
		t.Fatal(err)
	}
	return loopdev.Attach(t, backing, false), backing
}

// mknod makes a device node in dir (never opened by tests that only need
// its number).
func mknod(t *testing.T, path string, mode uint32, major, minor uint32) {
	t.Helper()
	requireRoot(t)
	if err := unix.Mknod(path, mode|0o600, int(unix.Mkdev(major, minor))); err != nil {
		t.Fatalf("mknod %s: %v", path, err)
	}
}

func randomImage(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// writeIn writes img through w in uneven pieces, as a decompressor would.
func writeIn(t *testing.T, w Writer, img []byte, piece int) {
	t.Helper()
	for i, k := 0, 0; i < len(img); k++ {
		n := min(piece+(k%3)*777, len(img)-i)
		if m, err := w.Write(img[i : i+n]); err != nil || m != n {
			t.Fatalf("write at %d: n=%d err=%v", i, m, err)
		}
		i += n
	}
}
