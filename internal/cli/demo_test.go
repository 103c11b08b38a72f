package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDemoRunsUpdateAndRollback(t *testing.T) {
	work := filepath.Join(t.TempDir(), "demo-work")
	var out, errb bytes.Buffer
	e := &Env{Prog: "otad", Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}
	if err := cmdDemo(context.Background(), e, []string{"-dir", work, "-slot-size", "16M"}); err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errb.String())
	}
	s := out.String()
	for _, want := range []string{
		"installed 2.0 into slot B",
		"boots slot B (trial boot 1 of 3)",
		"slot B confirmed and committed",
		"ROLLED BACK slot A",
		"application in slot A did not start",
		"back on slot B, release 2.0",
		"anti-rollback floor 2",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	// Everything it made is inside the work dir; it recreates it on rerun.
	entries, err := os.ReadDir(filepath.Dir(work))
	if err != nil || len(entries) != 1 {
		t.Fatalf("demo left %v next to its work dir (%v)", entries, err)
	}
	if err := cmdDemo(context.Background(), &Env{Prog: "otad", Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}},
		[]string{"-dir", work, "-slot-size", "16M"}); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if err := cmdDemo(context.Background(), e, []string{"-dir", "/"}); err == nil {
		t.Fatal("demo accepted / as its work dir")
	}
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "precious"), []byte("x"), 0o644)
	if err := cmdDemo(context.Background(), e, []string{"-dir", foreign}); err == nil {
		t.Fatal("demo would remove a directory it did not make")
	}
	if _, err := os.Stat(filepath.Join(foreign, "precious")); err != nil {
		t.Fatal("demo removed a foreign file")
	}
}
