// Package logging configures logrus once for the daemon and carries its
// lines to where an operator reads them. Leaf packages never log; they
// return errors, and the daemon logs each error once where it is handled.
//
// Under systemd with the journal reachable (JOURNAL_STREAM set and
// /run/systemd/journal/socket answering) every line goes to journald
// natively through go-systemd/journal: PRIORITY from the level, each field
// as OTAD_<KEY> (OTAD_TX, OTAD_SLOT, OTAD_VERSION, OTAD_PHASE, ...), and a
// fixed MESSAGE_ID for each key event, explained in systemd/otad.catalog.
// Everywhere else (CLI, tests, no journal socket) lines are text on stderr.
// Nothing here is stored on disk by otad itself.
package logging

import (
	"io"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

// New returns the root logger: native journald under systemd, else text on w.
func New(w io.Writer, getenv func(string) string, level logrus.Level) *logrus.Logger {
	if getenv("JOURNAL_STREAM") != "" && journal.Enabled() {
		return NewJournal(level, journal.Send)
	}
	return NewText(w, getenv, level)
}

// NewText logs text lines to w. When journald captures the output anyway
// (JOURNAL_STREAM set, its native socket not reachable), timestamps are
// dropped — journald adds its own.
func NewText(w io.Writer, getenv func(string) string, level logrus.Level) *logrus.Logger {
	l := logrus.New()
	l.SetOutput(w)
	l.SetLevel(level)
	if getenv("JOURNAL_STREAM") != "" {
		l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableColors: true, DisableQuote: false})
	} else {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	}
	return l
}

// NewJournal logs natively to journald through send (journal.Send in
// production; go-systemd's signature).
func NewJournal(level logrus.Level, send func(msg string, p journal.Priority, vars map[string]string) error) *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetFormatter(discardFormatter{})
	l.SetLevel(level)
	l.AddHook(&journalHook{send: send})
	return l
}

// Component returns the entry a package of the daemon logs through.
func Component(l *logrus.Logger, name string) *logrus.Entry {
	return l.WithField("component", name)
}

// discardFormatter skips formatting lines nobody reads (the hook sent them).
type discardFormatter struct{}

func (discardFormatter) Format(*logrus.Entry) ([]byte, error) { return nil, nil }
