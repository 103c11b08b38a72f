package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/otadev/otad/internal/dbusapi"
)

// cmdPoll is otactl poll: the fleet client ([hawkbit]) polls its server
// now; then its state is printed.
func cmdPoll(ctx context.Context, e *Env, args []string) error {
	fs := newFlags(e, "poll", "", "Make the fleet client ([hawkbit]) poll its server now.")
	bus := busFlag(fs)
	if err := parseFlags(e, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("poll takes no arguments")
	}
	c, err := dial(ctx, *bus)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Poll(ctx); err != nil {
		return err
	}
	st, err := c.Fleet(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.Stdout, "poll requested")
	printFleet(e.Stdout, st)
	return nil
}

// printFleet prints the fleet lines of otactl status (nothing without a
// fleet client).
func printFleet(w io.Writer, st dbusapi.FleetStatus) {
	if st.Server == "" {
		return
	}
	at := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.Local().Format(time.RFC3339)
	}
	action := st.Action
	if action == "" {
		action = "none"
	}
	fmt.Fprintf(w, "fleet:      %s\n  last poll: %s\n  next poll: %s\n  action:    %s\n", st.Server, at(st.LastPoll), at(st.NextPoll), action)
}

// fleetJSON is the "fleet" object of otactl status -json (nil without a
// fleet client).
func fleetJSON(st dbusapi.FleetStatus) map[string]any {
	if st.Server == "" {
		return nil
	}
	m := map[string]any{"server": st.Server, "action": st.Action}
	if !st.LastPoll.IsZero() {
		m["last_poll"] = st.LastPoll.UTC().Format(time.RFC3339)
	}
	if !st.NextPoll.IsZero() {
		m["next_poll"] = st.NextPoll.UTC().Format(time.RFC3339)
	}
	return m
}
