package archtest

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// depsList reads scripts/deps.list: package → the commands of it we call.
func depsList(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("../../scripts/deps.list")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmds := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) < 2 {
			t.Errorf("deps.list:%d: %q names no command (use - for none)", n, sc.Text())
			continue
		}
		for _, c := range fields[1:] {
			if c != "-" {
				cmds[filepath.Base(c)] = fields[0]
			}
		}
	}
	return cmds
}

// Every program a Go test or the daemon runs by name must come from a
// package make deps installs, so a fresh machine fails in deps-check, not in
// a test twenty minutes later.
func TestExecutedCommandsAreInDepsList(t *testing.T) {
	listed := depsList(t)
	// Not Debian packages of ours: the toolchain running this test.
	toolchain := map[string]bool{"go": true}
	re := regexp.MustCompile(`(?:exec\.Command(?:Context)?\((?:ctx, )?|exec\.LookPath\()"([^"]+)"`)
	seen := map[string]string{}
	err := filepath.WalkDir("../..", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "demo-work" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			seen[filepath.Base(m[1])] = p
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) < 5 {
		t.Fatalf("found only %d executed commands; the pattern no longer matches the code", len(seen))
	}
	for c, where := range seen {
		if _, ok := listed[c]; !ok && !toolchain[c] {
			t.Errorf("%s runs %q, which no package in scripts/deps.list provides", where, c)
		}
	}
}
