package bundle

import (
	"regexp"
	"testing"
)

// The hand-written patterns agree with the regular expressions they name.
func FuzzPatternsMatchRegexp(f *testing.F) {
	for _, s := range []string{"", "a", "release-2026.key_1", "A", "9abc", "rootfs", "Rootfs", "x y", "\x7f", string(make([]byte, 65)),
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"} {
		f.Add(s)
	}
	pats := []pattern{keyIDRe, hexSHA256, classRe, printable}
	res := make([]*regexp.Regexp, len(pats))
	for i, p := range pats {
		res[i] = regexp.MustCompile(p.desc)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for i, p := range pats {
			if got, want := p.MatchString(s), res[i].MatchString(s); got != want {
				t.Fatalf("%s on %q: %v, regexp says %v", p.desc, s, got, want)
			}
		}
	})
}
