package boot_test

import (
	"errors"
	"testing"

	"github.com/otadev/otad/internal/boot"
	"github.com/otadev/otad/internal/bootenv"
)

// riskyStore is a MemStore whose medium makes arming unsafe, as a
// bootenv.DeviceStore on a single-copy FAT env reports it.
type riskyStore struct {
	*bootenv.MemStore
	risk error
}

func (r riskyStore) ArmRisk() error { return r.risk }

func TestArmRefusedWhenTheStoreSaysItIsUnsafe(t *testing.T) {
	mem := committedOn("A")
	risk := errors.New("single copy on FAT")
	p := &boot.Protocol{Store: riskyStore{mem, risk}}
	if err := p.ArmRisk(); !errors.Is(err, risk) {
		t.Fatalf("ArmRisk = %v, want the store's", err)
	}
	if err := p.Arm("B", "A"); !errors.Is(err, risk) {
		t.Fatalf("Arm = %v, want the store's risk", err)
	}
	mustWrites(t, mem, 0, "refused Arm")
	// Commit and Disarm still work: the device must be able to settle.
	if err := p.Disarm("A"); err != nil {
		t.Fatal(err)
	}

	ok := &boot.Protocol{Store: riskyStore{mem, nil}}
	if err := ok.Arm("B", "A"); err != nil {
		t.Fatalf("Arm with an accepted risk: %v", err)
	}
	mustWrites(t, mem, 1, "Arm")
}
