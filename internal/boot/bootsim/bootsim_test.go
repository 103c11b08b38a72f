package bootsim

import (
	"testing"

	"github.com/otadev/otad/internal/bootenv"
)

func TestStepCountsInHexAndFallsBack(t *testing.T) {
	e := bootenv.NewEnv()
	for k, v := range map[string]string{"otad_slot": "B", "otad_prev": "A", "upgrade_available": "1", "bootcount": "9", "bootlimit": "9"} {
		e.Set(k, v)
	}
	s := bootenv.NewMemStore(e)
	slot, err := Step(s)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := s.Load()
	if bc, _ := got.Get("bootcount"); bc != "0" || slot != "A" {
		// 9+1 = "a" (hex) > 9: the trial is over.
		t.Fatalf("slot %s bootcount %q, want fallback to A", slot, bc)
	}
	if f, _ := got.Get("otad_failed"); f != "B" {
		t.Fatalf("otad_failed = %q", f)
	}
	if _, err := Step(bootenv.NewMemStore(nil)); err == nil {
		t.Fatal("Step on no valid env succeeded")
	}
}
