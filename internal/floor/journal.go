package floor

import (
	"fmt"

	"github.com/otadev/otad/internal/journal"
)

// JournalBound returns a Store.Lower: the highest security version the
// journal records as committed — the install record while its state is
// committed, and each slot's CommittedSecurityVersion. The engine raises
// the floor before it writes either, so the bound is never above the
// floor, and it survives damage to both floor copies. slots names the
// slots whose records to read (A, B).
func JournalBound(j *journal.Journal, slots ...string) func() (uint64, error) {
	return func() (uint64, error) {
		var v uint64
		rec, err := j.Load()
		if err != nil {
			return 0, fmt.Errorf("install record: %w", err)
		}
		if rec.State == journal.StateCommitted {
			v = rec.Bundle.SecurityVersion
		}
		for _, name := range slots {
			s, err := j.LoadSlot(name)
			if err != nil {
				return 0, fmt.Errorf("slot %s record: %w", name, err)
			}
			v = max(v, s.CommittedSecurityVersion)
		}
		return v, nil
	}
}
