package boot_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// scriptPath is the one boot script the layer, these tests and the VM use.
var scriptPath = filepath.Join("..", "..", "yocto", "meta-otad", "recipes-bsp", "otad-boot-script", "files", "boot.cmd")

func readScript(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(scriptPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// hush runs the subset of U-Boot's hush shell and commands boot.cmd uses:
// if/then/else/fi, &&, test (= != -z -n), itest -gt (hex), setenv, setexpr
// (+, hex), saveenv, echo, load, run, booti/bootz and reset. Anything else
// fails the test, so the script cannot silently grow beyond what is checked.
type hush struct {
	t      *testing.T
	env    map[string]string // U-Boot's live environment
	saved  map[string]string // what the last saveenv persisted
	saves  int
	files  map[string]bool // "part:/boot/name" that load finds
	booted string          // "booti <args>" once a kernel is started
	reset  bool
	out    []string
}

func newHush(t *testing.T, env map[string]string) *hush {
	h := &hush{t: t, env: map[string]string{}, files: map[string]bool{}}
	for k, v := range env {
		h.env[k] = v
	}
	h.saved = copyMap(h.env)
	return h
}

func copyMap(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (h *hush) stopped() bool { return h.booted != "" || h.reset }

// lines strips comments and blank lines and splits on ';' outside quotes.
func (h *hush) lines(src string) []string {
	var out []string
	for _, l := range strings.Split(src, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		var cur strings.Builder
		inq := false
		for _, r := range l {
			switch {
			case r == '"':
				inq = !inq
				cur.WriteRune(r)
			case r == ';' && !inq:
				if s := strings.TrimSpace(cur.String()); s != "" {
					out = append(out, s)
				}
				cur.Reset()
			default:
				cur.WriteRune(r)
			}
		}
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (h *hush) run(src string) { h.block(h.lines(src)) }

// block executes statements; if-blocks nest.
func (h *hush) block(st []string) {
	for i := 0; i < len(st) && !h.stopped(); i++ {
		s := st[i]
		if !strings.HasPrefix(s, "if ") {
			h.command(s)
			continue
		}
		if i+1 >= len(st) || st[i+1] != "then" {
			h.t.Fatalf("hush: %q not followed by then", s)
		}
		var thenPart, elsePart []string
		depth, inElse, j := 0, false, i+2
		for ; j < len(st); j++ {
			w := st[j]
			switch {
			case strings.HasPrefix(w, "if "):
				depth++
			case w == "fi" && depth == 0:
				goto done
			case w == "fi":
				depth--
			case w == "else" && depth == 0:
				inElse = true
				continue
			}
			if inElse {
				elsePart = append(elsePart, w)
			} else {
				thenPart = append(thenPart, w)
			}
		}
		h.t.Fatalf("hush: %q without fi", s)
	done:
		if h.cond(strings.TrimPrefix(s, "if ")) {
			h.block(thenPart)
		} else {
			h.block(elsePart)
		}
		i = j
	}
}

func (h *hush) cond(c string) bool {
	for _, part := range strings.Split(c, "&&") {
		if !h.command(strings.TrimSpace(part)) {
			return false
		}
	}
	return true
}

// words expands ${var} and splits on blanks; quotes group.
func (h *hush) words(s string) []string {
	var out []string
	var cur strings.Builder
	inq, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			inq, have = !inq, true
		case c == '$' && i+1 < len(s) && s[i+1] == '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				h.t.Fatalf("hush: unterminated ${ in %q", s)
			}
			v := h.env[s[i+2:i+end]]
			cur.WriteString(v)
			// An empty unquoted expansion is no word at all, as in sh.
			have = have || inq || v != ""
			i += end
		case (c == ' ' || c == '\t') && !inq:
			if have || cur.Len() > 0 {
				out = append(out, cur.String())
			}
			cur.Reset()
			have = false
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have || cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

func hexArg(s string) uint64 {
	n, _ := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64)
	return n
}

// command runs one simple command and returns its success.
func (h *hush) command(s string) bool {
	w := h.words(s)
	if len(w) == 0 {
		return true
	}
	switch w[0] {
	case "test":
		switch {
		case len(w) == 3 && w[1] == "-z":
			return w[2] == ""
		case len(w) == 3 && w[1] == "-n":
			return w[2] != ""
		case len(w) == 4 && w[2] == "=":
			return w[1] == w[3]
		case len(w) == 4 && w[2] == "!=":
			return w[1] != w[3]
		}
	case "itest":
		if len(w) == 4 && w[2] == "-gt" {
			return hexArg(w[1]) > hexArg(w[3])
		}
	case "setenv":
		if len(w) == 2 {
			delete(h.env, w[1])
			return true
		}
		if len(w) >= 3 {
			h.env[w[1]] = strings.Join(w[2:], " ")
			return true
		}
	case "setexpr":
		if len(w) == 5 && w[3] == "+" {
			h.env[w[1]] = strconv.FormatUint(hexArg(w[2])+hexArg(w[4]), 16)
			return true
		}
	case "saveenv":
		h.saves++
		h.saved = copyMap(h.env)
		return true
	case "echo":
		h.out = append(h.out, strings.Join(w[1:], " "))
		return true
	case "load":
		if len(w) == 5 {
			_, part, _ := strings.Cut(w[2], ":") // devnum:part
			if h.files[part+":"+w[4]] {
				h.env["filesize"] = "1234"
				return true
			}
			return false
		}
	case "run":
		if len(w) == 2 {
			h.run(h.env[w[1]])
			return true
		}
	case "booti", "bootz":
		h.booted = strings.Join(w, " ")
		return true
	case "reset":
		h.reset = true
		return true
	}
	h.t.Fatalf("hush: unsupported command %q (words %q)", s, w)
	return false
}

func TestHushInterpreterCanFail(t *testing.T) {
	h := newHush(t, map[string]string{"x": "1"})
	h.run("if test \"${x}\" = \"1\" && test -n \"${y}\"; then\nsetenv r yes\nelse\nsetenv r no\nfi\nsetexpr c 9 + 1")
	if h.env["r"] != "no" || h.env["c"] != "a" {
		t.Fatalf("interpreter wrong: r=%q c=%q", h.env["r"], h.env["c"])
	}
}
