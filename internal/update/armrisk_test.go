package update

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/otadev/otad/internal/bootenv"
	"github.com/otadev/otad/internal/bundle"
)

// armRiskStore is the device's env store on a medium where arming is
// unsafe, as bootenv.DeviceStore reports a single-copy FAT env.
type armRiskStore struct {
	bootenv.Store
	risk error
}

func (s armRiskStore) ArmRisk() error { return s.risk }

// TestInstallRefusedOnUnsafeEnv: with a single-copy env on FAT the install
// is refused before the bundle is opened: no slot byte, no env write, and
// the error carries the store's sentinel and its fix.
func TestInstallRefusedOnUnsafeEnv(t *testing.T) {
	d := newDevice(t)
	img2 := image(2, 1<<20)
	b2 := d.bundleFile("v2.otab", "2.0", 4, img2, bundle.EncodingZstd)
	risk := fmt.Errorf("%w (/boot/uboot.env): set CONFIG_ENV_FAT_FILE_REDUND", bootenv.ErrSingleCopyFAT)
	e := d.engine(func(c *Config) { c.Env = armRiskStore{d.env, risk} })
	d.start(e)
	before := d.slotBytes("B", len(img2))
	envBefore := d.envVar("otad_slot")
	_, err := e.installNow(b2, nil)
	if !errors.Is(err, bootenv.ErrSingleCopyFAT) {
		t.Fatalf("install = %v, want ErrSingleCopyFAT", err)
	}
	if !bytes.Equal(d.slotBytes("B", len(img2)), before) {
		t.Fatal("slot B was written although the install was refused")
	}
	if got := d.envVar("otad_slot"); got != envBefore || d.envVar("upgrade_available") != "0" {
		t.Fatalf("env changed: otad_slot=%s upgrade_available=%s", got, d.envVar("upgrade_available"))
	}

	// With the risk accepted (the store reports none) the same install arms.
	e2 := d.engine(func(c *Config) { c.Env = armRiskStore{d.env, nil} })
	d.start(e2)
	if _, err := e2.installNow(b2, nil); err != nil {
		t.Fatalf("install with the risk accepted: %v", err)
	}
	if d.envVar("otad_slot") != "B" || d.envVar("upgrade_available") != "1" {
		t.Fatalf("not armed: otad_slot=%s", d.envVar("otad_slot"))
	}
}
