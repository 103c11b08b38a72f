package mtdtest

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/otadev/otad/internal/mtd"
)

var (
	nand = mtd.Info{Kind: mtd.NAND, Size: 16 * 4096, EraseSize: 4096, WriteSize: 512}
	nor  = mtd.Info{Kind: mtd.NOR, Size: 8 * 1024, EraseSize: 1024, WriteSize: 1}
)

// medium is bootenv.Medium, restated so this leaf test does not import bootenv.
type medium interface {
	io.ReaderAt
	io.WriterAt
	Erase(off, n int64) error
}

var _ medium = (*Sim)(nil)

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func read(t *testing.T, s *Sim, off, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := s.ReadAt(b, off); err != nil {
		t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
	}
	return b
}

func TestProgramOnlyClearsBits(t *testing.T) {
	s := New(nor)
	if got := read(t, s, 0, 4); !bytes.Equal(got, fill(4, 0xff)) {
		t.Fatalf("fresh device not erased: %x", got)
	}
	if _, err := s.WriteAt([]byte{0xf0, 0x0f, 0xaa, 0x55}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt([]byte{0x3c, 0x3c, 0xff, 0x00}, 0); err != nil {
		t.Fatal(err)
	}
	want := []byte{0xf0 & 0x3c, 0x0f & 0x3c, 0xaa, 0x00}
	if got := read(t, s, 0, 4); !bytes.Equal(got, want) {
		t.Fatalf("got %x, want %x (AND of both writes)", got, want)
	}
	if err := s.Erase(0, nor.EraseSize); err != nil {
		t.Fatal(err)
	}
	if got := read(t, s, 0, nor.EraseSize); !bytes.Equal(got, fill(int(nor.EraseSize), 0xff)) {
		t.Fatal("erase did not restore 0xFF")
	}
}

func TestAlignmentRules(t *testing.T) {
	s := New(nand)
	for _, c := range []struct{ off, n int64 }{{1, 512}, {0, 100}, {512, 513}} {
		if _, err := s.WriteAt(make([]byte, c.n), c.off); !errors.Is(err, mtd.ErrAlign) {
			t.Errorf("write %d@%d: err %v, want ErrAlign", c.n, c.off, err)
		}
	}
	if err := s.Erase(512, 4096); !errors.Is(err, mtd.ErrAlign) {
		t.Errorf("unaligned erase: %v", err)
	}
	if err := s.Erase(0, nand.Size+4096); !errors.Is(err, mtd.ErrRange) {
		t.Errorf("erase past end: %v", err)
	}
	if s.Ops() != 0 {
		t.Errorf("rejected requests counted as ops: %d", s.Ops())
	}
	if _, err := s.WriteAt(make([]byte, 1024), 512); err != nil {
		t.Errorf("aligned two-page write: %v", err)
	}
}

func TestFactoryAndGrownBadBlocks(t *testing.T) {
	s := New(nand, WithBadBlocks(2))
	if bad, _ := s.IsBad(2*4096 + 17); !bad {
		t.Fatal("factory bad block not reported")
	}
	if err := s.Erase(2*4096, 4096); !errors.Is(err, mtd.ErrBadBlock) {
		t.Fatalf("erase of bad block: %v", err)
	}
	if _, err := s.WriteAt(make([]byte, 512), 2*4096); !errors.Is(err, mtd.ErrBadBlock) {
		t.Fatalf("program of bad block: %v", err)
	}

	s.GrowBad(5, s.Ops()+1) // wears out after one more op
	if err := s.Erase(5*4096, 4096); err != nil {
		t.Fatalf("block 5 failed before its time: %v", err)
	}
	if err := s.Erase(5*4096, 4096); !errors.Is(err, mtd.ErrBadBlock) {
		t.Fatalf("worn block erased: %v", err)
	}
	if bad, _ := s.IsBad(5 * 4096); bad {
		t.Fatal("grown bad block reported before anyone marked it")
	}
	if err := s.MarkBadBlock(5 * 4096); err != nil {
		t.Fatal(err)
	}
	if bad, _ := s.IsBad(5 * 4096); !bad {
		t.Fatal("marked block not reported bad")
	}
	if bad, _ := New(nor).IsBad(0); bad {
		t.Fatal("NOR reports bad blocks")
	}
}

func TestPowerCutTearsOnePage(t *testing.T) {
	s := New(nand, WithSeed(7))
	if err := s.Erase(0, 4096); err != nil {
		t.Fatal(err)
	}
	s.CutAfterBytes(1024 + 100) // inside the third page of the next write
	data := fill(4096, 0x00)
	n, err := s.WriteAt(data, 0)
	if !errors.Is(err, ErrPowerCut) || n != 1024 {
		t.Fatalf("cut write: n=%d err=%v, want 1024, ErrPowerCut", n, err)
	}
	if _, err := s.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrPowerCut) {
		t.Fatalf("read while cut: %v", err)
	}
	if err := s.Erase(0, 4096); !errors.Is(err, ErrPowerCut) {
		t.Fatalf("erase while cut: %v", err)
	}
	s.PowerOn()
	got := read(t, s, 0, 4096)
	if !bytes.Equal(got[:1024], data[:1024]) {
		t.Error("pages before the cut were not programmed")
	}
	torn := got[1024:1536]
	if bytes.Equal(torn, data[1024:1536]) || bytes.Equal(torn, fill(512, 0xff)) {
		t.Error("torn page is neither garbage: it equals the old or the new data")
	}
	if !bytes.Equal(got[1536:], fill(4096-1536, 0xff)) {
		t.Error("pages after the torn one were touched")
	}
}

func TestPowerCutByOpsAndPartialErase(t *testing.T) {
	s := New(nor, WithSeed(3))
	if _, err := s.WriteAt(fill(1024, 0), 0); err != nil {
		t.Fatal(err)
	}
	s.CutAfter(1)
	if err := s.Erase(1024, 1024); err != nil { // op 1 completes
		t.Fatal(err)
	}
	if err := s.Erase(0, 1024); !errors.Is(err, ErrPowerCut) { // op 2 is cut
		t.Fatalf("second op: %v", err)
	}
	if !s.IsCut() {
		t.Fatal("IsCut false after cut")
	}
	s.PowerOn()
	got := read(t, s, 0, 1024)
	if bytes.Equal(got, fill(1024, 0)) || bytes.Equal(got, fill(1024, 0xff)) {
		t.Error("cut erase left the block fully old or fully erased")
	}
	// After PowerOn the device works and the cut is disarmed.
	if err := s.Erase(0, 1024); err != nil {
		t.Fatal(err)
	}
	if s.Ops() != 4 {
		t.Errorf("Ops = %d, want 4", s.Ops())
	}
}

func TestLogAndFileBacking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flash.bin")
	s, err := OpenFile(path, nand)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Erase(4096, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt(fill(512, 0x42), 4096); err != nil {
		t.Fatal(err)
	}
	log := s.Log()
	if len(log) != 2 || log[0].Kind != OpErase || log[1] != (Op{Kind: OpWrite, Off: 4096, Len: 512}) {
		t.Fatalf("log = %+v", log)
	}
	s.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(raw)) != nand.Size || raw[4096] != 0x42 || raw[0] != 0xff {
		t.Fatalf("file contents wrong: len %d, [4096]=%x [0]=%x", len(raw), raw[4096], raw[0])
	}
	// Reopen: contents persist; a file of the wrong size is refused.
	s2, err := OpenFile(path, nand)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if b := read(t, s2, 4096, 1); b[0] != 0x42 {
		t.Fatal("contents did not persist")
	}
	if _, err := OpenFile(path, mtd.Info{Kind: mtd.NAND, Size: 2 * nand.Size, EraseSize: 4096, WriteSize: 512}); err == nil {
		t.Fatal("size mismatch accepted")
	}
}

// TestPowerCutTearsNORWriteBuffer: with a write buffer, a cut NOR program
// leaves the buffer in flight with a random subset of its bits cleared, the
// buffers before it programmed and the ones after it untouched.
func TestPowerCutTearsNORWriteBuffer(t *testing.T) {
	info := nor
	info.WriteBufSize = 64
	s := New(info, WithSeed(3))
	s.CutAfterBytes(100) // inside the second buffer
	data := fill(256, 0x00)
	n, err := s.WriteAt(data, 0)
	if !errors.Is(err, ErrPowerCut) || n != 64 {
		t.Fatalf("cut write: n=%d err=%v, want 64, ErrPowerCut", n, err)
	}
	s.PowerOn()
	got := read(t, s, 0, 256)
	if !bytes.Equal(got[:64], data[:64]) {
		t.Error("the buffer before the cut was not programmed")
	}
	if torn := got[64:128]; bytes.Equal(torn, data[64:128]) || bytes.Equal(torn, fill(64, 0xff)) {
		t.Errorf("torn buffer is all old or all new: %x", torn)
	}
	if !bytes.Equal(got[128:], fill(128, 0xff)) {
		t.Error("buffers after the torn one were touched")
	}
}

// TestTornReprogramKeepsEqualBytes: programming bytes with the value they
// hold changes nothing even when torn; only bits that were to be cleared
// can change, and only towards the new value.
func TestTornReprogramKeepsEqualBytes(t *testing.T) {
	info := nor
	info.WriteBufSize = 64
	base := make([]byte, 64)
	for i := range base {
		base[i] = byte(i*37 + 11)
	}
	between := 0
	for seed := uint64(1); seed <= 64; seed++ {
		s := New(info, WithSeed(seed))
		if _, err := s.WriteAt(base, 128); err != nil {
			t.Fatal(err)
		}
		next := append([]byte(nil), base...)
		next[4] = 0x00
		s.CutAfterBytes(int64(seed % 64)) // tear anywhere in the one buffer
		if _, err := s.WriteAt(next, 128); !errors.Is(err, ErrPowerCut) {
			t.Fatalf("seed %d: %v, want ErrPowerCut", seed, err)
		}
		s.PowerOn()
		got := read(t, s, 128, 64)
		for i := range got {
			if i == 4 {
				if got[i]&^base[i] != 0 || got[i]&next[i] != next[i] {
					t.Fatalf("seed %d: torn byte %#x is not between %#x and %#x", seed, got[i], base[i], next[i])
				}
				if got[i] != base[i] && got[i] != next[i] {
					between++
				}
				continue
			}
			if got[i] != base[i] {
				t.Fatalf("seed %d: byte %d re-programmed with its own value changed: %#x, was %#x", seed, i, got[i], base[i])
			}
		}
	}
	if between == 0 {
		t.Fatal("no cut left the changing byte half programmed: the test is blind")
	}
}
