package logging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// catalogPath is the catalog an image installs to /usr/lib/systemd/catalog/.
const catalogPath = "../../systemd/otad.catalog"

func readCatalog(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	return "\n" + string(b)
}

// journalctl itself compiles the catalog and lists every MESSAGE_ID with
// its subject (what `journalctl -x` shows next to the event).
func TestCatalogCompilesInJournalctl(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "usr/lib/systemd/catalog")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "var/lib/systemd/catalog"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(catalogPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "otad.catalog"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("journalctl", "--root="+root, "--update-catalog").CombinedOutput(); err != nil {
		t.Fatalf("journalctl --update-catalog: %v\n%s", err, out)
	}
	out, err := exec.Command("journalctl", "--root="+root, "--list-catalog").CombinedOutput()
	if err != nil {
		t.Fatalf("journalctl --list-catalog: %v\n%s", err, out)
	}
	for ev, id := range MessageIDs {
		if !strings.Contains(string(out), id+" otad: ") {
			t.Errorf("journalctl does not list %s (%s):\n%s", ev, id, out)
		}
	}
}
