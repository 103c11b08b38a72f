// Package archtest guards the shape of the module: imports go one way, and
// the leaf packages that touch flash, the boot env and bundles stay free of
// network, D-Bus, systemd and logging code.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

var leaves = []string{
	"github.com/otadev/otad/internal/bootenv/...",
	"github.com/otadev/otad/internal/mtd/...",
	"github.com/otadev/otad/internal/bundle/...",
	"github.com/otadev/otad/internal/delta/...",
	"github.com/otadev/otad/internal/crypt/...",
}

var forbidden = []string{
	"net/http",
	"github.com/godbus/dbus",
	"github.com/coreos/go-systemd",
	"github.com/sirupsen/logrus",
}

func TestLeafPackagesImportNoDaemonCode(t *testing.T) {
	for _, pattern := range leaves {
		// go list -deps without -test: test files may use httptest; shipped code may not.
		out, err := exec.Command("go", "list", "-e", "-deps", "-f", "{{.ImportPath}}", pattern).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "matched no packages") {
				continue
			}
			t.Fatalf("go list %s: %v\n%s", pattern, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if dep == f || strings.HasPrefix(dep, f+"/") {
					t.Errorf("%s depends on %s", pattern, dep)
				}
			}
		}
	}
}

// TestGuardCanFail proves the check above sees a real dependency: the logging
// package does pull in logrus, so the same query must report it.
func TestGuardCanFail(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/otadev/otad/internal/logging").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "github.com/sirupsen/logrus") {
		t.Fatal("go list -deps did not report logrus for internal/logging; the guard would be blind")
	}
}
