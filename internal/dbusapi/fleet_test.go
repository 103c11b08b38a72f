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
	if b.polls != 1 {
		t.Fatalf("%d polls", b.polls)
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
