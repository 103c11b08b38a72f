package bootenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLockExcludesFwPrintenv: while otad holds the env lock inside an
// Update, libubootenv's fw_printenv (which takes the same flock on
// /var/lock/fw_printenv.lock while reading) must wait.
func TestLockExcludesFwPrintenv(t *testing.T) {
	p := filepath.Join(t.TempDir(), "env.img")
	if err := os.WriteFile(p, seed(t, true, "a=1"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := configFor(t, p, true)
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.LockPath = DefaultLockPath // the real one: that is the point
	s, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var done chan error
	var start time.Time
	err = Update(s, func(e *Env) error {
		cmd := exec.Command(tool(t, "fw_printenv"), "-c", cfgPath, "a")
		if err := cmd.Start(); err != nil {
			return err
		}
		start = time.Now()
		done = make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return fmt.Errorf("fw_printenv finished (%v) while otad held the lock", err)
		case <-time.After(300 * time.Millisecond):
		}
		e.Set("a", "2")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("fw_printenv after unlock: %v", err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Fatal("fw_printenv did not wait")
	}
}

func TestReadOnlyLoopDeviceIsAnError(t *testing.T) {
	dev := loopDevice(t, seed(t, true, "a=1"), 1<<20, true)
	s := openStore(t, configFor(t, dev, true))
	if e, err := s.Load(); err != nil || !e.Equal(envOf("a", "1")) {
		t.Fatalf("read-only device must still load: %v %v", e, err)
	}
	if err := s.Save(envOf("a", "2")); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Save on read-only loop device: %v, want ErrReadOnly", err)
	}
}

// TestForceRoIsClearedAndRestored fakes the sysfs force_ro switch of an
// eMMC boot partition for a real loop device.
func TestForceRoIsClearedAndRestored(t *testing.T) {
	dev := loopDevice(t, seed(t, true, "a=1"), 1<<20, false)
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	sys := t.TempDir()
	dir := filepath.Join(sys, "dev", "block", fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ro := filepath.Join(dir, "force_ro")
	if err := os.WriteFile(ro, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(configFor(t, dev, true))
	if err != nil {
		t.Fatal(err)
	}
	cfg.LockPath, cfg.SysfsRoot = "-", sys
	s, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Save(envOf("a", "2")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(ro); strings.TrimSpace(string(b)) != "1" {
		t.Fatalf("force_ro left at %q, want 1", b)
	}
	// A switch already off stays off.
	if err := os.WriteFile(ro, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(envOf("a", "3")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(ro); strings.TrimSpace(string(b)) != "0" {
		t.Fatalf("force_ro changed to %q", b)
	}
	if e := fwPrintenv(t, configFor(t, dev, true)); !e.Equal(envOf("a", "3")) {
		t.Fatalf("fw_printenv: %s", e)
	}
}

func TestDeviceErrors(t *testing.T) {
	cfg := &Config{Devices: []Device{{Path: filepath.Join(t.TempDir(), "missing"), EnvSize: 0x100}}, LockPath: "-"}
	if _, err := OpenStore(cfg); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing device: %v", err)
	}
	p := filepath.Join(t.TempDir(), "env.img")
	if err := os.WriteFile(p, make([]byte, 0x100), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(&Config{Devices: []Device{{Path: p, EnvSize: 0x100}}, LockPath: "-"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Load(); !errors.Is(err, ErrNoValidCopy) {
		t.Fatalf("blank single copy: %v", err)
	}
	big := envOf("x", strings.Repeat("y", 0x100))
	if err := s.Save(big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized env: %v", err)
	}
	if err := s.Save(envOf("bad=name", "1")); !errors.Is(err, ErrBadName) {
		t.Fatalf("bad name: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != string(make([]byte, 0x100)) {
		t.Fatal("a refused Save wrote to the device")
	}
}

// TestOneUpdateIsOneWrite counts medium writes: one Update = one copy
// written (plus, boolean scheme, the one-byte obsolete mark); no change =
// no write at all.
func TestOneUpdateIsOneWrite(t *testing.T) {
	for _, sc := range []FlagScheme{FlagsIncrement, FlagsBoolean} {
		m := newMemMedium(0x200, sc == FlagsBoolean)
		s := NewMediumStore([]Medium{m, m}, []int64{0, 0x100}, 0x100, sc)
		if err := s.Save(envOf("a", "1")); err != nil {
			t.Fatal(err)
		}
		m.writes, m.erases = 0, 0
		err := Update(s, func(e *Env) error {
			e.Set("otad_slot", "B")
			e.Set("otad_prev", "A")
			e.Set("upgrade_available", "1")
			e.Unset("a")
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		wantWrites := 1
		if sc == FlagsBoolean {
			wantWrites = 2
		}
		if m.erases != 1 || m.writes != wantWrites {
			t.Fatalf("%v: one Update did %d erases, %d writes", sc, m.erases, m.writes)
		}
		if err := Update(s, func(e *Env) error { e.Set("otad_slot", "B"); return nil }); err != nil {
			t.Fatal(err)
		}
		if m.erases != 1 || m.writes != wantWrites {
			t.Fatalf("%v: an Update that changes nothing wrote", sc)
		}
	}
}

// TestOverlappingCopiesAreRefused: two copies on the same storage whose
// write units overlap cannot be power-fail safe (writing one tears the
// other; on flash the erase wipes both), so OpenStore refuses them.
func TestOverlappingCopiesAreRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "env.img")
	if err := os.WriteFile(p, make([]byte, 0x4000), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "env-link.img")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		second string
		ok     bool
	}{
		{"same offset", p + " 0 0x2000", false},
		{"overlap", p + " 0x1000 0x2000", false},
		{"overlap through a symlink", link + " 0x1fff 0x2000", false},
		{"negative offset onto the first copy", p + " -0x4000 0x2000", false},
		{"adjacent", p + " 0x2000 0x2000", true},
	} {
		cfg, err := LoadConfig(writeConfig(t, p+" 0 0x2000", tc.second))
		if err != nil {
			t.Fatal(err)
		}
		cfg.LockPath = "-"
		s, err := OpenStore(cfg)
		if tc.ok {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			s.Close()
			continue
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "share storage") {
			t.Errorf("%s: OpenStore err = %v, want ErrConfig about shared storage", tc.name, err)
		}
		if s != nil {
			s.Close()
		}
	}
}

// TestCopiesInOneEraseSectorAreRefused: on flash a copy's write erases its
// whole sector; two copies inside one sector must be refused even though
// their bytes do not overlap.
func TestCopiesInOneEraseSectorAreRefused(t *testing.T) {
	a := &mediumArea{off: 0, size: 0x2000, sector: 0x10000, label: "a"}
	b := &mediumArea{off: 0x8000, size: 0x2000, sector: 0x10000, label: "b"}
	if err := disjoint(a, b); !errors.Is(err, ErrConfig) {
		t.Fatalf("copies in one 64 KiB sector: %v, want ErrConfig", err)
	}
	b.off = 0x10000
	if err := disjoint(a, b); err != nil {
		t.Fatalf("copies in adjacent sectors: %v", err)
	}
}

// lyingMedium reports success for writes that did not land as asked: a
// stuck bit inside the data, or a flags-byte program that is dropped.
type lyingMedium struct {
	*memMedium
	stuck     int64 // absolute offset whose bit 0 sticks at 1; -1 none
	dropFlags bool  // writes smaller than a copy (the flag program) are acknowledged but ignored
}

func (m *lyingMedium) WriteAt(p []byte, off int64) (int, error) {
	if m.dropFlags && len(p) < 0x100 {
		return len(p), nil
	}
	n, err := m.memMedium.WriteAt(p, off)
	if m.stuck >= off && m.stuck < off+int64(len(p)) {
		m.data[m.stuck] |= 1
	}
	return n, err
}

// TestReadBackCatchesBadWrites: a write the medium acknowledged but did not
// store is ErrReadBack, never a silent success, and the old environment
// stays what readers get.
func TestReadBackCatchesBadWrites(t *testing.T) {
	for _, tc := range []struct {
		name      string
		scheme    FlagScheme
		stuck     int64
		dropFlags bool
	}{
		{"stuck bit, counter", FlagsIncrement, 0x100 + 0x20, false},
		{"stuck bit, boolean", FlagsBoolean, 0x100 + 0x20, false},
		{"obsolete mark lost", FlagsBoolean, -1, true},
	} {
		m := &lyingMedium{memMedium: newMemMedium(0x200, tc.scheme == FlagsBoolean), stuck: -1}
		s := NewMediumStore([]Medium{m, m}, []int64{0, 0x100}, 0x100, tc.scheme)
		old := envOf("otad_slot", "A", "upgrade_available", "0")
		if err := s.Save(old); err != nil { // lands in copy 0
			t.Fatal(err)
		}
		m.stuck, m.dropFlags = tc.stuck, tc.dropFlags
		err := s.Save(envOf("otad_slot", "B", "upgrade_available", "1")) // copy 1
		if !errors.Is(err, ErrReadBack) {
			t.Errorf("%s: Save = %v, want ErrReadBack", tc.name, err)
			continue
		}
		if e, err := s.Load(); err != nil || !e.Equal(old) {
			t.Errorf("%s: after the failed Save readers get %v (%v), want the old environment", tc.name, e, err)
		}
	}
}
