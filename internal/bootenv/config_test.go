package bootenv

import (
	"errors"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig(strings.NewReader(`# MTD device name	Device offset	Env. size	Flash sector size	Number of sectors
/dev/mtd1		0x0000		0x4000		0x4000
  # indented comments are lines with too few fields
/dev/mtd2  010  4000 0x20000 2 trailing words ignored

/dev/mtd3 0 0x4000
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Device{
		{Path: "/dev/mtd1", Offset: 0, EnvSize: 0x4000, SectorSize: 0x4000},
		// offset is C syntax (010 = 8), sizes are always hex (4000 = 0x4000)
		{Path: "/dev/mtd2", Offset: 8, EnvSize: 0x4000, SectorSize: 0x20000, SectorCount: 2},
	}
	if len(c.Devices) != 2 || c.Devices[0] != want[0] || c.Devices[1] != want[1] {
		t.Fatalf("got %+v", c.Devices)
	}
	if !c.Redundant() {
		t.Fatal("two lines must be redundant")
	}
	c, err = ParseConfig(strings.NewReader("/dev/mmcblk0 -0x2000 0x2000\n"))
	if err != nil || c.Devices[0].Offset != -0x2000 || c.Redundant() {
		t.Fatalf("negative offset: %+v %v", c, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for name, text := range map[string]string{
		"empty":        "# nothing\n\n",
		"zero size":    "/dev/mtd0 0 0\n",
		"size differs": "/dev/mtd0 0 0x4000\n/dev/mtd0 0x4000 0x2000\n",
		"no size":      "/dev/mtd0 0\n",
	} {
		if _, err := ParseConfig(strings.NewReader(text)); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", name, err)
		}
	}
}

func TestParseScript(t *testing.T) {
	as, err := ParseScript(strings.NewReader("# comment\n\nbootcmd run  a; run b\nkey=va lue\ngone\nsp   \tx y\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Assignment{{"bootcmd", "run  a; run b"}, {"key", "va lue"}, {"gone", ""}, {"sp", "x y"}}
	if len(as) != len(want) {
		t.Fatalf("got %q", as)
	}
	for i := range want {
		if as[i] != want[i] {
			t.Fatalf("line %d: got %q want %q", i, as[i], want[i])
		}
	}
	e := envOf("gone", "1", "keep", "1")
	Apply(e, as)
	if _, ok := e.Get("gone"); ok {
		t.Fatal("a name alone must delete")
	}
	if _, err := ParseScript(strings.NewReader("=x\n")); err == nil {
		t.Fatal("a line without a name must be an error")
	}
}

func TestParseDefaults(t *testing.T) {
	e, err := ParseDefaults(strings.NewReader("# defaults\n\nbootcmd=run a=b\r\nempty=\nx=1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !e.Equal(envOf("bootcmd", "run a=b", "x", "1")) {
		t.Fatalf("got %s", e)
	}
	if _, err := ParseDefaults(strings.NewReader("a=1\nno value here\n")); !errors.Is(err, ErrBadName) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("line without '=': %v", err)
	}
}
