package powercut

import (
	"context"
	"strings"
	"testing"

	"github.com/otadev/otad/internal/floor"
	"github.com/otadev/otad/internal/slot"
	"github.com/otadev/otad/internal/update"
)

// The campaign's checks must be able to fail: each case breaks one rule
// of the engine's boundaries on purpose and expects the board to report
// the violation it causes.

// dropPage writes everything except one page: a slot writer that loses
// data without an error.
type dropPage struct{ slot.Target }

func (t dropPage) OpenWriter(ctx context.Context, off int64) (slot.Writer, error) {
	w, err := t.Target.OpenWriter(ctx, off)
	return &dropWriter{Writer: w, off: off}, err
}

type dropWriter struct {
	slot.Writer
	off int64
}

func (w *dropWriter) Write(p []byte) (int, error) {
	const lost = 64 << 10
	if w.off <= lost && lost < w.off+int64(len(p)) {
		q := append([]byte(nil), p...)
		for i := lost - w.off; i < min(int64(len(q)), lost-w.off+pageSize); i++ {
			q[i] ^= 0x5a
		}
		p = q
	}
	n, err := w.Writer.Write(p)
	w.off += int64(n)
	return n, err
}

// noSync is a slot whose writer's Sync does nothing.
type noSync struct{ slot.Target }

func (t noSync) OpenWriter(ctx context.Context, off int64) (slot.Writer, error) {
	w, err := t.Target.OpenWriter(ctx, off)
	return noSyncWriter{w}, err
}

type noSyncWriter struct{ slot.Writer }

func (noSyncWriter) Sync() error { return nil }

// earlyFloor raises the floor to 2 whenever the engine reads it: a raise
// before any commit.
type earlyFloor struct{ floor.Floor }

func (f earlyFloor) Get() (uint64, error) {
	if err := f.Floor.Raise(2); err != nil {
		return 0, err
	}
	return f.Floor.Get()
}

// runFault runs the good cycle with a fault and returns every problem the
// board reported.
func runFault(t *testing.T, m medium, mod func(b *board) func(*update.Config), cutAt int, mode TearMode) string {
	t.Helper()
	b := newBoard(t, loadFixtures(t), m, mode, uint64(cutAt)+1)
	b.mods = append(b.mods, mod(b))
	b.dom.CutAt(cutAt)
	_, err := b.run(cycles[0])
	if err == nil {
		return ""
	}
	return err.Error() + "; " + strings.Join(b.all, "; ")
}

func TestPowerCutChecksCanFail(t *testing.T) {
	file := mediumNamed(t, "file")
	cases := []struct {
		name string
		mod  func(b *board) func(*update.Config)
		want string
	}{
		{"unverified corrupt slot gets armed", func(b *board) func(*update.Config) {
			return func(c *update.Config) {
				c.VerifyReadBack = func(context.Context, slot.Target, int64, []byte) error { return nil }
				c.OpenSlot = func(target, _ slot.Slot) (slot.Target, error) { return dropPage{b.slots[target.Name].target()}, nil }
			}
		}, "holds no complete verified image"},
		{"install writes the active slot", func(b *board) func(*update.Config) {
			return func(c *update.Config) {
				c.OpenSlot = func(_, active slot.Slot) (slot.Target, error) { return b.slots[active.Name].target(), nil }
			}
		}, "active slot A changed"},
		{"floor raised before commit", func(b *board) func(*update.Config) {
			return func(c *update.Config) { c.Floor = earlyFloor{c.Floor} }
		}, "raised above every committed image"},
	}
	for _, c := range cases {
		err := runFault(t, file, c.mod, 0, LoseUnsynced)
		if !strings.Contains(err, c.want) {
			t.Errorf("%s: run error %v, want one containing %q", c.name, err, c.want)
		}
	}

	// A slot writer whose Sync lies: the slot is armed while its image is
	// only in the volatile cache.
	err := runFault(t, file, func(b *board) func(*update.Config) {
		return func(c *update.Config) {
			c.OpenSlot = func(target, _ slot.Slot) (slot.Target, error) { return noSync{b.slots[target.Name].target()}, nil }
		}
	}, 0, LoseUnsynced)
	if !strings.Contains(err, "not the image being installed") {
		t.Errorf("writer without sync: run error %v", err)
	}
}

func mediumNamed(t *testing.T, name string) medium {
	for _, m := range media {
		if m.name == name {
			return m
		}
	}
	t.Fatalf("no medium %q", name)
	return medium{}
}
