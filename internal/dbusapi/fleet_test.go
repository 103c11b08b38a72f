package dbusapi

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fleetFake is a backend with a fleet client.
type fleetFake struct {
	*fakeBackend
	mu    sync.Mutex
	polls int
	st    FleetStatus
}

func (f *fleetFake) PollNow() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls++
	f.st.LastPoll = time.Unix(1800000000+int64(f.polls), 0)
	return nil
}

func (f *fleetFake) pollCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.polls
}

func (f *fleetFake) FleetStatus() FleetStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func TestFleetPollAndProperties(t *testing.T) {
	b := &fleetFake{fakeBackend: newFake(1, time.Millisecond),
		st: FleetStatus{Server: "https://hawkbit.example:8443/ddi", NextPoll: time.Unix(1800000300, 0), Action: "42 installing"}}
	addr, _ := serve(t, includePolicy(t), b, nil)
	c := dialT(t, addr)
	ctx := context.Background()
	st, err := c.Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Server != "https://hawkbit.example:8443/ddi" || !st.LastPoll.IsZero() || st.NextPoll.Unix() != 1800000300 || st.Action != "42 installing" {
		t.Fatalf("fleet properties %+v", st)
	}
	if err := c.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if n := b.pollCount(); n != 1 {
		t.Fatalf("%d polls", n)
	}
	// Poll publishes the new values at once.
	if st, err = c.Fleet(ctx); err != nil || st.LastPoll.Unix() != 1800000001 {
		t.Fatalf("after Poll: %+v %v", st, err)
	}
}

func TestPollWithoutFleetClientFails(t *testing.T) {
	addr, _ := serve(t, includePolicy(t), newFake(1, time.Millisecond), nil)
	c := dialT(t, addr)
	err := c.Poll(context.Background())
	var re *RemoteError
	if !errors.As(err, &re) || re.Name != ErrFailed {
		t.Fatalf("Poll without a fleet client: %v", err)
	}
	st, err := c.Fleet(context.Background())
	if err != nil || st.Server != "" || !st.LastPoll.IsZero() {
		t.Fatalf("%+v %v", st, err)
	}
}

// Poll makes the device act: refused to callers outside root and group
// otad, by the shipped bus policy and again in-process.
func TestPollRefusedForUnprivilegedCallers(t *testing.T) {
	requireRoot(t)
	b := &fleetFake{fakeBackend: newFake(1, time.Millisecond), st: FleetStatus{Server: "https://h.example"}}
	addr, dir := serve(t, includePolicy(t), b, nil)
	if got := runAs(t, dir, addr, "poll"); got != "org.freedesktop.DBus.Error.AccessDenied" {
		t.Errorf("nobody Poll under the shipped policy: %q", got)
	}
	addr, dir = serve(t, openPolicy, b, &Authorizer{Group: "otad", GroupsOf: func(uint32) ([]string, error) { return []string{"nogroup"}, nil }})
	if got := runAs(t, dir, addr, "poll"); got != ErrNotAuthorized {
		t.Errorf("nobody Poll with an open bus: %q", got)
	}
	if got := runAs(t, dir, addr, "status"); got != "ok" {
		t.Errorf("nobody reading properties: %q", got)
	}
	if n := b.pollCount(); n != 0 {
		t.Fatalf("%d polls from unprivileged callers", n)
	}
}
