package fetch

import (
	"math/rand/v2"
	"regexp"
	"testing"
)

// RedactText is a hand scanner so the device binary does not link regexp;
// it must find exactly the URLs this expression finds.
var urlInTextRE = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>` + "`" + `]+`)

func TestRedactTextMatchesRegexp(t *testing.T) {
	alphabet := []string{"h", "t", "p", "s", "1", "+", ".", "-", "://", ":", "/", "@", "?", "#", "=", " ", "\t", "\n", "\"", "'", "<", ">", "`", "u:pw@", "?token=x", "é", "\v"}
	r := rand.New(rand.NewPCG(1, 2))
	fixed := []string{
		"", "no url", "get https://u:pw@h:8/p?q=1 failed", "1abc://x/y?z", "http:// x", "://x",
		"a http://h/a\"b?c", "x ftp://a/b?c https://d/e#f", "http://a/http://b?c", "é://x?y", "ht\tp://x?y",
	}
	for i := 0; i < 20000; i++ {
		var s string
		if i < len(fixed) {
			s = fixed[i]
		} else {
			for n := r.IntN(12); n > 0; n-- {
				s += alphabet[r.IntN(len(alphabet))]
			}
		}
		want := urlInTextRE.ReplaceAllStringFunc(s, RedactURL)
		if got := RedactText(s); got != want {
			t.Fatalf("RedactText(%q) = %q, regexp gives %q", s, got, want)
		}
	}
}
