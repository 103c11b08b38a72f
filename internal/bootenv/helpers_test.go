package bootenv

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/testutil/loopdev"
)

// tool returns the path of a real U-Boot tool; they come with `make deps`.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found (run `make deps`: libubootenv-tool, u-boot-tools): %v", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(tool(t, name), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// mkenvimage renders vars ("name=value" lines) with the real tool.
func mkenvimage(t *testing.T, size int, redundant bool, vars ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.txt")
	if err := os.WriteFile(in, []byte(strings.Join(vars, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.bin")
	args := []string{"-s", fmt.Sprint(size), "-o", out}
	if redundant {
		args = append([]string{"-r"}, args...)
	}
	run(t, "mkenvimage", append(args, in)...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fwPrintenv returns fw_printenv's view as an Env, parsed from its output.
func fwPrintenv(t *testing.T, cfg string) *Env {
	t.Helper()
	e, err := ParseDefaults(strings.NewReader(run(t, "fw_printenv", "-c", cfg)))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// writeConfig writes an fw_env.config naming devs as "path offset size".
func writeConfig(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fw_env.config")
	if err := os.WriteFile(p, []byte("# test config\n"+strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// openStore opens the store of a config file with a private lock file.
func openStore(t *testing.T, cfgPath string) *DeviceStore {
	t.Helper()
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.LockPath = filepath.Join(t.TempDir(), "lock")
	s, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// loopDevice attaches a loop device to a new file of size bytes holding
// content at offset 0, and detaches it when the test ends.
func loopDevice(t *testing.T, content []byte, size int64, readOnly bool) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("loop device tests need root (the test machine runs them as root)")
	}
	f := filepath.Join(t.TempDir(), "disk.img")
	buf := make([]byte, size)
	copy(buf, content)
	if err := os.WriteFile(f, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	return loopdev.Attach(t, f, readOnly)
}

func envOf(kv ...string) *Env {
	e := NewEnv()
	for i := 0; i+1 < len(kv); i += 2 {
		e.Set(kv[i], kv[i+1])
	}
	return e
}

// memMedium is a tiny in-test flash: erase sets 0xFF; with nor set, a write
// can only clear bits (AND), like NOR programming; otherwise it overwrites
// like a block device. budget < 0 is unlimited; otherwise the medium accepts
// that many bytes of writes (erases count one byte each) and then loses
// power: the op in progress stops part-way and every later op fails.
type memMedium struct {
	data   []byte
	nor    bool
	budget int
	erases int
	writes int
}

var errPowerCut = fmt.Errorf("memMedium: power cut")

func newMemMedium(size int, nor bool) *memMedium {
	m := &memMedium{data: bytes.Repeat([]byte{0xFF}, size), nor: nor, budget: -1}
	return m
}

func (m *memMedium) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m.data)) {
		return 0, fmt.Errorf("memMedium: read at %d out of range", off)
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memMedium) take(n int) int {
	if m.budget < 0 {
		return n
	}
	if n > m.budget {
		n = m.budget
	}
	m.budget -= n
	return n
}

func (m *memMedium) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, fmt.Errorf("memMedium: write %d+%d out of range", off, len(p))
	}
	m.writes++
	n := m.take(len(p))
	for i := 0; i < n; i++ {
		if m.nor {
			m.data[int(off)+i] &= p[i]
		} else {
			m.data[int(off)+i] = p[i]
		}
	}
	if n < len(p) {
		return n, errPowerCut
	}
	return n, nil
}

func (m *memMedium) Erase(off, n int64) error {
	if off < 0 || off+n > int64(len(m.data)) {
		return fmt.Errorf("memMedium: erase %d+%d out of range", off, n)
	}
	if m.take(1) == 0 {
		return errPowerCut
	}
	m.erases++
	for i := off; i < off+n; i++ {
		m.data[i] = 0xFF
	}
	return nil
}
