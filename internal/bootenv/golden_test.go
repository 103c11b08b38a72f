package bootenv

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Golden images come from testdata/gen.sh (real mkenvimage, patched bytes).
// want is the value of "v" a reader must see, per flag scheme; "" = error.
var goldens = []struct {
	file           string
	increment, boo string
	wantErr        error
}{
	{"copyA-bad-crc.bin", "old", "old", nil},
	{"flags-equal.bin", "a", "a", nil},
	{"flag-wrap-255-0.bin", "b", "a", nil},
	{"both-bad.bin", "", "", ErrNoValidCopy},
	{"boolean-obsolete.bin", "new", "new", nil},
}

func TestGoldenImages(t *testing.T) {
	for _, g := range goldens {
		img, err := os.ReadFile(filepath.Join("testdata", g.file))
		if err != nil {
			t.Fatal(err)
		}
		for _, sc := range []struct {
			scheme FlagScheme
			want   string
		}{{FlagsIncrement, g.increment}, {FlagsBoolean, g.boo}} {
			m := newMemMedium(len(img), false)
			copy(m.data, img)
			s := NewMediumStore([]Medium{m, m}, []int64{0, 0x100}, 0x100, sc.scheme)
			e, err := s.Load()
			if g.wantErr != nil {
				if !errors.Is(err, g.wantErr) {
					t.Errorf("%s/%v: err = %v, want %v", g.file, sc.scheme, err, g.wantErr)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s/%v: %v", g.file, sc.scheme, err)
				continue
			}
			if v, _ := e.Get("v"); v != sc.want {
				t.Errorf("%s/%v: v=%q, want %q", g.file, sc.scheme, v, sc.want)
			}
			if v, _ := e.Get("boot"); v != "run distro_bootcmd" {
				t.Errorf("%s/%v: boot=%q", g.file, sc.scheme, v)
			}
		}
	}
}

// TestGoldenImagesAgreeWithFwPrintenv: on a file libubootenv uses the
// counter scheme; its choice must be ours.
func TestGoldenImagesAgreeWithFwPrintenv(t *testing.T) {
	for _, g := range goldens {
		if g.wantErr != nil {
			continue
		}
		p := filepath.Join(t.TempDir(), g.file)
		img, _ := os.ReadFile(filepath.Join("testdata", g.file))
		if err := os.WriteFile(p, img, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg := writeConfig(t, p+" 0 0x100", p+" 0x100 0x100")
		got := strings.TrimSpace(run(t, "fw_printenv", "-c", cfg, "-n", "v"))
		if got != g.increment {
			t.Errorf("%s: fw_printenv v=%q, our table says %q", g.file, got, g.increment)
		}
		e, err := openStore(t, cfg).Load()
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := e.Get("v"); v != got {
			t.Errorf("%s: otad v=%q, fw_printenv %q", g.file, v, got)
		}
	}
}

func TestGoldenBothBadAndTruncatedAreErrors(t *testing.T) {
	p := filepath.Join("testdata", "both-bad.bin")
	abs, _ := filepath.Abs(p)
	s := openStore(t, writeConfig(t, abs+" 0 0x100", abs+" 0x100 0x100"))
	if _, err := s.Load(); !errors.Is(err, ErrNoValidCopy) {
		t.Fatalf("both-bad: %v", err)
	}
	abs, _ = filepath.Abs(filepath.Join("testdata", "truncated.bin"))
	cfg, err := LoadConfig(writeConfig(t, abs+" 0 0x100", abs+" 0x100 0x100"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.LockPath = "-"
	if _, err := OpenStore(cfg); !errors.Is(err, ErrShortRead) {
		t.Fatalf("truncated: OpenStore err = %v, want ErrShortRead", err)
	}
	// Reading through a Medium that ends early is the same error.
	img, _ := os.ReadFile(abs)
	m := newMemMedium(len(img), false)
	copy(m.data, img)
	if _, err := NewMediumStore([]Medium{m, m}, []int64{0, 0x100}, 0x100, FlagsIncrement).Load(); err == nil {
		t.Fatal("truncated medium: Load succeeded")
	}
}

// TestInitRecoversFromNoValidCopy: the refusal is explicit, and Init (the
// factory step) makes both copies valid.
func TestInitRecoversFromNoValidCopy(t *testing.T) {
	img, _ := os.ReadFile(filepath.Join("testdata", "both-bad.bin"))
	p := filepath.Join(t.TempDir(), "env.img")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, p+" 0 0x100", p+" 0x100 0x100")
	s := openStore(t, cfg)
	if err := Update(s, func(e *Env) error { return nil }); !errors.Is(err, ErrNoValidCopy) {
		t.Fatalf("Update on no valid copy: %v", err)
	}
	if err := s.Init(envOf("x", "1")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	for i := 0; i < 2; i++ {
		if !decode(b[i*0x100:(i+1)*0x100], true).valid {
			t.Fatalf("copy %d not valid after Init", i)
		}
	}
	if e := fwPrintenv(t, cfg); !e.Equal(envOf("x", "1")) {
		t.Fatalf("fw_printenv after Init: %s", e)
	}
}
