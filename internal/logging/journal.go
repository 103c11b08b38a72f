package logging

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

// MessageIDs are the journal MESSAGE_IDs of otad's key events, by the
// engine's event name (update.Event*). They never change: fleet log
// collectors count installs, commits and rollbacks by them, and
// systemd/otad.catalog (installed to /usr/lib/systemd/catalog/) explains
// each for `journalctl -x`.
var MessageIDs = map[string]string{
	"install-started": "10f67dd9ecb54f488fc5d0c2255cf6a9",
	"slot-armed":      "e219071c9dd9497f895443a6c4c8f4de",
	"committed":       "5c6ae7e1b59c444ab559ce32a052b4ea",
	"rolled-back":     "7c01158e2d6b44ff9926f10f59af000e",
	"install-failed":  "d6dc8f1d62b74330abc618067ab22714",
	"floor-raised":    "a0ab689daf8041969bdb7314e2fec1e6",
}

// eventKey is the field that names a key event.
const eventKey = "event"

type journalHook struct {
	send func(msg string, p journal.Priority, vars map[string]string) error
}

func (h *journalHook) Levels() []logrus.Level { return logrus.AllLevels }

// Fire sends one entry as one journal record. A failed send goes to stderr
// as text, so a line is never lost silently (journald restarting).
func (h *journalHook) Fire(e *logrus.Entry) error {
	vars := Fields(e.Data)
	vars["SYSLOG_IDENTIFIER"] = "otad"
	if err := h.send(e.Message, Priority(e.Level), vars); err != nil {
		fmt.Fprintf(os.Stderr, "otad: journal: %v: %s %s\n", err, e.Level, e.Message)
	}
	return nil
}

// Priority maps a logrus level to the syslog priority journald records.
func Priority(l logrus.Level) journal.Priority {
	switch l {
	case logrus.PanicLevel:
		return journal.PriEmerg
	case logrus.FatalLevel:
		return journal.PriCrit
	case logrus.ErrorLevel:
		return journal.PriErr
	case logrus.WarnLevel:
		return journal.PriWarning
	case logrus.InfoLevel:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}

// Fields turns logrus fields into journal fields: key k becomes OTAD_K
// (upper case, anything but A-Z 0-9 as '_'), errors their text, and the
// event field also its MESSAGE_ID.
func Fields(data logrus.Fields) map[string]string {
	vars := make(map[string]string, len(data)+2)
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := data[k]
		s := fmt.Sprint(v)
		if err, ok := v.(error); ok {
			s = err.Error()
		}
		vars["OTAD_"+fieldName(k)] = s
		if k == eventKey {
			if id, ok := MessageIDs[s]; ok {
				vars["MESSAGE_ID"] = id
			}
		}
	}
	return vars
}

// fieldName is a valid journal field name for k (A-Z, 0-9, '_').
func fieldName(k string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, k)
}
