// Package logging configures logrus once for the daemon. Leaf packages never
// log; they return errors, and the daemon logs each error once where it is
// handled, through an *logrus.Entry carrying a "component" field.
package logging

import (
	"io"

	"github.com/sirupsen/logrus"
)

// New returns the root logger. When journald captures the output
// (JOURNAL_STREAM set), timestamps are dropped — journald adds its own — and
// fields are kept as key=value pairs so `journalctl -o verbose` stays readable.
func New(w io.Writer, getenv func(string) string, level logrus.Level) *logrus.Logger {
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

// Component returns the entry a package of the daemon logs through.
func Component(l *logrus.Logger, name string) *logrus.Entry {
	return l.WithField("component", name)
}
