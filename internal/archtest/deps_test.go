// Package archtest guards the shape of the module: imports go one way, and
// the leaf packages that touch flash, the boot env and bundles stay free of
// network, D-Bus, systemd and logging code; the engine (update) and the
// health decisions (health) stay free of network, D-Bus and systemd code
// and of a logger package: the wiring hands them small interfaces.
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

// core packages: the engine drives, health decides; both talk to the
// outside world only through interfaces the daemon fills in (fetch,
// sdsys, logging), so they must not reach those adapters either.
var core = []string{
	"github.com/otadev/otad/internal/update",
	"github.com/otadev/otad/internal/health",
}

var coreForbidden = append([]string{
	"github.com/otadev/otad/internal/fetch",
	"github.com/otadev/otad/internal/sdsys",
	"github.com/otadev/otad/internal/dbusapi",
	"github.com/otadev/otad/internal/logging",
}, forbidden...)

var forbidden = []string{
	"net/http",
	"github.com/godbus/dbus",
	"github.com/coreos/go-systemd",
	"github.com/sirupsen/logrus",
}

func TestLeafPackagesImportNoDaemonCode(t *testing.T) {
	for _, pattern := range leaves {
		for _, dep := range violations(t, pattern, forbidden) {
			t.Errorf("%s depends on %s", pattern, dep)
		}
	}
}

// The engine and the health checks import no D-Bus, systemd, net/http or
// logger package, directly or through another package.
func TestEngineAndHealthDependOnInterfacesOnly(t *testing.T) {
	for _, pattern := range core {
		for _, dep := range violations(t, pattern, coreForbidden) {
			t.Errorf("%s depends on %s", pattern, dep)
		}
	}
}

// violations lists the dependencies of pattern (shipped code: go list
// -deps without -test, test files may use httptest or a private bus) that
// are or live under one of bad.
func violations(t *testing.T, pattern string, bad []string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-e", "-deps", "-f", "{{.ImportPath}}", pattern).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "matched no packages") {
			return nil
		}
		t.Fatalf("go list %s: %v\n%s", pattern, err, out)
	}
	var found []string
	for _, dep := range strings.Fields(string(out)) {
		if dep == strings.TrimSuffix(pattern, "/...") {
			continue
		}
		for _, f := range bad {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				found = append(found, dep)
			}
		}
	}
	return found
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
