package logging

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestJournalFormatHasNoTimestamp(t *testing.T) {
	var buf bytes.Buffer
	env := map[string]string{"JOURNAL_STREAM": "8:1234"}
	l := NewText(&buf, func(k string) string { return env[k] }, logrus.InfoLevel)
	Component(l, "engine").WithField("slot", "B").Info("armed")
	out := buf.String()
	if strings.Contains(out, "time=") {
		t.Fatalf("journald output carries a timestamp: %q", out)
	}
	for _, want := range []string{"component=engine", "slot=B", "msg=armed"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output %q lacks %q", out, want)
		}
	}
}

func TestTerminalFormatHasTimestamp(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, func(string) string { return "" }, logrus.InfoLevel)
	l.Info("hello")
	if !strings.Contains(buf.String(), "time=") {
		t.Fatalf("terminal output lacks a timestamp: %q", buf.String())
	}
}
