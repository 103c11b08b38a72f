package channel

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/journal"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func sha(c byte) string { return strings.Repeat(string(c), 64) }

func testDoc() *Document {
	return &Document{Format: Format, Compatible: testCompat, Serial: 3, Created: t0, Expires: t0.Add(24 * time.Hour),
		Releases: []Release{{
			ID: "2.0", Version: "2.0", SecurityVersion: 2, ImageSHA256: sha('b'),
			Bundle:  File{URL: "bundles/full-2.0.otab", Size: 1000, SHA256: sha('c')},
			Deltas:  map[string]File{sha('a'): {URL: "bundles/delta.otab", Size: 100, SHA256: sha('d')}},
			Rollout: []Stage{{Percent: 1, At: t0}, {Percent: 10, At: t0.Add(24 * time.Hour)}, {Percent: 100, At: t0.Add(72 * time.Hour)}},
			State:   StateActive,
		}}}
}

func TestEncodeParseRoundTrip(t *testing.T) {
	b, err := Encode(testDoc())
	must(t, err)
	d, err := Parse(b)
	must(t, err)
	b2, err := Encode(d)
	must(t, err)
	if !bytes.Equal(b, b2) {
		t.Fatalf("encoding not canonical:\n%s\n%s", b, b2)
	}
	if _, err := Parse(append(bytes.Clone(b), "{}"...)); !errors.Is(err, ErrMalformed) {
		t.Errorf("trailing data: %v", err)
	}
	if _, err := Parse(bytes.Replace(b, []byte(`"serial"`), []byte(`"serial2": 1, "serial"`), 1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("unknown field: %v", err)
	}
}

func TestValidateRefuses(t *testing.T) {
	cases := map[string]func(d *Document){
		"format":          func(d *Document) { d.Format = 2 },
		"serial 0":        func(d *Document) { d.Serial = 0 },
		"expires first":   func(d *Document) { d.Expires = d.Created },
		"bad sha":         func(d *Document) { d.Releases[0].ImageSHA256 = "XYZ" },
		"delta key":       func(d *Document) { d.Releases[0].Deltas["nothex"] = File{URL: "x", Size: 1, SHA256: sha('e')} },
		"percent 0":       func(d *Document) { d.Releases[0].Rollout[0].Percent = 0 },
		"percent 3 dec":   func(d *Document) { d.Releases[0].Rollout[0].Percent = 0.125 },
		"percent > 100":   func(d *Document) { d.Releases[0].Rollout[2].Percent = 101 },
		"shrinking stage": func(d *Document) { d.Releases[0].Rollout[1].Percent = 0.5 },
		"stage order":     func(d *Document) { d.Releases[0].Rollout[1].At = t0.Add(-time.Hour) },
		"state":           func(d *Document) { d.Releases[0].State = "on" },
		"paused no time":  func(d *Document) { d.Releases[0].State = StatePaused },
		"min above own":   func(d *Document) { d.Releases[0].MinVersion = "3.0" },
		"window":          func(d *Document) { d.Releases[0].Window = &Window{Start: "25:00", End: "03:00"} },
		"dup id":          func(d *Document) { d.Releases = append(d.Releases, d.Releases[0]) },
		"url space":       func(d *Document) { d.Releases[0].Bundle.URL = "a b" },
		"size 0":          func(d *Document) { d.Releases[0].Bundle.Size = 0 },
	}
	for name, mod := range cases {
		d := testDoc()
		mod(d)
		if err := d.Validate(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"2.0", "1.9", 1}, {"1.10", "1.9", 1}, {"2.0", "2.0.1", -1}, {"2.0", "2.0", 0}, {"", "1.0", -1}, {"1.0-rc1", "1.0-rc2", -1}, {"1.0.1", "1.0.rc1", -1}} {
		if got := CompareVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

func TestPercentPauseHaltWindow(t *testing.T) {
	r := testDoc().Releases[0]
	for _, c := range []struct {
		at   time.Duration
		want int
	}{{-time.Hour, 0}, {0, 100}, {25 * time.Hour, 1000}, {100 * time.Hour, 10000}} {
		if got := r.PercentAt(t0.Add(c.at)); got != c.want {
			t.Errorf("at %v: %d, want %d", c.at, got, c.want)
		}
	}
	r.Pause(t0.Add(time.Hour))
	if got := r.PercentAt(t0.Add(100 * time.Hour)); got != 100 {
		t.Errorf("paused: %d", got)
	}
	r.Resume(t0.Add(11 * time.Hour)) // 10 h paused: the 10 % stage moves to t0+34h
	if got := r.PercentAt(t0.Add(30 * time.Hour)); got != 100 {
		t.Errorf("resumed, before the shifted stage: %d", got)
	}
	if got := r.PercentAt(t0.Add(35 * time.Hour)); got != 1000 {
		t.Errorf("resumed, after the shifted stage: %d", got)
	}
	r.Halt()
	if got := r.PercentAt(t0.Add(100 * time.Hour)); got != 0 {
		t.Errorf("halted: %d", got)
	}
	r.Window = &Window{Start: "23:00", End: "02:30"}
	for _, c := range []struct {
		hhmm string
		in   bool
	}{{"22:59", false}, {"23:00", true}, {"01:00", true}, {"02:30", false}} {
		tm, _ := time.Parse("15:04", c.hhmm)
		if r.InWindow(tm) != c.in {
			t.Errorf("window 23:00-02:30 at %s: want %v", c.hhmm, c.in)
		}
	}
}

func TestDecideRules(t *testing.T) {
	d := testDoc()
	older := d.Releases[0]
	older.ID, older.Version, older.ImageSHA256, older.Deltas = "1.5", "1.5", sha('5'), nil
	older.Rollout = []Stage{{Percent: 100, At: t0}}
	d.Releases = append(d.Releases, older)
	at := t0.Add(time.Hour) // 2.0 at 1 %, 1.5 at 100 %
	var in, out string
	for i := 0; in == "" || out == ""; i++ {
		id := fmt.Sprintf("dev-%d", i)
		if Bucket("2.0", id) < 100 {
			in = id
		} else {
			out = id
		}
	}
	dec := Decide(d, Device{ID: in, Version: "1.0", ImageSHA256: sha('a'), Now: at})
	if dec.Action != Install || dec.Release.ID != "2.0" || !dec.Delta || dec.File.URL != "bundles/delta.otab" || dec.Fallback.URL != "bundles/full-2.0.otab" {
		t.Errorf("in the 1 %%, delta source active: %+v", dec)
	}
	dec = Decide(d, Device{ID: in, Version: "1.0", ImageSHA256: sha('f'), Now: at})
	if dec.Action != Install || dec.Delta || dec.File.URL != "bundles/full-2.0.otab" {
		t.Errorf("in the 1 %%, other image: %+v", dec)
	}
	dec = Decide(d, Device{ID: out, Version: "1.0", Now: at})
	if dec.Action != Install || dec.Release.ID != "1.5" {
		t.Errorf("outside 2.0's 1 %%: want 1.5 at 100 %%, got %+v", dec)
	}
	dec = Decide(d, Device{ID: out, Version: "1.5", Now: at})
	if dec.Action != None || !strings.Contains(dec.Reason, "outside") {
		t.Errorf("on 1.5, outside: %+v", dec)
	}
	dec = Decide(d, Device{ID: in, Version: "1.0", ImageSHA256: sha('b'), Now: at})
	if dec.Action != None || !strings.Contains(dec.Reason, "already in the active slot") {
		t.Errorf("image installed: %+v", dec)
	}
	d.Releases[0].MinVersion = "1.2"
	if dec := Decide(d, Device{ID: out, Version: "1.1", Now: at}); dec.Action != Install || !dec.Forced || dec.Release.ID != "2.0" {
		t.Errorf("below min_version: %+v", dec)
	}
	d.Releases[0].Halt()
	if dec := Decide(d, Device{ID: out, Version: "1.1", Now: at}); dec.Release == nil || dec.Release.ID != "1.5" {
		t.Errorf("halted 2.0 must not be forced: %+v", dec)
	}
	d.Releases[1].Window = &Window{Start: "02:00", End: "04:00"}
	if dec := Decide(d, Device{ID: out, Version: "1.0", Now: at}); dec.Action != Wait {
		t.Errorf("outside the window at 13:00: %+v", dec)
	}
	if dec := Decide(d, Device{ID: out, Version: "1.0", Now: t0.Add(15 * time.Hour)}); dec.Action != Install {
		t.Errorf("inside the window at 03:00: %+v", dec)
	}
	if dec := Decide(d, Device{ID: out, Version: "1.0", Now: t0.Add(15 * time.Hour), Skip: []string{"1.5"}}); dec.Action != None {
		t.Errorf("skipped release: %+v", dec)
	}
}

func TestBucketDistribution(t *testing.T) {
	const n = 100000
	for _, pct := range []int{100, 1000, 5000} {
		c := 0
		for i := 0; i < n; i++ {
			if Bucket("rel-7", fmt.Sprintf("%032x", i)) < pct {
				c++
			}
		}
		if got := float64(c) / n * 100; got < float64(pct)/100-0.5 || got > float64(pct)/100+0.5 {
			t.Errorf("stage %d bp: %.2f %% of %d devices", pct, got, n)
		}
	}
	if Bucket("a", "b") == Bucket("b", "a") && Bucket("a", "bc") == Bucket("ab", "c") {
		t.Error("bucket input not separated")
	}
}

func TestAcceptRules(t *testing.T) {
	d := testDoc()
	b, _ := Encode(d)
	st, err := Accept(State{}, d, b, testCompat, t0)
	must(t, err)
	if _, err := Accept(st, d, b, testCompat, t0); err != nil {
		t.Errorf("same document again: %v", err)
	}
	if _, err := Accept(st, d, append(bytes.Clone(b), ' '), testCompat, t0); !errors.Is(err, ErrEquivocation) {
		t.Errorf("same serial, other bytes: %v", err)
	}
	if _, err := Accept(State{}, d, b, "other", t0); !errors.Is(err, ErrIncompatible) {
		t.Errorf("compatible: %v", err)
	}
	if _, err := Accept(State{}, d, b, testCompat, d.Expires); !errors.Is(err, ErrExpired) {
		t.Errorf("at expiry: %v", err)
	}
}

func TestOutboxBoundedAndIdempotent(t *testing.T) {
	o := &Outbox{FS: journal.OSFS{}, Path: filepath.Join(t.TempDir(), "outbox.json")}
	for i := 0; i < MaxOutbox+5; i++ {
		must(t, o.Add(Report{ID: fmt.Sprint(i), Release: "r"}))
	}
	must(t, o.Add(Report{ID: fmt.Sprint(MaxOutbox + 4), Release: "r"}))
	p, err := o.Pending()
	must(t, err)
	if len(p) != MaxOutbox || p[0].ID != "5" || p[len(p)-1].ID != fmt.Sprint(MaxOutbox+4) {
		t.Fatalf("outbox: %d reports, first %s", len(p), p[0].ID)
	}
}

func TestStats(t *testing.T) {
	in := strings.Join([]string{
		`{"id":"a/1","device":"a","release":"2.0","result":"success","phases":{"install":10,"activate":30},"time":"2026-12-01T00:00:00Z"}`,
		`{"id":"a/1","device":"a","release":"2.0","result":"success","phases":{"install":10,"activate":30},"time":"2026-12-01T00:00:00Z"}`,
		`{"id":"b/1","device":"b","release":"2.0","result":"rollback","phases":{"install":20,"activate":90},"time":"2026-12-01T00:00:00Z"}`,
		`{"id":"c/1","device":"c","release":"2.0","result":"failure","phases":{"install":5},"time":"2026-12-01T00:00:00Z"}`,
		`{"id":"c/2","device":"c","release":"2.0","result":"success","phases":{"install":12,"activate":31},"time":"2026-12-01T00:00:00Z"}`,
		`not json`, ``,
	}, "\n")
	st, bad, err := Stats(strings.NewReader(in))
	must(t, err)
	if bad != 1 || len(st) != 1 {
		t.Fatalf("bad %d, %+v", bad, st)
	}
	s := st[0]
	if s.Devices != 3 || s.Reports != 4 || s.Success != 2 || s.Rollback != 1 || s.Failure != 1 || s.Rate(s.Rollback) != 25 {
		t.Fatalf("%+v", s)
	}
	if s.Phases["install"] != [2]float64{10, 20} || s.Phases["activate"] != [2]float64{31, 90} {
		t.Fatalf("phases %+v", s.Phases)
	}
}

func TestHostAdvanceGate(t *testing.T) {
	r := testDoc().Releases[0]
	now := t0.Add(time.Hour)
	bp, err := r.Advance(now)
	must(t, err)
	if bp != 1000 || r.PercentAt(now) != 1000 {
		t.Fatalf("advance: %d, now %d", bp, r.PercentAt(now))
	}
	if err := r.validate(); err != nil {
		t.Fatal(err)
	}
}

// FuzzOpenParse: no input panics the envelope or document parser, and
// only input signed by the channel key gets past Open.
func FuzzOpenParse(f *testing.F) {
	k := newKeys(f)
	b, _ := Encode(testDoc())
	signed, _ := Sign(rand.Reader, b, k.channel)
	f.Add(signed)
	f.Add([]byte("otad-channel v1\n\n{}"))
	f.Add([]byte("otad-channel v1\nsignature x ed25519 AAAA\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		doc, _, err := Open(in, k.ckr)
		if err != nil {
			return
		}
		if !bytes.HasSuffix(in, doc) {
			t.Fatal("Open returned bytes that are not the signed tail")
		}
		_, _ = Parse(doc)
	})
}

func TestFieldShapes(t *testing.T) {
	for s, want := range map[string]bool{"2.0": true, "v2.0-rc1+b7~x": true, "a": true, "-x": false, ".x": false,
		"a b": false, "é": false, "": false, strings.Repeat("a", 64): true, strings.Repeat("a", 65): false} {
		if idRe.MatchString(s) != want {
			t.Errorf("id %q: want %v", s, want)
		}
	}
	for s, want := range map[string]bool{"00:00": true, "23:59": true, "19:30": true, "24:00": false, "2:00": false,
		"12:60": false, "12-30": false, "ab:cd": false} {
		if clockRe.MatchString(s) != want {
			t.Errorf("clock %q: want %v", s, want)
		}
	}
	if !sha256Re.MatchString(sha('0')) || sha256Re.MatchString(strings.ToUpper(sha('a'))) || sha256Re.MatchString(sha('g')) || sha256Re.MatchString("ab") {
		t.Error("sha256 shape")
	}
}

// FuzzParse: the document parser never panics, and whatever it accepts
// encodes canonically and parses back to the same encoding.
func FuzzParse(f *testing.F) {
	b, _ := Encode(testDoc())
	f.Add(b)
	f.Add([]byte(`{"format":1}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := Parse(in)
		if err != nil {
			return
		}
		enc, err := Encode(d)
		if err != nil {
			t.Fatalf("accepted document does not encode: %v", err)
		}
		d2, err := Parse(enc)
		if err != nil {
			t.Fatalf("canonical encoding does not parse: %v", err)
		}
		enc2, _ := Encode(d2)
		if !bytes.Equal(enc, enc2) {
			t.Fatal("encoding not stable")
		}
	})
}
