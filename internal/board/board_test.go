package board

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/config"
)

// A written board is one otad accepts: its system.conf loads, its env boots
// slot A, and its health check passes only for a slot whose head carries
// the marker, naming the slot otherwise.
func TestWrittenBoardIsUsable(t *testing.T) {
	b, err := Write(Spec{Dir: t.TempDir(), SlotSize: 1 << 20, HealthMarker: "app=ok", RebootMarker: "reboot-requested", Reboot: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(b.Config)
	if err != nil {
		t.Fatalf("system.conf: %v", err)
	}
	if cfg.Compatible != "otad-demo-board" || len(cfg.Slots) != 2 || len(cfg.Health.Checks) != 1 || len(cfg.RebootCommand) == 0 {
		t.Fatalf("config %+v", cfg)
	}
	st, err := b.OpenEnv()
	if err != nil {
		t.Fatal(err)
	}
	env, err := st.Load()
	st.Close()
	slot, _ := env.Get("otad_slot")
	up, _ := env.Get("upgrade_available")
	if slot != "A" || up != "0" {
		t.Fatalf("env %v %v", env, err)
	}
	if fi, err := os.Stat(b.SlotB); err != nil || fi.Size() != 1<<20 {
		t.Fatalf("slot B: %v %v", fi, err)
	}
	check := func() (string, error) {
		out, err := exec.Command("/bin/sh", b.Path("check.sh")).CombinedOutput()
		return string(out), err
	}
	if out, err := check(); err == nil || !strings.Contains(out, "slot A is broken") {
		t.Fatalf("check of a blank slot A: %v %q", err, out)
	}
	if err := os.WriteFile(b.SlotA, []byte("rootfs 2.0 app=ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := check(); err != nil {
		t.Fatalf("check of a good slot A: %v %q", err, out)
	}
}
