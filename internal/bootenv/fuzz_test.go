package bootenv

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzDecode: any bytes either fail the CRC/parse or decode to an Env that
// encodes back to an image decoding to the same Env. Never a panic.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.bin"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b[:min(len(b), 0x100)])
		}
	}
	good, _ := encode(envOf("a", "1", "b", "x=y"), 64, true, 3)
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, red := range []bool{false, true} {
			st := decode(b, red)
			if !st.valid {
				continue
			}
			again, err := encode(st.env, len(b), red, st.flag)
			if err != nil {
				t.Fatalf("valid image does not re-encode: %v", err)
			}
			st2 := decode(again, red)
			if !st2.valid || !st2.env.Equal(st.env) || st2.flag != st.flag {
				t.Fatalf("round trip changed the environment")
			}
		}
		// pick never panics and picks a valid copy.
		half := len(b) / 2
		cs := []copyState{decode(b[:half], true), decode(b[half:], true)}
		for _, sc := range []FlagScheme{FlagsIncrement, FlagsBoolean} {
			if i, err := pick(cs, sc); err == nil && !cs[i].valid {
				t.Fatal("picked an invalid copy")
			}
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add("/dev/mtd1 0x0 0x4000 0x4000\n/dev/mtd2 0x0 0x4000 0x4000\n")
	f.Add("# c\n/dev/mmcblk0boot1 -0x2000 2000\n")
	f.Add("x 0x 0x\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConfig(strings.NewReader(s))
		if err != nil {
			return
		}
		if n := len(c.Devices); n < 1 || n > 2 {
			t.Fatalf("%d devices", n)
		}
		for _, d := range c.Devices {
			if d.EnvSize <= 0 || d.Path == "" || d.EnvSize != c.Devices[0].EnvSize {
				t.Fatalf("accepted bad device %+v", d)
			}
		}
	})
}

func FuzzParseScript(f *testing.F) {
	f.Add("# c\nname value with spaces\nkey=v\nalone\n")
	f.Fuzz(func(t *testing.T, s string) {
		as, err := ParseScript(strings.NewReader(s))
		if err != nil {
			return
		}
		e := NewEnv()
		Apply(e, as)
		for _, n := range e.Names() {
			v, _ := e.Get(n)
			if !ValidName(n) || strings.IndexByte(v, 0) >= 0 {
				t.Fatalf("script produced invalid variable %q", n)
			}
		}
		if _, err := encode(e, 1<<20, true, 1); err != nil && !bytes.Contains([]byte(err.Error()), []byte("larger")) {
			t.Fatalf("script result does not encode: %v", err)
		}
	})
}
