package logging

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
	_ "unsafe" // go:linkname

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

// journalSocket is go-systemd's journal socket path: it honours no
// environment variable, so the test points it at its own socket.
//
//go:linkname journalSocket github.com/coreos/go-systemd/v22/journal.journalSocket
var journalSocket string

// listenJournal stands in for journald: a real unixgram socket in the
// test's directory, with go-systemd's journal.Send pointed at it.
func listenJournal(t *testing.T) *net.UnixConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "journal.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	old := journalSocket
	journalSocket = sock
	t.Cleanup(func() { journalSocket = old })
	return c
}

// readRecord reads one datagram of journald's native protocol: KEY=VALUE
// lines, or KEY\n + 64-bit little-endian length + value + \n.
func readRecord(t *testing.T, c *net.UnixConn) map[string]string {
	t.Helper()
	buf := make([]byte, 1<<16)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no journal record: %v", err)
	}
	rec := map[string]string{}
	b := buf[:n]
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			t.Fatalf("record ends without newline: %q", b)
		}
		line := string(b[:nl])
		b = b[nl+1:]
		if k, v, ok := strings.Cut(line, "="); ok {
			rec[k] = v
			continue
		}
		if len(b) < 8 {
			t.Fatalf("binary field %s without length", line)
		}
		size := binary.LittleEndian.Uint64(b[:8])
		if uint64(len(b)) < 8+size+1 {
			t.Fatalf("binary field %s truncated", line)
		}
		rec[line] = string(b[8 : 8+size])
		b = b[8+size+1:]
	}
	return rec
}

// Through the engine's Logger shape and go-systemd's real journal.Send: an
// error line arrives with PRIORITY=3, the event's MESSAGE_ID, and the
// fields as OTAD_*; an info line with PRIORITY=6 and no MESSAGE_ID.
func TestJournalRecordsOverARealSocket(t *testing.T) {
	c := listenJournal(t)
	l := NewJournal(logrus.DebugLevel, journal.Send)
	log := KV{Entry: Component(l, "update")}

	log.Log(slog.LevelError, "update rolled back", "tx", "7f3a", "slot", "B", "version", "2.0",
		"phase", "rolling-back", "event", "rolled-back", "reason", "health check failed:\nunit app.service")
	rec := readRecord(t, c)
	want := map[string]string{
		"PRIORITY": "3", "MESSAGE": "update rolled back", "MESSAGE_ID": MessageIDs["rolled-back"],
		"OTAD_TX": "7f3a", "OTAD_SLOT": "B", "OTAD_VERSION": "2.0", "OTAD_PHASE": "rolling-back",
		"OTAD_EVENT": "rolled-back", "OTAD_COMPONENT": "update", "SYSLOG_IDENTIFIER": "otad",
		"OTAD_REASON": "health check failed:\nunit app.service", // multi-line: the binary form
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %q, want %q (record %q)", k, rec[k], v, rec)
		}
	}

	log.Log(slog.LevelInfo, "install started", "tx", "7f3b", "error", errors.New("x"))
	rec = readRecord(t, c)
	if rec["PRIORITY"] != "6" || rec["MESSAGE_ID"] != "" || rec["OTAD_ERROR"] != "x" || rec["OTAD_TX"] != "7f3b" {
		t.Errorf("info record %q", rec)
	}
	log.Log(slog.LevelWarn, "w")
	if rec = readRecord(t, c); rec["PRIORITY"] != "4" {
		t.Errorf("warning record %q", rec)
	}
	log.Log(slog.LevelDebug, "d")
	if rec = readRecord(t, c); rec["PRIORITY"] != "7" {
		t.Errorf("debug record %q", rec)
	}
}

// Every key event has its own well-formed MESSAGE_ID, and the catalog
// explains each one.
func TestMessageIDsAndCatalog(t *testing.T) {
	cat := readCatalog(t)
	seen := map[string]string{}
	for ev, id := range MessageIDs {
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Errorf("%s: MESSAGE_ID %q is not 128-bit lower-case hex", ev, id)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("%s and %s share MESSAGE_ID %s", ev, other, id)
		}
		seen[id] = ev
		if !strings.Contains(cat, "-- "+id+"\n") {
			t.Errorf("catalog has no entry for %s (%s)", ev, id)
		}
	}
	if n := strings.Count(cat, "\n-- "); n != len(MessageIDs) {
		t.Errorf("catalog has %d entries, %d events", n, len(MessageIDs))
	}
}

// Without the journal the lines are text (stderr in the daemon).
func TestTextWithoutJournal(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, func(string) string { return "" }, logrus.InfoLevel)
	KV{Entry: l.WithField("component", "update")}.Log(slog.LevelError, "install failed", "tx", "1", "event", "install-failed")
	out := buf.String()
	for _, w := range []string{"level=error", "install failed", "tx=1", "event=install-failed"} {
		if !strings.Contains(out, w) {
			t.Errorf("text line %q lacks %q", out, w)
		}
	}
}
