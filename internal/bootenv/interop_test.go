package bootenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const interopSize = 0x4000

// medium is where an interop test puts its environment image.
type medium struct {
	name  string
	setup func(t *testing.T, image []byte) (path string)
}

var media = []medium{
	{"file", func(t *testing.T, image []byte) string {
		p := filepath.Join(t.TempDir(), "env.img")
		if err := os.WriteFile(p, image, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}},
	{"loop", func(t *testing.T, image []byte) string {
		return loopDevice(t, image, 1<<20, false)
	}},
}

// seed makes an image mkenvimage-seeded (fw_setenv cannot start from blank):
// single: one copy at 0; redundant: the -r image at 0 and at interopSize.
func seed(t *testing.T, redundant bool, vars ...string) []byte {
	img := mkenvimage(t, interopSize, redundant, vars...)
	if redundant {
		img = append(img, img...)
	}
	return img
}

func configFor(t *testing.T, path string, redundant bool) string {
	lines := []string{fmt.Sprintf("%s 0x0 0x%x", path, interopSize)}
	if redundant {
		lines = append(lines, fmt.Sprintf("%s 0x%x 0x%x", path, interopSize, interopSize))
	}
	return writeConfig(t, lines...)
}

func forEachLayout(t *testing.T, fn func(t *testing.T, m medium, redundant bool)) {
	for _, m := range media {
		for _, redundant := range []bool{false, true} {
			name := m.name + "/single"
			if redundant {
				name = m.name + "/redundant"
			}
			t.Run(name, func(t *testing.T) { fn(t, m, redundant) })
		}
	}
}

func TestInteropOtadWritesFwPrintenvReads(t *testing.T) {
	forEachLayout(t, func(t *testing.T, m medium, redundant bool) {
		path := m.setup(t, seed(t, redundant, "bootdelay=2", "stale=1"))
		cfg := configFor(t, path, redundant)
		s := openStore(t, cfg)
		if s.Redundant() != redundant {
			t.Fatalf("Redundant() = %v", s.Redundant())
		}
		// Three saves so both copies are written and the flag moves on.
		for i := 0; i < 3; i++ {
			err := Update(s, func(e *Env) error {
				e.Set("otad_slot", []string{"A", "B"}[i%2])
				e.Set("bootcount", fmt.Sprint(i))
				e.Set("bootargs", "console=ttyS0,115200 root=/dev/vda2 rootwait quiet")
				e.Unset("stale")
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			want, _ := s.Load()
			got := fwPrintenv(t, cfg)
			if !got.Equal(want) {
				t.Fatalf("save %d: fw_printenv sees\n%s\nwant\n%s", i, got, want)
			}
		}
		if v := strings.TrimSpace(run(t, "fw_printenv", "-c", cfg, "-n", "otad_slot")); v != "A" {
			t.Fatalf("fw_printenv -n otad_slot = %q", v)
		}
	})
}

func TestInteropFwSetenvWritesOtadReads(t *testing.T) {
	forEachLayout(t, func(t *testing.T, m medium, redundant bool) {
		path := m.setup(t, seed(t, redundant, "bootdelay=2"))
		cfg := configFor(t, path, redundant)
		s := openStore(t, cfg)
		for i := 0; i < 4; i++ {
			run(t, "fw_setenv", "-c", cfg, "upgrade_available", fmt.Sprint(i%2), "note", "with spaces "+fmt.Sprint(i))
			got, err := s.Load()
			if err != nil {
				t.Fatal(err)
			}
			if want := fwPrintenv(t, cfg); !got.Equal(want) {
				t.Fatalf("round %d: otad reads\n%s\nfw_printenv\n%s", i, got, want)
			}
			if v, _ := got.Get("note"); v != "with spaces "+fmt.Sprint(i) {
				t.Fatalf("note = %q", v)
			}
			// And otad writes on top of what fw_setenv wrote, alternating.
			if err := Update(s, func(e *Env) error { e.Set("otad_round", fmt.Sprint(i)); return nil }); err != nil {
				t.Fatal(err)
			}
			if v := strings.TrimSpace(run(t, "fw_printenv", "-c", cfg, "-n", "otad_round")); v != fmt.Sprint(i) {
				t.Fatalf("fw_printenv after otad save: otad_round=%q", v)
			}
		}
	})
}

func TestMkenvimageImagesLoad(t *testing.T) {
	vars := []string{"bootcmd=run distro_bootcmd", "bootdelay=2", "empty_looking= ", "eq=a=b=c"}
	want := envOf("bootcmd", "run distro_bootcmd", "bootdelay", "2", "empty_looking", " ", "eq", "a=b=c")
	for _, redundant := range []bool{false, true} {
		t.Run(fmt.Sprintf("redundant=%v", redundant), func(t *testing.T) {
			img := mkenvimage(t, interopSize, redundant, vars...)
			if redundant {
				// A factory image usually has only copy 0; copy 1 is erased.
				img = append(img, make([]byte, interopSize)...)
				if img[4] != 1 {
					t.Fatalf("mkenvimage -r flag = %d, want 1", img[4])
				}
			}
			p := filepath.Join(t.TempDir(), "env.img")
			if err := os.WriteFile(p, img, 0o644); err != nil {
				t.Fatal(err)
			}
			s := openStore(t, configFor(t, p, redundant))
			got, err := s.Load()
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(want) {
				t.Fatalf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// TestSaveWritesOnlyTheOtherCopy checks the byte-level protocol on a file:
// one Save touches only the out-of-date copy and bumps its flag by one.
func TestSaveWritesOnlyTheOtherCopy(t *testing.T) {
	img := seed(t, true, "a=1")
	img[interopSize+4] = 7 // copy 1: same data, flag 7 (CRC excludes the flag)
	p := filepath.Join(t.TempDir(), "env.img")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, configFor(t, p, true))
	if err := s.Save(envOf("a", "2")); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(p)
	if string(after[interopSize:]) != string(img[interopSize:]) {
		t.Fatal("Save rewrote the current copy 1")
	}
	if after[4] != 8 {
		t.Fatalf("new copy flag = %d, want 8", after[4])
	}
	if e := fwPrintenv(t, configFor(t, p, true)); !e.Equal(envOf("a", "2")) {
		t.Fatalf("fw_printenv: %s", e)
	}
}
