package daemon

import (
	"errors"

	"github.com/sirupsen/logrus"

	"github.com/otadev/otad/internal/config"
	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/journal"
)

// checkedFloor completes the engine's floor store: the journal's committed
// security version as its lower bound, and a check at start that logs a
// damaged, missing or stale copy (warning) or no valid copy at all (error:
// every install is refused until an operator runs `otad floor reset`).
// Nothing is written here; the next raise rewrites both copies.
func checkedFloor(log *logrus.Entry, s *floor.Store, j *journal.Journal, cfg *config.Config) *floor.Store {
	names := make([]string, 0, len(cfg.Slots))
	for _, sl := range cfg.Slots {
		names = append(names, sl.Name)
	}
	s.Lower = floor.JournalBound(j, names...)
	h, err := s.Check()
	log = log.WithField("floor_dir", s.Dir)
	for _, d := range h.Damaged {
		log.WithField("copy", d).Warn("anti-rollback floor copy damaged")
	}
	switch {
	case errors.Is(err, floor.ErrNoValidCopy):
		log.WithError(err).Error("anti-rollback floor unreadable")
	case err != nil:
		log.WithError(err).Error("anti-rollback floor")
	case len(h.Damaged) > 0:
		log.WithField("floor", h.Floor).Warn("anti-rollback floor kept from the valid copy and the journal; the next raise rewrites both copies")
	}
	return s
}
