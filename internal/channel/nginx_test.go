package channel

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/otadev/otad/internal/bundle"
	"github.com/otadev/otad/internal/fetch"
	"github.com/otadev/otad/internal/fleet"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/testutil/nginxtest"
	"github.com/otadev/otad/internal/update"
)

// host is a channel directory built with the host tooling's functions.
type host struct {
	t   *testing.T
	dir string
	k   testKeys
}

func newHost(t *testing.T, k testKeys) *host {
	h := &host{t: t, dir: t.TempDir(), k: k}
	must(t, InitDir(h.dir, testCompat, 24*time.Hour))
	return h
}

func (h *host) add(o AddOptions) *Release {
	h.t.Helper()
	d, err := LoadDraft(h.dir)
	must(h.t, err)
	if o.Now.IsZero() {
		o.Now = time.Now().Add(-time.Minute)
	}
	r, err := d.AddRelease(h.dir, o)
	must(h.t, err)
	must(h.t, d.Save(h.dir))
	return r
}

func (h *host) sign(now time.Time) *Document {
	h.t.Helper()
	doc, err := SignDir(h.dir, rand.Reader, now, h.k.channel)
	must(h.t, err)
	return doc
}

func (h *host) path(n string) string { return filepath.Join(h.dir, n) }

// newTestAgent is the device side on board b against the channel at url.
func newTestAgent(b *board, e Engine, k testKeys, url, reportURL string, fsys journal.FS, clock Clock) *Agent {
	dir := filepath.Join(b.data(), "channel")
	must(b.t, os.MkdirAll(dir, 0o755))
	return &Agent{
		Poller:   &Poller{URL: url, Keyring: k.ckr, Compatible: testCompat, Store: &FileStore{FS: fsys, Path: filepath.Join(dir, "state.json")}},
		Engine:   e,
		DeviceID: "device-" + filepath.Base(b.dir),
		Actions:  fleet.Store{FS: fsys, Path: filepath.Join(dir, "action.json")},
		FS:       fsys, Dir: dir,
		Outbox:    &Outbox{FS: fsys, Path: filepath.Join(dir, "outbox.json")},
		ReportURL: reportURL,
		Clock:     clock,
	}
}

// stepInstall runs one Step; when it starts an install, it waits for the
// engine's completed event and hands it to the agent as Run would.
func stepInstall(t *testing.T, a *Agent, e *update.Engine) (Decision, update.Event) {
	t.Helper()
	ch, stop := e.Subscribe()
	defer stop()
	dec, err := a.Step(context.Background())
	must(t, err)
	if dec.Action != Install {
		return dec, update.Event{}
	}
	if c, ok := a.Clock.(*fixedClock); ok && c.advanceOnInstall > 0 {
		c.set(c.Now().Add(c.advanceOnInstall))
	}
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev.Kind == "completed" {
				must(t, a.completed(ev))
				return dec, ev
			}
		case <-timeout:
			t.Fatal("install did not complete")
		}
	}
}

func TestHappyPathDeltaAndFullFallback(t *testing.T) {
	k := newKeys(t)
	h := newHost(t, k)
	factory, v2, v3 := testImage(1, imgSize), testImage(2, imgSize), testImage(2, imgSize)
	copy(v3[4096:], "release three changes a few bytes")
	writeBundle(t, h.path("full-2.0.otab"), "2.0", v2, k.release)
	h.add(AddOptions{Bundle: h.path("full-2.0.otab")})
	h.sign(time.Now())
	ng := nginxtest.Start(t, h.dir, 1)
	url, reportURL := ng.URL+DocumentFile, ng.URL+"report"

	b := newBoard(t, k.kr, factory)
	e := b.engine()
	clock := &fixedClock{t: time.Now()}
	a := newTestAgent(b, e, k, url, reportURL, journal.OSFS{}, clock)
	clock.advanceOnInstall = 30 * time.Second
	dec, ev := stepInstall(t, a, e)
	if dec.Action != Install || dec.Delta || dec.Release.ID != "2.0" || ev.Result != update.ResultOK {
		t.Fatalf("first poll: %+v, completed %+v", dec, ev)
	}
	if got := b.sources(); len(got) != 1 || !strings.HasSuffix(got[0], "/bundles/full-2.0.otab") {
		t.Fatalf("engine opened %v", got)
	}
	// Armed; the reboot policy is the engine's. Reboot, confirm, commit.
	clock.set(clock.Now().Add(90 * time.Second))
	b.reboot()
	e = b.engine()
	if st := e.Status(); st.BootSlot != "B" || st.Version != "2.0" || st.TrialBoot {
		t.Fatalf("after reboot: %+v", st)
	}
	a = newTestAgent(b, e, k, url, reportURL, journal.OSFS{}, clock) // the daemon restarted
	dec, _ = stepInstall(t, a, e)
	a.flush(context.Background())
	if dec.Action != None || dec.Reason != "up to date" {
		t.Fatalf("after the update: %+v", dec)
	}
	lines := ng.WaitReports(t, 1)
	if len(lines) != 1 {
		t.Fatalf("reports: %q", lines)
	}
	var rep Report
	must(t, json.Unmarshal([]byte(lines[0]), &rep))
	if rep.Result != ResultSuccess || rep.Release != "2.0" || rep.To != "2.0" || rep.Device != Pseudonym(a.DeviceID) ||
		strings.Contains(lines[0], a.DeviceID) || rep.Phases["install"] != 30 || rep.Phases["activate"] != 90 {
		t.Fatalf("report %s", lines[0])
	}
	// Unchanged document: a conditional request, 304.
	f, err := a.Poller.Fetch(context.Background(), clock.Now())
	must(t, err)
	if f.Status != http.StatusNotModified || f.Doc == nil {
		t.Fatalf("unchanged document: status %d", f.Status)
	}

	// Release 3.0 with a delta from 2.0's image: this device (2.0 active)
	// gets the delta with the full bundle as the fallback.
	writeBundle(t, h.path("full-3.0.otab"), "3.0", v3, k.release)
	writeDeltaBundle(t, h.path("delta-2.0-3.0.otab"), "3.0", v2, v3, k.release)
	h.add(AddOptions{Bundle: h.path("full-3.0.otab"), Deltas: []string{h.path("delta-2.0-3.0.otab")}})
	h.sign(time.Now())
	dec, ev = stepInstall(t, a, e)
	if dec.Action != Install || !dec.Delta || dec.Fallback == nil || ev.Result != update.ResultOK {
		t.Fatalf("delta poll: %+v %+v", dec, ev)
	}
	if got := b.sources(); !strings.HasSuffix(got[len(got)-1], "/bundles/delta-2.0-3.0.otab") {
		t.Fatalf("engine opened %v, want the delta", got)
	}
	b.reboot()
	e = b.engine()
	if st := e.Status(); st.Version != "3.0" || st.BootSlot != "A" {
		t.Fatalf("after the delta: %+v", st)
	}

	// A device whose active image is not 2.0's gets the full bundle.
	b2 := newBoard(t, k.kr, testImage(9, imgSize))
	e2 := b2.engine()
	a2 := newTestAgent(b2, e2, k, url, reportURL, journal.OSFS{}, clock)
	dec, ev = stepInstall(t, a2, e2)
	if dec.Action != Install || dec.Delta || dec.Release.ID != "3.0" || ev.Result != update.ResultOK {
		t.Fatalf("other device: %+v %+v", dec, ev)
	}
	if got := b2.sources(); len(got) != 1 || !strings.HasSuffix(got[0], "/bundles/full-3.0.otab") {
		t.Fatalf("other device opened %v, want the full bundle", got)
	}
}

func TestReplayedAndExpiredDocuments(t *testing.T) {
	k := newKeys(t)
	h := newHost(t, k)
	v2 := testImage(2, 64<<10)
	writeBundle(t, h.path("full-2.0.otab"), "2.0", v2, k.release)
	h.add(AddOptions{Bundle: h.path("full-2.0.otab")})
	t0 := time.Now().UTC().Truncate(time.Second)
	h.sign(t0) // serial 1
	old, err := os.ReadFile(h.path(DocumentFile))
	must(t, err)
	h.sign(t0.Add(2 * time.Hour)) // serial 2
	ng := nginxtest.Start(t, h.dir, 1)
	state := filepath.Join(t.TempDir(), "state.json")
	poller := func() *Poller {
		return &Poller{URL: ng.URL + DocumentFile, Keyring: k.ckr, Compatible: testCompat, Store: &FileStore{FS: journal.OSFS{}, Path: state}}
	}
	p := poller()
	f, err := p.Fetch(context.Background(), t0.Add(2*time.Hour))
	must(t, err)
	if f.Doc.Serial != 2 || !f.Accepted {
		t.Fatalf("serial 2: %+v", f)
	}
	// A mirror replays serial 1 (validly signed): refused, also after a restart.
	must(t, os.WriteFile(h.path(DocumentFile), old, 0o644))
	must(t, os.Chtimes(h.path(DocumentFile), t0.Add(-time.Hour), t0.Add(-time.Hour)))
	if _, err := p.Fetch(context.Background(), t0.Add(2*time.Hour)); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
	if _, err := poller().Fetch(context.Background(), t0.Add(2*time.Hour)); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay after restart: %v", err)
	}
	st, err := (&FileStore{FS: journal.OSFS{}, Path: state}).Load()
	must(t, err)
	if st.Serial != 2 {
		t.Fatalf("state moved: %+v", st)
	}

	// Expired: serial 3 signed valid for 24 h from t0+2h, device clock 30 h later.
	h.sign(t0.Add(2 * time.Hour))
	if _, err := poller().Fetch(context.Background(), t0.Add(30*time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired document: %v", err)
	}
	// A device clock before the last accepted created time uses that time:
	// after accepting serial 4 (created t0+20h), a device whose clock fell
	// back to 1970 judges serial 5 (created t0, expired at t0+1h) at t0+20h.
	h.sign(t0.Add(20 * time.Hour)) // serial 4
	p = poller()
	if _, err := p.Fetch(context.Background(), t0.Add(20*time.Hour)); err != nil {
		t.Fatalf("serial 4: %v", err)
	}
	d, err := LoadDraft(h.dir)
	must(t, err)
	d.Validity = "1h"
	must(t, d.Save(h.dir))
	h.sign(t0) // serial 5: created t0, expires t0+1h
	epoch := time.Unix(0, 0)
	if _, err := poller().Fetch(context.Background(), epoch); !errors.Is(err, ErrExpired) {
		t.Fatalf("clock at 1970 revived an expired document: %v", err)
	}
	// Without the floor, the same document passes at 1970: the rule matters.
	if err := CheckExpiry(State{}, mustParseSigned(t, h.path(DocumentFile), k), epoch); err != nil {
		t.Fatalf("control: %v", err)
	}
}

func mustParseSigned(t *testing.T, path string, k testKeys) *Document {
	b, err := os.ReadFile(path)
	must(t, err)
	doc, _, err := Open(b, k.ckr)
	must(t, err)
	d, err := Parse(doc)
	must(t, err)
	return d
}

func TestWrongKeyRefusedBeforeParsing(t *testing.T) {
	k := newKeys(t)
	h := newHost(t, k)
	writeBundle(t, h.path("full-2.0.otab"), "2.0", testImage(2, 64<<10), k.release)
	h.add(AddOptions{Bundle: h.path("full-2.0.otab")})
	h.sign(time.Now())
	ng := nginxtest.Start(t, h.dir, 1)
	good, err := os.ReadFile(h.path(DocumentFile))
	must(t, err)
	_, docBytes, _ := strings.Cut(string(good), "\n\n")
	stranger, err := bundle.GenerateKey(bundle.AlgEd25519, "stranger", RoleChannel, rand.Reader)
	must(t, err)
	cases := []struct {
		name string
		body func() []byte
		want error
	}{
		{"release key signs the channel", func() []byte { b, _ := Sign(rand.Reader, []byte(docBytes), k.release); return b }, bundle.ErrThreshold},
		{"untrusted key", func() []byte { b, _ := Sign(rand.Reader, []byte(docBytes), stranger); return b }, bundle.ErrUnknownKey},
		{"one byte changed", func() []byte { return []byte(strings.Replace(string(good), `"2.0"`, `"9.0"`, 1)) }, bundle.ErrBadSignature},
		// Garbage after a valid header: the signature fails first, the
		// JSON is never looked at.
		{"garbage document", func() []byte {
			hdr, _, _ := strings.Cut(string(good), "\n\n")
			return []byte(hdr + "\n\n{not json")
		}, bundle.ErrBadSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			must(t, os.WriteFile(h.path(DocumentFile), c.body(), 0o644))
			p := &Poller{URL: ng.URL + DocumentFile, Keyring: k.ckr, Compatible: testCompat, Store: &MemStore{}}
			_, err := p.Fetch(context.Background(), time.Now())
			if !errors.Is(err, c.want) || errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if p.State().Serial != 0 {
				t.Fatal("state moved")
			}
		})
	}
}

// A document naming a bundle whose served bytes differ: another validly
// signed bundle of the same size in its place passes every check of the
// bundle itself, so only the document's SHA-256 refuses it; a flipped
// payload byte is refused by the bundle's own chunk hashes even when the
// channel's check is not applied (an install resumed after a restart), and
// by the channel's check alone as well.
func TestBundleBytesDiffer(t *testing.T) {
	k := newKeys(t)
	h := newHost(t, k)
	writeBundle(t, h.path("full-2.0.otab"), "2.0", testImage(2, imgSize), k.release)
	h.add(AddOptions{Bundle: h.path("full-2.0.otab")})
	doc := h.sign(time.Now())
	ng := nginxtest.Start(t, h.dir, 1)
	served := h.path(filepath.Join(BundleDir, "full-2.0.otab"))
	orig, err := os.ReadFile(served)
	must(t, err)

	install := func(t *testing.T, ignore bool) update.Event {
		b := newBoard(t, k.kr, testImage(1, imgSize))
		b.ignoreChecks = ignore
		e := b.engine()
		a := newTestAgent(b, e, k, ng.URL+DocumentFile, "", journal.OSFS{}, &fixedClock{t: time.Now()})
		dec, ev := stepInstall(t, a, e)
		if dec.Action != Install {
			t.Fatalf("decision %+v", dec)
		}
		if ev.Result != update.ResultOK {
			env, err := b.env.Load()
			must(t, err)
			if s, _ := env.Get("otad_slot"); s != "A" {
				t.Fatal("a changed bundle was armed")
			}
			act, err := a.Actions.Load()
			must(t, err)
			out, err := a.Outbox.Pending()
			must(t, err)
			if act.Outcome == nil || act.Outcome.Kind != fleet.Failure || len(out) != 1 || out[0].Result != ResultFailure {
				t.Fatalf("action %+v, spooled %+v", act, out)
			}
		}
		return ev
	}

	t.Run("another signed bundle", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.otab")
		writeBundle(t, other, "2.0", testImage(3, imgSize), k.release)
		b, err := os.ReadFile(other)
		must(t, err)
		if len(b) != len(orig) {
			t.Fatalf("fixture: sizes %d and %d differ", len(b), len(orig))
		}
		must(t, os.WriteFile(served, b, 0o644))
		if ev := install(t, true); ev.Result != update.ResultOK {
			t.Fatalf("control: the bundle's own checks accept it: %+v", ev)
		}
		if ev := install(t, false); ev.Result == update.ResultOK || !strings.Contains(ev.Message, "differs from the channel document") {
			t.Fatalf("the channel check let another bundle through: %+v", ev)
		}
	})
	t.Run("flipped byte", func(t *testing.T) {
		bad := slices.Clone(orig)
		bad[len(bad)-1000] ^= 0x40
		must(t, os.WriteFile(served, bad, 0o644))
		if ev := install(t, true); ev.Result == update.ResultOK || !strings.Contains(ev.Message, "hash mismatch") {
			t.Fatalf("bundle's own checks: %+v", ev)
		}
		if ev := install(t, false); ev.Result == update.ResultOK {
			t.Fatalf("with the channel check: %+v", ev)
		}
		// The channel's check alone, over the bytes nginx serves.
		src, err := fetch.Open(context.Background(), ng.URL+doc.Releases[0].Bundle.URL, fetch.Options{})
		must(t, err)
		cs, err := NewCheckedSource(src, doc.Releases[0].Bundle)
		must(t, err)
		defer cs.Close()
		if _, err := io.Copy(io.Discard, cs); !errors.Is(err, ErrFileMismatch) {
			t.Fatalf("channel check alone: %v", err)
		}
	})
}

func TestBucketStableAcrossRestarts(t *testing.T) {
	k := newKeys(t)
	h := newHost(t, k)
	writeBundle(t, h.path("full-2.0.otab"), "2.0", testImage(2, 64<<10), k.release)
	now := time.Now()
	stages, err := ParseStages("10,50@1h,100@2h", now.Add(-time.Minute))
	must(t, err)
	h.add(AddOptions{Bundle: h.path("full-2.0.otab"), Rollout: stages})
	h.sign(now)
	ng := nginxtest.Start(t, h.dir, 1)
	stateDir := t.TempDir()
	const n = 2000
	decide := func(at time.Time) []bool {
		out := make([]bool, n)
		for i := range out {
			// Every device restarts: a new poller on its persisted state.
			p := &Poller{URL: ng.URL + DocumentFile, Keyring: k.ckr, Compatible: testCompat,
				Store: &FileStore{FS: journal.OSFS{}, Path: filepath.Join(stateDir, fmt.Sprint(i%50), "state.json")}}
			f, err := p.Fetch(context.Background(), at)
			must(t, err)
			out[i] = Decide(f.Doc, Device{ID: fmt.Sprintf("machine-%04d", i), Version: "1.0", Now: at}).Action == Install
		}
		return out
	}
	first, again := decide(now), decide(now)
	if !slices.Equal(first, again) {
		t.Fatal("a device's decision changed across a restart")
	}
	count := func(v []bool) (c int) {
		for _, x := range v {
			if x {
				c++
			}
		}
		return
	}
	if c := count(first); c < n*7/100 || c > n*13/100 {
		t.Fatalf("10 %% stage: %d of %d devices", c, n)
	}
	wider := decide(now.Add(90 * time.Minute))
	for i := range first {
		if first[i] && !wider[i] {
			t.Fatalf("device %d left the rollout when it widened", i)
		}
	}
	if c := count(decide(now.Add(3 * time.Hour))); c != n {
		t.Fatalf("100 %%: %d of %d", c, n)
	}
}

// A power cut after the install (armed, before the reboot) and the report:
// the reboot commits, the restarted agent reports once. Then a cut at every
// state write of settling and reporting, each followed by a restart: the
// collector sees the report once, except where the cut falls after the
// collector's answer and before the spool forgot it (resent with the same
// id, which Stats counts once).
func TestPowerCutBetweenInstallAndReport(t *testing.T) {
	k := newKeys(t)
	h := newHost(t, k)
	writeBundle(t, h.path("full-2.0.otab"), "2.0", testImage(2, imgSize), k.release)
	h.add(AddOptions{Bundle: h.path("full-2.0.otab")})
	h.sign(time.Now())
	ng := nginxtest.Start(t, h.dir, 1)
	url, reportURL := ng.URL+DocumentFile, ng.URL+"report"
	clock := &fixedClock{t: time.Now()}

	seenIDs := map[string]int{}
	delivered := 0
	for cut := 1; ; cut++ {
		b := newBoard(t, k.kr, testImage(1, imgSize))
		e := b.engine()
		a := newTestAgent(b, e, k, url, reportURL, journal.OSFS{}, clock)
		if dec, ev := stepInstall(t, a, e); dec.Action != Install || ev.Result != update.ResultOK {
			t.Fatalf("install: %+v %+v", dec, ev)
		}
		// Power cut here: nothing of the agent survives but its files.
		b.reboot()
		e = b.engine() // confirms and commits
		cfs := &cutFS{FS: journal.OSFS{}, cutAt: cut}
		posts := &countingClient{}
		a = newTestAgent(b, e, k, url, reportURL, cfs, clock)
		a.Client = posts
		_, err := a.Step(context.Background())
		if err == nil {
			a.flush(context.Background())
		}
		fired := cfs.ops >= cut
		beforeRestart := int(posts.ok.Load())
		// Power back: a clean restart settles whatever is left.
		a = newTestAgent(b, e, k, url, reportURL, journal.OSFS{}, clock)
		a.Client = posts
		_, err = a.Step(context.Background())
		must(t, err)
		a.flush(context.Background())
		lines := ng.WaitReports(t, delivered+int(posts.ok.Load()))
		var ids []string
		for _, l := range lines[delivered:] {
			var r Report
			must(t, json.Unmarshal([]byte(l), &r))
			if r.Result != ResultSuccess {
				t.Fatalf("cut %d: report %s", cut, l)
			}
			ids = append(ids, r.ID)
		}
		delivered = len(lines)
		if len(ids) == 0 || len(slices.Compact(slices.Clone(ids))) != 1 {
			t.Fatalf("cut at state write %d: reports %v, want one report id", cut, ids)
		}
		seenIDs[ids[0]] = len(ids)
		if len(ids) > 1 {
			if beforeRestart != 1 || len(ids) != 2 {
				t.Fatalf("cut at state write %d: %d POSTs, %d of them before the cut", cut, len(ids), beforeRestart)
			}
			t.Logf("cut at state write %d, after the collector's answer: resent once with the same id", cut)
		}
		if !fired {
			t.Logf("%d cut points, every one delivered the report", cut-1)
			break
		}
	}
	f, err := os.Open(ng.Reports)
	must(t, err)
	defer f.Close()
	st, _, err := Stats(f)
	must(t, err)
	if len(st) != 1 || st[0].Reports != len(seenIDs) || st[0].Success != len(seenIDs) {
		t.Fatalf("stats %+v, want %d distinct reports", st, len(seenIDs))
	}
}
