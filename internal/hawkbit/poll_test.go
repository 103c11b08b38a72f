package hawkbit

import (
	"bytes"
	"testing"
	"time"
)

// An unavailable maintenance window: "scheduled" once, nothing written
// however often the device polls; once the window opens, the install runs.
func TestMaintenanceWindowWaits(t *testing.T) {
	b := newBoard(t)
	before := b.readSlot("B", slotSize)
	id := b.deploy("2.0", b.bundle("test-board", "2.0", 1, image(20, 1<<20)), "unavailable")
	r := b.powerOn()
	b.waitFor("scheduled", func() bool { return hasExec(b.srv.Feedback(), "scheduled") })
	polls := b.basePolls()
	b.waitFor("more polls", func() bool { return b.basePolls() > polls+5 })
	r.stop()
	fs := b.srv.Feedback()
	if len(fs) != 1 || fs[0].Execution != "scheduled" || !bytes.Equal(b.readSlot("B", slotSize), before) {
		t.Fatalf("while the window is closed: %v", executions(fs))
	}
	b.srv.SetWindow(id, "available")
	b.drive(b.hasFinal(id))
	fs = b.srv.Feedback()
	printSequence(t, "maintenance window", fs)
	if f := b.srv.Finals(id); len(f) != 1 || f[0].Finished != "success" {
		t.Fatalf("finals %v", f)
	}
}

func durations(ds ...string) []time.Duration {
	var out []time.Duration
	for _, s := range ds {
		d, err := time.ParseDuration(s)
		if err != nil {
			panic(err)
		}
		out = append(out, d)
	}
	return out
}

// The client waits what the server's config.polling.sleep says, clamped
// to [poll-min, poll-max] and shortened by at most a tenth of jitter; it
// backs off from poll-min, doubling, while the server fails; it never
// polls before a wait ended, except when asked to (otactl poll). The clock
// is injected: the test reads the waits the client asked for.
func TestPollingIntervalHonoured(t *testing.T) {
	b := newBoard(t)
	b.clock.auto = false
	jitter := 0.5
	b.jitter = func() float64 { return jitter }
	r := b.powerOn()
	defer r.stop()
	step := func(sleep string, mutate func()) {
		b.srv.Lock(func() {
			b.srv.Sleep = sleep
			if mutate != nil {
				mutate()
			}
		})
		n := len(b.clock.asked())
		if !b.clock.fire() {
			t.Fatal("no wait pending")
		}
		b.waitFor("the next wait", func() bool { return len(b.clock.asked()) > n })
	}
	b.waitFor("first poll", func() bool { return len(b.clock.asked()) == 1 })
	step("00:10:00", nil)                                // 10 min, within bounds
	step("02:00:00", nil)                                // above poll-max (1h)
	step("00:00:01", nil)                                // below poll-min (10s)
	step("00:00:30", func() { b.srv.Token = "rotated" }) // 401: backoff 1
	step("00:00:30", nil)                                // backoff 2
	step("00:00:30", nil)                                // backoff 3
	step("00:00:30", func() { b.srv.Token = testToken }) // back
	step("00:00:30", nil)                                // same answer: 304
	want := durations("28.5s", "9m30s", "57m", "10s", "10s", "19s", "38s", "28.5s", "28.5s")
	got := b.clock.asked()
	if len(got) != len(want) {
		t.Fatalf("waits %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("wait %d: %v, want %v (all: %v)", i, got[i], want[i], got)
		}
	}
	if p := b.basePolls(); p != len(got) {
		t.Fatalf("%d polls for %d waits: polled before a wait ended", p, len(got))
	}
	if b.srv.NotModified() == 0 {
		t.Fatal("no If-None-Match / 304 round trip")
	}
	// otactl poll: polls now, without the wait ending.
	n := b.basePolls()
	r.c.PollNow()
	b.waitFor("the requested poll", func() bool { return b.basePolls() > n })
	if i := r.c.Info(); i.LastPoll.IsZero() || !i.NextPoll.After(i.LastPoll) || i.Server != b.srv.URL {
		t.Fatalf("info %+v", i)
	}
}

func TestParseSleep(t *testing.T) {
	for s, want := range map[string]time.Duration{"00:05:00": 5 * time.Minute, "01:00:30": time.Hour + 30*time.Second, "00:00:00": 0} {
		if d, err := ParseSleep(s); err != nil || d != want {
			t.Errorf("%s: %v %v", s, d, err)
		}
	}
	for _, s := range []string{"", "5", "00:60:00", "00:00:-1", "a:b:c", "00::00", "1:2"} {
		if _, err := ParseSleep(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func FuzzParseSleep(f *testing.F) {
	for _, s := range []string{"00:05:00", "99:59:59", "::", "1:2:3:4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseSleep(s)
		if err == nil && d < 0 {
			t.Fatalf("%q: negative %v", s, d)
		}
	})
}
