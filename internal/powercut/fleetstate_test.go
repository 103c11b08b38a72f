package powercut

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/otadev/otad/internal/channel"
	"github.com/otadev/otad/internal/fleet"
)

// The fleet clients' state files, cut at every operation of a sequence of
// writes: each must read back as the last completed write or the one in
// flight, never an error, a mix or something older.

func mkdata(t *testing.T) func(*CrashFS) {
	return func(c *CrashFS) {
		if err := c.MkdirAll("/data", 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPowerCutFleetAction: the action a hawkBit or channel client owes its
// server (internal/fleet Store), saved before each side effect.
func TestPowerCutFleetAction(t *testing.T) {
	phases := []fleet.Phase{fleet.PhaseReceived, fleet.PhaseInstalling, fleet.PhaseInstalling, fleet.PhaseArmed,
		fleet.PhaseRebooting, fleet.PhaseFinal, fleet.PhaseFinal}
	act := func(i int) *fleet.Action {
		a := &fleet.Action{ID: fmt.Sprintf("action-%d", i/len(phases)), Phase: phases[i%len(phases)],
			Source: "https://updates.example/b.otab", Version: "2.0", Target: "B", Booted: "A"}
		if i%len(phases) >= 2 {
			a.Tx = fmt.Sprintf("tx-%d", i)
		}
		return a
	}
	steps := 2 * len(phases)
	st := func(c *CrashFS) fleet.Store { return fleet.Store{FS: c, Path: "/data/fleet-action.json"} }
	step := func(c *CrashFS, i int) error { return st(c).Save(act(i)) }
	check := func(c *CrashFS, cut int) error {
		got, err := st(c).Load()
		if err != nil {
			return fmt.Errorf("action unreadable after the cut: %w", err)
		}
		if cut == 0 && got == nil {
			return nil
		}
		for _, i := range []int{cut - 1, cut} {
			if i >= 0 && got != nil && reflect.DeepEqual(got, act(i)) {
				return nil
			}
		}
		return fmt.Errorf("action %+v after a cut in save %d: neither the last saved nor the one in flight", got, cut)
	}
	n := sweep(t, steps, mkdata(t), step, check)
	t.Logf("fleet action: %d cut points, 0 violations", n)
}

// TestPowerCutChannelSerial: the static channel's accepted serial never
// goes back (a replayed older document would be accepted again).
func TestPowerCutChannelSerial(t *testing.T) {
	serials := []uint64{1, 2, 5, 9, 10, 30}
	state := func(i int) channel.State {
		return channel.State{Serial: serials[i], Created: time.Unix(int64(1e9)+int64(serials[i]), 0).UTC(),
			DocSHA256: fmt.Sprintf("%064x", serials[i])}
	}
	st := func(c *CrashFS) *channel.FileStore {
		return &channel.FileStore{FS: c, Path: "/data/channel/state.json"}
	}
	step := func(c *CrashFS, i int) error { return st(c).Save(state(i)) }
	check := func(c *CrashFS, cut int) error {
		got, err := st(c).Load()
		if err != nil {
			return fmt.Errorf("channel state unreadable after the cut: %w", err)
		}
		if (cut == 0 && got == channel.State{}) || got == state(cut) || (cut > 0 && got == state(cut-1)) {
			return nil
		}
		return fmt.Errorf("channel state serial %d after a cut in save %d (of serial %d)", got.Serial, cut, serials[cut])
	}
	n := sweep(t, len(serials), mkdata(t), step, check)
	t.Logf("channel serial: %d cut points, 0 violations", n)
}

// TestPowerCutChannelOutbox: a report spooled (Add returned) stays spooled
// across a cut, and a cut in a later Add neither loses nor doubles one.
func TestPowerCutChannelOutbox(t *testing.T) {
	// steps: spool r0..r4, and r1 a second time (a no-op by id)
	ops := []string{"r0", "r1", "r2", "r1", "r3", "r4"}
	ob := func(c *CrashFS) *channel.Outbox { return &channel.Outbox{FS: c, Path: "/data/channel/outbox.json"} }
	step := func(c *CrashFS, i int) error {
		return ob(c).Add(channel.Report{ID: ops[i], Result: "success", Time: time.Unix(int64(1e9+i), 0).UTC()})
	}
	want := func(n int) []string { // pending ids after the first n steps
		var ids []string
		for _, id := range ops[:n] {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		return ids
	}
	check := func(c *CrashFS, cut int) error {
		rs, err := ob(c).Pending()
		if err != nil {
			return fmt.Errorf("outbox unreadable after the cut: %w", err)
		}
		var got []string
		for _, r := range rs {
			got = append(got, r.ID)
		}
		if slices.Equal(got, want(cut)) || slices.Equal(got, want(cut+1)) {
			return nil
		}
		return fmt.Errorf("outbox holds %v after a cut in step %d, want %v or %v", got, cut, want(cut), want(cut+1))
	}
	n := sweep(t, len(ops), mkdata(t), step, check)
	t.Logf("channel outbox: %d cut points, 0 violations", n)
}
