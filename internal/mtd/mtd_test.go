package mtd

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestValidateAndChecks(t *testing.T) {
	good := Info{Kind: NAND, Size: 1 << 20, EraseSize: 128 << 10, WriteSize: 2048}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	if good.Blocks() != 8 {
		t.Fatalf("Blocks = %d", good.Blocks())
	}
	for _, bad := range []Info{
		{Size: 1 << 20, EraseSize: 0, WriteSize: 1},
		{Size: 1 << 20, EraseSize: 3000, WriteSize: 2048},
		{Size: 1000, EraseSize: 512, WriteSize: 1},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrGeometry) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if err := CheckWrite(good, 2048, 4096); err != nil {
		t.Error(err)
	}
	if err := CheckWrite(good, 2048, 100); !errors.Is(err, ErrAlign) {
		t.Error("short page accepted")
	}
	if err := CheckWrite(good, good.Size-2048, 4096); !errors.Is(err, ErrRange) {
		t.Error("write past end accepted")
	}
	if err := CheckErase(good, 128<<10, 128<<10); err != nil {
		t.Error(err)
	}
	if err := CheckErase(good, 2048, 128<<10); !errors.Is(err, ErrAlign) {
		t.Error("unaligned erase accepted")
	}
}

func TestOpenRefusesNonMTD(t *testing.T) {
	p := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(p, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p); !errors.Is(err, ErrNotMTD) {
		t.Fatalf("regular file: %v", err)
	}
	if _, err := Open("/dev/null"); !errors.Is(err, ErrNotMTD) {
		t.Fatalf("/dev/null: %v", err)
	}
}

func TestParseSysfsInt(t *testing.T) {
	if n, err := ParseSysfsInt("8589934592\n"); err != nil || n != 8<<30 {
		t.Fatalf("got %d, %v", n, err)
	}
	for _, s := range []string{"", "x", "12 34", "99999999999999999999"} {
		if _, err := ParseSysfsInt(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func FuzzParseSysfsInt(f *testing.F) {
	f.Add("4096\n")
	f.Add("-1")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSysfsInt(s)
		if err == nil && n != 0 {
			if m, err2 := ParseSysfsInt(" " + s + "\n"); err2 != nil || m != n {
				t.Fatalf("%q: whitespace changed result", s)
			}
		}
	})
}

func TestProgramUnit(t *testing.T) {
	for _, c := range []struct {
		name string
		info Info
		want int64
	}{
		{"nor with a known 4 KiB buffer", Info{Kind: NOR, Size: 128 << 20, EraseSize: 256 << 10, WriteSize: 1, WriteBufSize: 4096}, NORProgramUnit},
		{"nor, buffer unknown", Info{Kind: NOR, Size: 1 << 20, EraseSize: 64 << 10, WriteSize: 1}, NORProgramUnit},
		{"nor with 2-byte program unit", Info{Kind: NOR, Size: 1 << 20, EraseSize: 64 << 10, WriteSize: 2}, NORProgramUnit},
		{"odd page size: whole pages", Info{Kind: NOR, Size: 48 << 10, EraseSize: 48 << 4, WriteSize: 48}, 96},
		{"nand: a page", Info{Kind: NAND, Size: 1 << 20, EraseSize: 128 << 10, WriteSize: 2048}, 2048},
		{"erase block smaller than the unit", Info{Kind: NOR, Size: 4096, EraseSize: 32, WriteSize: 1}, 1},
	} {
		if got := c.info.ProgramUnit(); got != c.want {
			t.Errorf("%s: ProgramUnit = %d, want %d", c.name, got, c.want)
		}
	}
	for _, bad := range []Info{
		{Size: 1 << 20, EraseSize: 64 << 10, WriteSize: 1, WriteBufSize: 96},
		{Size: 1 << 20, EraseSize: 64 << 10, WriteSize: 1, WriteBufSize: 128 << 10},
		{Size: 1 << 20, EraseSize: 64 << 10, WriteSize: 2048, WriteBufSize: 1024},
		{Size: 1 << 20, EraseSize: 64 << 10, WriteSize: 1, WriteBufSize: -1},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrGeometry) {
			t.Errorf("write buffer %d with erase %d, write %d: %v", bad.WriteBufSize, bad.EraseSize, bad.WriteSize, err)
		}
	}
}
