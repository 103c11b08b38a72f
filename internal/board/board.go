// Package board writes a file-backed A/B board into one directory: two
// slots (files, or devices the caller made), a redundant U-Boot env (two
// 16 KiB files and fw_env.config) set to boot slot A, an empty keyring
// directory, the kernel command line file, an optional health-check script
// and a system.conf naming all of it. The demo, the daemon tests and the
// benchmarks (through `otad demo -board-only`) build their board with it.
//
// Nothing outside Dir is written, and nothing in it is removed. Files are
// written plainly (no fsync): a board is a fixture, not device state.
package board

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/bootenv"
)

// Spec describes a board. Zero fields get the defaults named.
type Spec struct {
	Dir        string
	Compatible string // default "otad-demo-board"
	// SlotA and SlotB are the slot devices; "" creates Dir/slot-A.img and
	// Dir/slot-B.img of SlotSize bytes (type file).
	SlotA, SlotB string
	SlotType     string // default "file"
	SlotSize     int64
	BootLimit    int    // default 3
	Reboot       string // "auto" or "manual"; "" leaves otad's default (auto)
	// RebootMarker, if set, makes the reboot command a script appending a
	// line to this file (Dir-relative), which is how a test or the demo sees
	// the daemon's reboot request.
	RebootMarker string
	// HealthMarker, if set, adds the check command check.sh: the first 48
	// bytes of the booted slot must contain it, else the check fails with
	// "application in slot X did not start; slot X is broken (...)".
	HealthMarker string
	CheckTimeout time.Duration // default 10s
	HealthWindow time.Duration // default 30s
}

// Board is a written board.
type Board struct {
	Spec
	// Config is the path of system.conf; EnvConfig of fw_env.config.
	Config, EnvConfig string
}

// Path is name inside the board's directory.
func (b *Board) Path(name string) string { return filepath.Join(b.Dir, name) }

// Write creates the board described by s.
func Write(s Spec) (*Board, error) {
	if s.Compatible == "" {
		s.Compatible = "otad-demo-board"
	}
	if s.SlotType == "" {
		s.SlotType = "file"
	}
	if s.BootLimit == 0 {
		s.BootLimit = 3
	}
	if s.CheckTimeout == 0 {
		s.CheckTimeout = 10 * time.Second
	}
	if s.HealthWindow == 0 {
		s.HealthWindow = 30 * time.Second
	}
	b := &Board{Spec: s, Config: filepath.Join(s.Dir, "system.conf"), EnvConfig: filepath.Join(s.Dir, "fw_env.config")}
	if err := os.MkdirAll(b.Path("keys"), 0o755); err != nil {
		return nil, err
	}
	if err := b.writeSlots(); err != nil {
		return nil, err
	}
	if err := b.writeEnv(); err != nil {
		return nil, err
	}
	if err := b.SetCmdline("A"); err != nil {
		return nil, err
	}
	if err := b.writeScripts(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(b.Config, []byte(b.systemConf()), 0o644); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *Board) writeSlots() error {
	for _, n := range []string{"A", "B"} {
		dev := &b.SlotA
		if n == "B" {
			dev = &b.SlotB
		}
		if *dev != "" {
			continue
		}
		*dev = b.Path("slot-" + n + ".img")
		f, err := os.Create(*dev)
		if err != nil {
			return err
		}
		err = f.Truncate(b.SlotSize)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	// The health check finds the booted slot's device here.
	return os.WriteFile(b.Path("devices"), fmt.Appendf(nil, "slotA=%s\nslotB=%s\n", b.SlotA, b.SlotB), 0o644)
}

// writeEnv makes the redundant env and sets it to boot slot A.
func (b *Board) writeEnv() error {
	for _, n := range []string{"uboot.env", "uboot-redund.env"} {
		if err := os.WriteFile(b.Path(n), make([]byte, 0x4000), 0o644); err != nil {
			return err
		}
	}
	cfg := fmt.Sprintf("# U-Boot env of the board: redundant, two files\n%s 0x0 0x4000\n%s 0x0 0x4000\n",
		b.Path("uboot.env"), b.Path("uboot-redund.env"))
	if err := os.WriteFile(b.EnvConfig, []byte(cfg), 0o644); err != nil {
		return err
	}
	st, err := b.OpenEnv()
	if err != nil {
		return err
	}
	defer st.Close()
	env := bootenv.NewEnv()
	for k, v := range map[string]string{boot.VarSlot: "A", boot.VarPrev: "A", boot.VarUpgrade: "0",
		boot.VarBootCount: "0", boot.VarBootLimit: fmt.Sprint(b.BootLimit), boot.VarAltBootCmd: boot.AltBootCmd} {
		env.Set(k, v)
	}
	return st.Init(env)
}

// OpenEnv opens the board's env store with the lock the daemon takes
// (system.conf's env-lock).
func (b *Board) OpenEnv() (*bootenv.DeviceStore, error) {
	ec, err := bootenv.LoadConfig(b.EnvConfig)
	if err != nil {
		return nil, err
	}
	ec.LockPath = b.Path("fw_env.lock")
	return bootenv.OpenStore(ec)
}

// SetCmdline writes the kernel command line of a boot of slot.
func (b *Board) SetCmdline(slot string) error {
	return os.WriteFile(b.Path("cmdline"), []byte("root=/dev/x otad.slot="+slot+"\n"), 0o644)
}

func (b *Board) writeScripts() error {
	if b.HealthMarker != "" {
		check := fmt.Sprintf(`#!/bin/sh
# Board health check: the application in the booted slot must say %[2]s.
slot=$(sed -n 's/.*otad\.slot=\([AB]\).*/\1/p' %[1]s/cmdline)
dev=$(sed -n "s/^slot$slot=//p" %[1]s/devices)
head=$(head -c 48 "$dev" | tr -cd '[:print:]')
case "$head" in
  *%[2]s*) exit 0 ;;
  *) echo "application in slot $slot did not start; slot $slot is broken ($head)"; exit 1 ;;
esac
`, b.Dir, b.HealthMarker)
		if err := os.WriteFile(b.Path("check.sh"), []byte(check), 0o755); err != nil {
			return err
		}
	}
	if b.RebootMarker != "" {
		reboot := fmt.Sprintf("#!/bin/sh\n# Board reboot command: leaves a marker the board driver watches.\ndate -u +%%FT%%TZ >> %s\n", b.Path(b.RebootMarker))
		if err := os.WriteFile(b.Path("reboot.sh"), []byte(reboot), 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (b *Board) systemConf() string {
	c := fmt.Sprintf(`# otad system.conf of a file-backed board (see docs/configuration.md)
[system]
compatible = %[2]s
data-dir = %[1]s/data
env-config = %[1]s/fw_env.config
env-lock = %[1]s/fw_env.lock
bootlimit = %[3]d
cmdline = %[1]s/cmdline
`, b.Dir, b.Compatible, b.BootLimit)
	if b.Reboot != "" {
		c += "reboot = " + b.Reboot + "\n"
	}
	if b.RebootMarker != "" {
		c += fmt.Sprintf("reboot-command = /bin/sh %s/reboot.sh\n", b.Dir)
	}
	c += fmt.Sprintf(`
[keyring]
directory = %[1]s/keys

[slot.rootfs.0]
name = A
device = %[2]s
type = %[4]s

[slot.rootfs.1]
name = B
device = %[3]s
type = %[4]s

[health]
target =
`, b.Dir, b.SlotA, b.SlotB, b.SlotType)
	if b.HealthMarker != "" {
		c += fmt.Sprintf("check = /bin/sh %s/check.sh\ncheck-timeout = %s\ntimeout = %s\n", b.Dir, b.CheckTimeout, b.HealthWindow)
	}
	return c + "watchdog = none\n"
}
