package logging

import (
	"log/slog"

	"github.com/sirupsen/logrus"
)

// KV passes key/value log lines — the engine's Logger shape
// (update.Logger) — to a logrus entry. A key "error" holding an error
// becomes logrus' error field.
type KV struct{ Entry *logrus.Entry }

// Log logs msg at level with the key/value pairs kv; a trailing key
// without a value is dropped.
func (a KV) Log(level slog.Level, msg string, kv ...any) {
	f := make(logrus.Fields, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			continue
		}
		f[k] = kv[i+1]
	}
	a.Entry.WithFields(f).Log(logrusLevel(level), msg)
}

func logrusLevel(l slog.Level) logrus.Level {
	switch {
	case l >= slog.LevelError:
		return logrus.ErrorLevel
	case l >= slog.LevelWarn:
		return logrus.WarnLevel
	case l >= slog.LevelInfo:
		return logrus.InfoLevel
	}
	return logrus.DebugLevel
}
