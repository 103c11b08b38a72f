// Package sdsystest runs a stand-in for systemd's manager
// (org.freedesktop.systemd1) on a private dbus-daemon (internal/privbus),
// so the unit start-and-wait path is tested through a real bus and
// go-systemd's real client. It is for tests only; it keeps no state on disk
// beyond the bus's temporary directory.
package sdsystest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/otadev/otad/internal/privbus"
	"github.com/otadev/otad/internal/sdsys"
)

// policy lets the fake own systemd's name and anyone call it.
const policy = `  <policy context="default">
    <allow own="org.freedesktop.systemd1"/>
    <allow send_destination="org.freedesktop.systemd1"/>
  </policy>`

// Systemd answers StartUnit with a job path and later emits JobRemoved
// with the result configured for the unit; ListUnitsFiltered reports the
// configured failed units.
type Systemd struct {
	// Address is the private bus's address.
	Address string
	conn    *godbus.Conn

	mu      sync.Mutex
	results map[string]string // unit → job result; missing: the job never finishes; "no-such-unit": StartUnit fails
	failed  []string
	nextJob uint32
	started []string
}

// Start runs a private bus with the fake systemd on it; both end in
// t.Cleanup (the bus by its PID).
func Start(t testing.TB, results map[string]string, failed ...string) *Systemd {
	t.Helper()
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "otad-sd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bus, err := privbus.Start(context.Background(), dir, policy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Stop)
	conn, err := godbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := &Systemd{Address: bus.Address, conn: conn, results: results, failed: failed}
	if err := conn.Export(manager{f}, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName("org.freedesktop.systemd1", godbus.NameFlagDoNotQueue)
	if err != nil || reply != godbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own org.freedesktop.systemd1: %v %v", reply, err)
	}
	return f
}

// Units is an sdsys.Units talking to this fake.
func (f *Systemd) Units() *sdsys.Units { return UnitsAt(f.Address) }

// UnitsAt is an sdsys.Units talking to whatever serves systemd's name at addr.
func UnitsAt(addr string) *sdsys.Units {
	return &sdsys.Units{Dial: func(ctx context.Context) (*sdbus.Conn, error) {
		return sdbus.NewConnection(func() (*godbus.Conn, error) { return godbus.Connect(addr, godbus.WithContext(ctx)) })
	}}
}

// StartedUnits lists the StartUnit calls so far as "unit mode".
func (f *Systemd) StartedUnits() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.started...)
}

type unitStatus struct {
	Name, Description, LoadState, ActiveState, SubState, Followed string
	Path                                                          godbus.ObjectPath
	JobID                                                         uint32
	JobType                                                       string
	JobPath                                                       godbus.ObjectPath
}

// manager is the exported object; only its methods become D-Bus methods.
type manager struct{ f *Systemd }

func (m manager) StartUnit(name, mode string) (godbus.ObjectPath, *godbus.Error) {
	f := m.f
	f.mu.Lock()
	f.nextJob++
	id := f.nextJob
	f.started = append(f.started, name+" "+mode)
	res, finishes := f.results[name]
	f.mu.Unlock()
	if res == "no-such-unit" {
		return "", godbus.NewError("org.freedesktop.systemd1.NoSuchUnit", []any{"Unit " + name + " not found."})
	}
	job := godbus.ObjectPath(fmt.Sprintf("/org/freedesktop/systemd1/job/%d", id))
	if finishes {
		go func() {
			// After the reply, like systemd; go-systemd copes with either order.
			time.Sleep(5 * time.Millisecond)
			_ = f.conn.Emit("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager.JobRemoved", id, job, name, res)
		}()
	}
	return job, nil
}

func (m manager) ListUnitsFiltered(states []string) ([]unitStatus, *godbus.Error) {
	f := m.f
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []unitStatus
	for _, s := range states {
		if s != "failed" {
			continue
		}
		for _, u := range f.failed {
			out = append(out, unitStatus{Name: u, Description: u, LoadState: "loaded", ActiveState: "failed", SubState: "failed",
				Path: godbus.ObjectPath("/org/freedesktop/systemd1/unit/" + sdbus.PathBusEscape(u)), JobPath: "/"})
		}
	}
	return out, nil
}
