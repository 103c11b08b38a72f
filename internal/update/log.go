package update

import (
	"log/slog"
	"net/url"
	"strings"
)

// Logger receives the engine's log lines. kv holds key/value pairs: the
// Key* constants below, and for key events KeyEvent with one of the Event*
// values, which the daemon's journald output turns into a MESSAGE_ID. The
// engine logs each error once, where it is handled. Implementations must
// be safe for concurrent use.
type Logger interface {
	Log(level slog.Level, msg string, kv ...any)
}

// Keys of the engine's log fields (journald: OTAD_TX, OTAD_SLOT, ...).
const (
	KeyEvent   = "event"
	KeyTx      = "tx"
	KeySlot    = "slot"
	KeyVersion = "version"
	KeyPhase   = "phase"
	KeyError   = "error"
	KeyReason  = "reason"
)

// Key events, logged with KeyEvent. Fleet log collectors count installs,
// commits and rollbacks by them (systemd/otad.catalog explains each).
const (
	EventInstallStarted = "install-started"
	EventSlotArmed      = "slot-armed" // written, verified and armed for the next boot
	EventCommitted      = "committed"
	EventRolledBack     = "rolled-back"
	EventInstallFailed  = "install-failed"
	EventFloorRaised    = "floor-raised"
)

type discardLogger struct{}

func (discardLogger) Log(slog.Level, string, ...any) {}

// elog is the engine's logging helper: fixed fields plus the current
// operation as KeyPhase.
type elog struct {
	e  *Engine
	kv []any
}

func (e *Engine) logger(kv ...any) elog { return elog{e: e, kv: kv} }

func (l elog) with(kv ...any) elog {
	return elog{e: l.e, kv: append(l.kv[:len(l.kv):len(l.kv)], kv...)}
}

func (l elog) withErr(err error) elog { return l.with(KeyError, err) }

func (l elog) log(level slog.Level, msg string) {
	kv := l.kv
	if !hasKey(kv, KeyPhase) {
		l.e.mu.Lock()
		op := l.e.status.Operation
		l.e.mu.Unlock()
		kv = append(kv[:len(kv):len(kv)], KeyPhase, op)
	}
	l.e.cfg.Log.Log(level, msg, kv...)
}

func (l elog) info(msg string)  { l.log(slog.LevelInfo, msg) }
func (l elog) warn(msg string)  { l.log(slog.LevelWarn, msg) }
func (l elog) error(msg string) { l.log(slog.LevelError, msg) }

func hasKey(kv []any, key string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == key {
			return true
		}
	}
	return false
}

// redactSource keeps credentials out of log lines: a URL's userinfo and
// query string are dropped.
func redactSource(src string) string {
	if !strings.Contains(src, "://") {
		return src
	}
	u, err := url.Parse(src)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment = nil, "", false, ""
	return u.String()
}
