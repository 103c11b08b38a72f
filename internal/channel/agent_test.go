package channel

import (
	"context"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/otadev/otad/internal/fleet"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/testutil/nginxtest"
	"github.com/otadev/otad/internal/update"
)

// timerClock hands out timers the test fires by hand and records the
// durations the agent asked for.
type timerClock struct {
	mu     sync.Mutex
	now    time.Time
	asked  []time.Duration
	timers chan chan time.Time
}

func (c *timerClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *timerClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.mu.Lock()
	c.asked = append(c.asked, d)
	c.mu.Unlock()
	c.timers <- ch
	return ch
}

// fire waits for the agent's next timer and fires it.
func (c *timerClock) fire(t *testing.T) {
	t.Helper()
	select {
	case ch := <-c.timers:
		ch <- c.Now()
	case <-time.After(10 * time.Second):
		t.Fatal("the agent asked for no timer")
	}
}

// statusClient records the status of every answer.
type statusClient struct {
	mu       sync.Mutex
	statuses []int
}

func (s *statusClient) Do(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultClient.Do(r)
	if err == nil {
		s.mu.Lock()
		s.statuses = append(s.statuses, resp.StatusCode)
		s.mu.Unlock()
	}
	return resp, err
}

// recorder is the engine replaced by a recorder: it runs version 2.0 of
// slot A and records installs.
type recorder struct {
	mu       sync.Mutex
	installs []string
	version  string
	err      error // Install's answer
}

func (r *recorder) Install(_ context.Context, src string, _ map[string]any) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.installs = append(r.installs, src)
	return "tx-1", r.err
}

func (r *recorder) Status() update.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return update.Status{Operation: update.OpIdle, BootSlot: "A", Version: r.version,
		Slots: []update.SlotStatus{{Name: "A", State: "active"}, {Name: "B"}}}
}

func (r *recorder) Subscribe() (<-chan update.Event, func()) {
	return make(chan update.Event), func() {}
}

// The poll loop: the first poll within the jitter, then interval ± jitter
// on the injected clock; an unchanged document costs a conditional request
// answered 304; a newly signed one is fetched again.
func TestRunIntervalJitterAndConditionalPolls(t *testing.T) {
	k := newKeys(t)
	h := newHost(t, k)
	writeBundle(t, h.path("full-2.0.otab"), "2.0", testImage(2, 64<<10), k.release)
	h.add(AddOptions{Bundle: h.path("full-2.0.otab")})
	h.sign(time.Now())
	ng := nginxtest.Start(t, h.dir, 1)

	dir := t.TempDir()
	clock := &timerClock{now: time.Now(), timers: make(chan chan time.Time)}
	hc := &statusClient{}
	eng := &recorder{version: "2.0"} // runs the release already: polls, never installs
	a := &Agent{
		Poller: &Poller{URL: ng.URL + DocumentFile, Client: hc, Keyring: k.ckr, Compatible: testCompat,
			Store: &FileStore{FS: journal.OSFS{}, Path: filepath.Join(dir, "state.json")}},
		Engine: eng, DeviceID: "dev-1", Actions: fleet.Store{FS: journal.OSFS{}, Path: filepath.Join(dir, "action.json")},
		FS: journal.OSFS{}, Dir: dir, Interval: time.Hour, Jitter: 10 * time.Minute, Clock: clock,
		Rand: rand.New(rand.NewPCG(1, 2)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for i := 0; i < 3; i++ {
		clock.fire(t)
	}
	h.sign(time.Now()) // serial 2: new bytes, new ETag
	clock.fire(t)
	clock.fire(t)
	select { // the 5th poll has run once the 6th timer is asked for (not fired)
	case <-clock.timers:
	case <-time.After(10 * time.Second):
		t.Fatal("no 6th timer")
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run: %v", err)
	}
	hc.mu.Lock()
	got := append([]int(nil), hc.statuses[:5]...)
	hc.mu.Unlock()
	want := []int{200, 304, 304, 200, 304}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("answers %v, want %v", got, want)
		}
	}
	clock.mu.Lock()
	asked := clock.asked
	clock.mu.Unlock()
	if asked[0] < 0 || asked[0] > 10*time.Minute {
		t.Errorf("first poll after %v, want within the jitter", asked[0])
	}
	distinct := map[time.Duration]bool{}
	for _, d := range asked[1:] {
		if d < 50*time.Minute || d > 70*time.Minute {
			t.Errorf("poll delay %v outside 1h ± 10m", d)
		}
		distinct[d] = true
	}
	if len(distinct) < 2 {
		t.Errorf("delays %v: no jitter", asked[1:])
	}
	if len(eng.installs) != 0 || a.Poller.State().Serial != 2 {
		t.Fatalf("installs %v, serial %d", eng.installs, a.Poller.State().Serial)
	}
}

// An install the engine refuses as busy (a D-Bus install runs) is no
// failure of the release: no report, not skipped, decided again next poll.
func TestBusyEngineIsNotAFailure(t *testing.T) {
	k := newKeys(t)
	h := newHost(t, k)
	writeBundle(t, h.path("full-2.0.otab"), "2.0", testImage(2, 64<<10), k.release)
	h.add(AddOptions{Bundle: h.path("full-2.0.otab")})
	h.sign(time.Now())
	ng := nginxtest.Start(t, h.dir, 1)
	dir := t.TempDir()
	eng := &recorder{version: "1.0", err: update.ErrBusy}
	a := &Agent{
		Poller: &Poller{URL: ng.URL + DocumentFile, Keyring: k.ckr, Compatible: testCompat,
			Store: &FileStore{FS: journal.OSFS{}, Path: filepath.Join(dir, "state.json")}},
		Engine: eng, DeviceID: "dev-1", Actions: fleet.Store{FS: journal.OSFS{}, Path: filepath.Join(dir, "action.json")},
		FS: journal.OSFS{}, Dir: dir, Outbox: &Outbox{FS: journal.OSFS{}, Path: filepath.Join(dir, "outbox.json")},
		Clock: &fixedClock{t: time.Now()},
	}
	for i := 0; i < MaxFailures+1; i++ {
		if _, err := a.Step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if len(eng.installs) != MaxFailures+1 {
		t.Fatalf("%d install attempts, want one per poll", len(eng.installs))
	}
	out, err := a.Outbox.Pending()
	must(t, err)
	skip, err := a.loadSkipped()
	must(t, err)
	if len(out) != 0 || len(skip) != 0 {
		t.Fatalf("busy counted as a failure: reports %v, skipped %v", out, skip)
	}
}
