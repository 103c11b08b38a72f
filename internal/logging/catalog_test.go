package logging

import (
	"os"
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
