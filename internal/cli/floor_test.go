package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/journal"
)

// TestFloorResetAfterDamage: with both copies damaged `otad floor show`
// fails naming the way out; `otad floor reset --to N` writes both copies;
// the journal's committed security version still bounds the floor below.
func TestFloorResetAfterDamage(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "system.conf")
	conf := fmt.Sprintf("[system]\ncompatible = x\ndata-dir = %s\n[slot.rootfs.0]\nname = A\ndevice = /dev/null\n[slot.rootfs.1]\nname = B\ndevice = /dev/null\n", data)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s := floor.New(data)
	if err := s.Raise(6); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"floor.0", "floor.1"} {
		os.WriteFile(filepath.Join(data, c), []byte("damaged"), 0o644)
	}
	out, _, err := otad(t, "", "floor", "show", "-config", cfg)
	if !errors.Is(err, floor.ErrNoValidCopy) || !strings.Contains(err.Error(), "otad floor reset --to N") ||
		!strings.Contains(out, "damaged: floor.0: 7 bytes, want 24") {
		t.Fatalf("show on damaged copies: %q %v", out, err)
	}
	if out, _, err = otad(t, "", "floor", "reset", "-config", cfg, "--to", "6"); err != nil || out != "floor: 6\n" {
		t.Fatalf("reset: %q %v", out, err)
	}
	if out, _, err = otad(t, "", "floor", "show", "-config", cfg); err != nil || out != "floor: 6\njournal: 0\n" {
		t.Fatalf("show after reset: %q %v", out, err)
	}
	// The journal says slot B was committed at 8: a reset to 2 reads 8.
	j := &journal.Journal{FS: journal.OSFS{}, Dir: data}
	if err := j.SaveSlot(&journal.SlotRecord{Name: "B", State: journal.SlotGood, CommittedSecurityVersion: 8}); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := otad(t, "", "floor", "reset", "-config", cfg, "--to", "2")
	if err != nil || out != "floor: 8\n" || !strings.Contains(errOut, "security version 8") {
		t.Fatalf("reset below the journal: %q %q %v", out, errOut, err)
	}
	if _, _, err := otad(t, "", "floor", "reset", "-config", cfg); err == nil {
		t.Fatal("reset without --to accepted")
	}
}
