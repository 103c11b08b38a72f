package health

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// startBus runs a private dbus-daemon with a permissive session-like
// config and returns its address. The daemon is killed by PID in Cleanup.
func startBus(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Fatalf("dbus-daemon not installed (make deps): %v", err)
	}
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "otad-health-bus")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := filepath.Join(dir, "bus.conf")
	conf := fmt.Sprintf(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`, filepath.Join(dir, "bus"))
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return runDaemon(t, cfg)
}

// runDaemon starts dbus-daemon with cfg and returns the printed address.
func runDaemon(t *testing.T, cfg string) string {
	t.Helper()
	addr, err := tryDaemon(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func tryDaemon(t *testing.T, cfg string) (string, error) {
	t.Helper()
	cmd := exec.Command("dbus-daemon", "--config-file="+cfg, "--print-address", "--nofork")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // by PID: this process only
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Wait()
		return "", fmt.Errorf("dbus-daemon (pid %d) printed no address: %v\n%s", pid, err, stderr.String())
	}
	return strings.TrimSpace(line), nil
}

// fakeSystemd stands in for org.freedesktop.systemd1 on the private bus:
// StartUnit answers with a job path and later emits JobRemoved with the
// result configured for the unit; ListUnitsFiltered reports the configured
// failed units.
type fakeSystemd struct {
	conn *godbus.Conn

	mu      sync.Mutex
	results map[string]string // unit → job result; missing: the job never finishes
	failed  []string
	nextJob uint32
	started []string
}

type unitStatus struct {
	Name, Description, LoadState, ActiveState, SubState, Followed string
	Path                                                          godbus.ObjectPath
	JobID                                                         uint32
	JobType                                                       string
	JobPath                                                       godbus.ObjectPath
}

// manager is the exported object; only its methods become D-Bus methods.
type manager struct{ f *fakeSystemd }

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

func startFakeSystemd(t *testing.T, addr string, results map[string]string, failed ...string) *fakeSystemd {
	t.Helper()
	conn, err := godbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := &fakeSystemd{conn: conn, results: results, failed: failed}
	if err := conn.Export(manager{f}, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName("org.freedesktop.systemd1", godbus.NameFlagDoNotQueue)
	if err != nil || reply != godbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own org.freedesktop.systemd1: %v %v", reply, err)
	}
	return f
}

func (f *fakeSystemd) startedUnits() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.started...)
}

// dialer points go-systemd's client at the private bus.
func dialer(addr string) func() (*sdbus.Conn, error) {
	return func() (*sdbus.Conn, error) {
		return sdbus.NewConnection(func() (*godbus.Conn, error) { return godbus.Connect(addr) })
	}
}
