package fetch

import (
	"fmt"
	"testing"
	"time"
)

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes 5-5/*", "bytes 10-9/100", "bytes -1-5/10",
		"bytes 0-99/99", "bytes */100", "items 0-1/2", "bytes 9223372036854775807-9223372036854775807/*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cr, err := parseContentRange(s)
		if err != nil {
			return
		}
		if cr.first < 0 || cr.last < cr.first || (cr.total != -1 && cr.last >= cr.total) {
			t.Fatalf("%q accepted as inconsistent %+v", s, cr)
		}
		total := "*"
		if cr.total >= 0 {
			total = fmt.Sprint(cr.total)
		}
		again, err := parseContentRange(fmt.Sprintf("bytes %d-%d/%s", cr.first, cr.last, total))
		if err != nil || again != cr {
			t.Fatalf("%q: canonical form does not round-trip: %+v vs %+v (%v)", s, cr, again, err)
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{"0", "120", "99999999999999999999", "-5", "Sat, 28 Nov 2026 12:01:00 GMT",
		"Fri, 27 Nov 2026 12:00:00 GMT", "soon", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseRetryAfter(s, now)
		if !ok && d != 0 || d < 0 || d > maxRetryAfter {
			t.Fatalf("%q: delay %v ok=%v outside [0, %v]", s, d, ok, maxRetryAfter)
		}
	})
}

func TestParseContentRange(t *testing.T) {
	for s, want := range map[string]contentRange{
		"bytes 0-99/100":  {0, 99, 100},
		"bytes 100-199/*": {100, 199, -1},
		" bytes 7-7/8 ":   {7, 7, 8},
	} {
		if got, err := parseContentRange(s); err != nil || got != want {
			t.Errorf("%q = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"bytes 0-99/99", "bytes 5-4/10", "bytes */100", "bytes +1-2/3", "bytes 1-2", "1-2/3", ""} {
		if _, err := parseContentRange(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for s, want := range map[string]time.Duration{
		"7":                             7 * time.Second,
		"Sat, 28 Nov 2026 12:01:00 GMT": time.Minute,
		"Fri, 27 Nov 2026 12:00:00 GMT": 0,
		"86400":                         maxRetryAfter,
	} {
		if got, ok := parseRetryAfter(s, now); !ok || got != want {
			t.Errorf("%q = %v, %v; want %v", s, got, ok, want)
		}
	}
	if _, ok := parseRetryAfter("soon", now); ok {
		t.Error(`"soon" accepted`)
	}
}
