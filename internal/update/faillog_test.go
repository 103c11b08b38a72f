package update

import (
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/otadev/otad/internal/bundle"
)

// kvLog records the engine's log lines with their key/value pairs.
type kvLog struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (l *kvLog) Log(level slog.Level, msg string, kv ...any) {
	m := map[string]any{"level": level, "msg": msg}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	l.mu.Lock()
	l.lines = append(l.lines, m)
	l.mu.Unlock()
}

// TestInstallFailedLogsVersion: an install that fails while writing the
// slot (the bundle ends early) is one error line with the install-failed
// event and every field a journal reader counts by: tx, slot, the bundle's
// version (verified before the write began) and the phase.
func TestInstallFailedLogsVersion(t *testing.T) {
	d := newDevice(t)
	log := &kvLog{}
	e := d.engine(func(c *Config) { c.Log = log })
	d.start(e)
	b := d.bundleFile("cut.otab", "4.2", 1, image(7, 8*chunk), bundle.EncodingRaw)
	st, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(b, st.Size()-3*chunk); err != nil {
		t.Fatal(err)
	}
	tx, err := e.installNow(b, nil)
	if err == nil {
		t.Fatal("a truncated bundle installed")
	}
	var fail map[string]any
	for _, l := range log.lines {
		if l[KeyEvent] == EventInstallFailed {
			fail = l
		}
	}
	if fail == nil || fail["level"] != slog.LevelError {
		t.Fatalf("no install-failed error line: %v", log.lines)
	}
	for k, want := range map[string]any{KeyTx: tx, KeySlot: "B", KeyVersion: "4.2", KeyPhase: string(OpWriting)} {
		if got := fail[k]; got != want {
			t.Errorf("install-failed %s = %v, want %v (line %v)", k, got, want, fail)
		}
	}
}
