package daemon

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/otadev/otad/internal/dbusapi"
	"github.com/otadev/otad/internal/journal"
	"github.com/otadev/otad/internal/privbus"
	"github.com/otadev/otad/internal/raucapi"
)

// These tests drive otad with Debian's rauc package (1.8, unmodified) over
// a private system bus that runs the shipped policy files.

const raucBin = "/usr/bin/rauc"

// rig is otad serving both interfaces on a private bus.
type rig struct {
	t    *testing.T
	b    *board
	d    *Daemon
	addr string
	dir  string // world-readable scratch (bundles, cwd of clients)
	otad *dbusapi.Client
}

// shippedPolicies are the two policy files an image installs, in the
// order given; dbus-daemon reads includedir files in an order we do not
// control, so the tests run both orders.
func shippedPolicies(t *testing.T, raucFirst bool) string {
	t.Helper()
	var inc []string
	for _, f := range []string{"../../systemd/io.otad.Update1.conf", "../../systemd/de.pengutronix.rauc.conf"} {
		abs, err := filepath.Abs(f)
		must(t, err)
		_, err = os.Stat(abs)
		must(t, err)
		inc = append(inc, privbus.Include(abs))
	}
	if raucFirst {
		inc[0], inc[1] = inc[1], inc[0]
	}
	return strings.Join(inc, "\n")
}

// openPolicy lets anyone call anything: only otad's in-process check is
// left between a caller and the engine.
const openPolicy = `<policy user="root"><allow own="io.otad.Update1"/><allow own="de.pengutronix.rauc"/></policy>
<policy context="default"><allow send_destination="io.otad.Update1"/><allow send_destination="de.pengutronix.rauc"/></policy>`

func newRig(t *testing.T, policy string) *rig {
	t.Helper()
	if _, err := os.Stat(raucBin); err != nil {
		t.Skipf("%s not installed (make deps): %v", raucBin, err)
	}
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Skip("dbus-daemon not installed")
	}
	dir, err := os.MkdirTemp("", "otad-rauc-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	bus, err := privbus.Start(context.Background(), dir, policy)
	must(t, err)
	t.Cleanup(func() {
		bus.Stop()
		if t.Failed() {
			t.Logf("dbus-daemon stderr:\n%s", bus.Stderr())
		}
	})
	sd := t.TempDir()
	a, bb := filepath.Join(sd, "a.img"), filepath.Join(sd, "b.img")
	for _, p := range []string{a, bb} {
		must(t, os.WriteFile(p, make([]byte, 4<<20), 0o644))
	}
	r := &rig{t: t, b: newBoard(t, a, bb, "file"), addr: bus.Address, dir: dir}
	r.b.cfg.Compat.RaucDBus = true
	return r
}

// start runs the daemon on the bus and waits until both names are owned.
// The returned stop (also run at cleanup) ends it and waits until both
// names are released, so a following start cannot be mistaken for ready.
func (r *rig) start() (stop func()) {
	t := r.t
	t.Helper()
	r.d = r.b.daemon()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunWith(ctx, r.d, ServeBus(r.addr)) }()
	conn, err := dbus.Connect(r.addr)
	must(t, err)
	owned := func() (bool, bool) {
		var a, b bool
		e1 := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, dbusapi.BusName).Store(&a)
		e2 := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, raucapi.BusName).Store(&b)
		return a && e1 == nil, b && e2 == nil
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			defer conn.Close()
			if r.otad != nil {
				r.otad.Close()
				r.otad = nil
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("daemon: %v", err)
			}
			for deadline := time.Now().Add(30 * time.Second); ; {
				if a, b := owned(); !a && !b {
					return
				}
				if time.Now().After(deadline) {
					t.Fatal("names still owned after the daemon stopped")
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	t.Cleanup(stop)
	// Readiness, not speed: the bound only turns a hang into a failure.
	for deadline := time.Now().Add(30 * time.Second); ; {
		a, b := owned()
		if a && b {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("daemon ended before owning both names: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("names not owned: %s %v, %s %v", dbusapi.BusName, a, raucapi.BusName, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.otad, err = dbusapi.Dial(context.Background(), r.addr)
	must(t, err)
	return stop
}

// run executes a program as root, or as nobody (uid/gid 65534), with the
// private bus as the system bus. It returns the combined output and the
// exit status.
func (r *rig) run(nobody bool, name string, args ...string) (string, int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = []string{"DBUS_SYSTEM_BUS_ADDRESS=" + r.addr, "PATH=/usr/bin:/bin", "LANG=C.UTF-8"}
	cmd.Dir = r.dir
	if nobody {
		if os.Geteuid() != 0 {
			r.t.Skip("needs root to run a client as another uid")
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		r.t.Fatalf("%s %v: no answer within 2 minutes\n%s", name, args, out.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatalf("%s: %v", name, err)
	}
	return out.String(), code
}

func (r *rig) rauc(args ...string) string {
	r.t.Helper()
	out, code := r.run(false, raucBin, args...)
	r.t.Logf("rauc %s → exit %d\n%s", strings.Join(args, " "), code, out)
	if code != 0 {
		r.t.Fatalf("rauc %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// raucStatus is what rauc 1.8 prints for status --detailed --output-format=json.
type raucStatus struct {
	Compatible  string                      `json:"compatible"`
	Booted      string                      `json:"booted"`
	BootPrimary string                      `json:"boot_primary"`
	Slots       []map[string]raucStatusSlot `json:"slots"`
}

type raucStatusSlot struct {
	Class      string `json:"class"`
	Device     string `json:"device"`
	Bootname   string `json:"bootname"`
	State      string `json:"state"`
	BootStatus string `json:"boot_status"`
	SlotStatus *struct {
		Bundle struct {
			Compatible string `json:"compatible"`
			Version    string `json:"version"`
		} `json:"bundle"`
		Checksum *struct {
			SHA256 string `json:"sha256"`
		} `json:"checksum"`
		Installed *struct {
			Timestamp string `json:"timestamp"`
		} `json:"installed"`
		Status string `json:"status"`
	} `json:"slot_status"`
}

func (r *rig) status() (raucStatus, map[string]raucStatusSlot) {
	r.t.Helper()
	out := r.rauc("status", "--detailed", "--output-format=json")
	var st raucStatus
	if err := json.Unmarshal([]byte(lastLine(out)), &st); err != nil {
		r.t.Fatalf("rauc status output: %v\n%s", err, out)
	}
	slots := map[string]raucStatusSlot{}
	for _, m := range st.Slots {
		for name, s := range m {
			slots[name] = s
		}
	}
	return st, slots
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// otadSlots is what otad's own API reports: slot → state.
func (r *rig) otadSlots() map[string]string {
	r.t.Helper()
	slots, err := r.otad.Slots(context.Background())
	must(r.t, err)
	out := map[string]string{}
	for _, s := range slots {
		out[s.Name] = fmt.Sprint(s.Props["state"].Value())
	}
	return out
}

func (r *rig) otadStatus() dbusapi.Status {
	r.t.Helper()
	st, err := r.otad.Status(context.Background())
	must(r.t, err)
	return st
}

// copyToWorld copies a bundle where an unprivileged client can see it.
func (r *rig) copyToWorld(p string) string {
	r.t.Helper()
	in, err := os.Open(p)
	must(r.t, err)
	defer in.Close()
	dst := filepath.Join(r.dir, filepath.Base(p))
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	must(r.t, err)
	_, err = io.Copy(out, in)
	must(r.t, err)
	must(r.t, out.Close())
	return dst
}

// TestRAUCClientDrivesOtad: rauc status, install (waiting for Completed)
// and the three marks, each checked against what otad's own API reports.
func TestRAUCClientDrivesOtad(t *testing.T) {
	r := newRig(t, shippedPolicies(t, false))
	// The booted slot starts recorded bad, as after `otactl mark-bad A`
	// while B ran and an operator pointing U-Boot back at A by hand: the
	// state in which mark-good booted changes something.
	j, err := journal.New(r.b.cfg.DataDir)
	must(t, err)
	must(t, j.UpdateSlot("A", func(s *journal.SlotRecord) { s.State, s.Reason = journal.SlotBad, "marked bad by request" }))
	r.start()

	st, slots := r.status()
	if st.Compatible != "test-board" || st.Booted != "A" || st.BootPrimary != "rootfs.0" || len(slots) != 2 {
		t.Fatalf("rauc status: %+v", st)
	}
	if s := slots["rootfs.0"]; s.State != "booted" || s.BootStatus != "bad" || s.Class != "rootfs" || s.Bootname != "A" {
		t.Fatalf("rootfs.0: %+v", s)
	}
	if s := slots["rootfs.1"]; s.State != "inactive" || s.BootStatus != "good" || s.Bootname != "B" {
		t.Fatalf("rootfs.1: %+v", s)
	}
	if got := r.otadSlots(); got["A"] != "bad" {
		t.Fatalf("otad before mark-good: %v", got)
	}
	// The readable form finds the booted slot by bootname.
	if out := r.rauc("status"); !strings.Contains(out, "Booted from: rootfs.0 (A)") || !strings.Contains(out, "Activated: rootfs.0 (A)") {
		t.Fatalf("rauc status:\n%s", out)
	}

	out := r.rauc("status", "mark-good", "booted")
	if !strings.Contains(out, "marked slot rootfs.0 as good") {
		t.Fatalf("mark-good booted: %s", out)
	}
	if got := r.otadSlots(); got["A"] != "active" {
		t.Fatalf("otad after mark-good booted: %v (want A active)", got)
	}

	bundlePath := r.copyToWorld(r.b.bundle("2.0", 1, img(true, 7, 1<<20)))
	out = r.rauc("install", bundlePath)
	if !strings.Contains(out, "succeeded") {
		t.Fatalf("rauc install: %s", out)
	}
	if ost := r.otadStatus(); ost.Operation != "pending-reboot" {
		t.Fatalf("otad after rauc install: %+v", ost)
	}
	st, slots = r.status()
	s1 := slots["rootfs.1"]
	if st.BootPrimary != "rootfs.1" || s1.SlotStatus == nil || s1.SlotStatus.Bundle.Version != "2.0" ||
		s1.SlotStatus.Bundle.Compatible != "test-board" || s1.SlotStatus.Checksum == nil || len(s1.SlotStatus.Checksum.SHA256) != 64 ||
		s1.SlotStatus.Installed == nil || s1.SlotStatus.Status != "ok" {
		t.Fatalf("rauc status after install: primary %q, rootfs.1 %+v", st.BootPrimary, s1.SlotStatus)
	}
	if got := r.otadSlots(); got["B"] != "pending" {
		t.Fatalf("otad after install: %v", got)
	}

	r.rauc("status", "mark-bad", "other")
	if got := r.otadSlots(); got["B"] != "bad" {
		t.Fatalf("otad after mark-bad other: %v", got)
	}
	if ost := r.otadStatus(); ost.Operation != "idle" {
		t.Fatalf("otad after mark-bad other: %+v", ost)
	}
	st, slots = r.status()
	if st.BootPrimary != "rootfs.0" || slots["rootfs.1"].BootStatus != "bad" {
		t.Fatalf("rauc status after mark-bad other: %+v %+v", st, slots["rootfs.1"])
	}
	// otad refuses to activate a slot it holds bad, and says why.
	if out, code := r.run(false, raucBin, "status", "mark-active", "other"); code == 0 || !strings.Contains(out, "no verified image") {
		t.Fatalf("mark-active on a bad slot: exit %d\n%s", code, out)
	}

	// By RAUC's slot name this time.
	if out := r.rauc("status", "mark-good", "rootfs.1"); !strings.Contains(out, "marked slot rootfs.1 as good") {
		t.Fatalf("mark-good rootfs.1: %s", out)
	}
	if got := r.otadSlots(); got["B"] != "good" {
		t.Fatalf("otad after mark-good rootfs.1: %v", got)
	}
	if out, code := r.run(false, raucBin, "status", "mark-good", "rootfs.7"); code == 0 || !strings.Contains(out, `"rootfs.7" (want booted, other, rootfs.0 or rootfs.1)`) {
		t.Fatalf("mark-good of an unknown slot: exit %d\n%s", code, out)
	}
	out = r.rauc("status", "mark-active", "other")
	if !strings.Contains(out, "marked slot rootfs.1 as active") {
		t.Fatalf("mark-active other: %s", out)
	}
	if got, ost := r.otadSlots(), r.otadStatus(); got["B"] != "pending" || ost.Operation != "pending-reboot" {
		t.Fatalf("otad after mark-active other: %v %+v", got, ost)
	}
	if st, _ = r.status(); st.BootPrimary != "rootfs.1" {
		t.Fatalf("rauc status after mark-active other: %+v", st)
	}
}

// TestRAUCUnauthorizedRefused: an unprivileged uid may read but neither
// install nor mark, whether the bus policy stops it (both include orders of
// the shipped files) or, with an open bus, otad's in-process check.
func TestRAUCUnauthorizedRefused(t *testing.T) {
	for _, c := range []struct {
		name   string
		policy func(t *testing.T) string
		want   []string // any of these in the client's output
	}{
		{"shipped policy, otad file first", func(t *testing.T) string { return shippedPolicies(t, false) }, []string{"AccessDenied", "Rejected send message"}},
		{"shipped policy, rauc file first", func(t *testing.T) string { return shippedPolicies(t, true) }, []string{"AccessDenied", "Rejected send message"}},
		{"open bus, in-process check", func(*testing.T) string { return openPolicy }, []string{"uid 65534 is neither root nor in group"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, c.policy(t))
			r.start()
			bundlePath := r.copyToWorld(r.b.bundle("2.0", 1, img(true, 7, 1<<20)))

			// Readers stay open to anyone, on both interfaces.
			out, code := r.run(true, raucBin, "status", "--output-format=json")
			var st raucStatus
			if code != 0 || json.Unmarshal([]byte(lastLine(out)), &st) != nil || st.Booted != "A" {
				t.Fatalf("rauc status as nobody: exit %d\n%s", code, out)
			}
			if out, code := r.run(true, "busctl", "--address="+r.addr, "call", dbusapi.BusName, string(dbusapi.ObjectPath), dbusapi.Interface, "GetSlotStatus"); code != 0 {
				t.Fatalf("io.otad.Update1 GetSlotStatus as nobody: exit %d\n%s", code, out)
			}

			// Info and InspectBundle name a local path only for root and
			// group otad (otad would open it with its own rights; others
			// may name an https URL), and fetch arguments would make otad
			// present its own key files: those need authorization too.
			busctlAs := func(nobody bool, args ...string) (string, int) {
				return r.run(nobody, "busctl", append([]string{"--address=" + r.addr, "call", raucapi.BusName, "/", raucapi.Interface}, args...)...)
			}
			busctl := func(args ...string) (string, int) { return busctlAs(true, args...) }
			if out, code := busctlAs(false, "Info", "s", bundlePath); code != 0 || !strings.Contains(out, `ss "test-board" "2.0"`) {
				t.Fatalf("Info as root: exit %d\n%s", code, out)
			}
			if out, code := busctlAs(false, "InspectBundle", "sa{sv}", bundlePath, "0"); code != 0 || !strings.Contains(out, `"version" s "2.0"`) {
				t.Fatalf("InspectBundle as root: exit %d\n%s", code, out)
			}
			if out, code := busctl("Info", "s", bundlePath); code == 0 || !strings.Contains(out, "may name only an https URL") {
				t.Fatalf("Info of a path as nobody: exit %d\n%s", code, out)
			}
			if out, code := busctl("InspectBundle", "sa{sv}", bundlePath, "0"); code == 0 || !strings.Contains(out, "may name only an https URL") {
				t.Fatalf("InspectBundle of a path as nobody: exit %d\n%s", code, out)
			}
			if out, code := busctl("InspectBundle", "sa{sv}", bundlePath, "1", "tls-key", "s", "/etc/otad/client.key"); code == 0 || !strings.Contains(out, "neither root nor in group") {
				t.Fatalf("InspectBundle with tls-key as nobody: exit %d\n%s", code, out)
			}

			refused := func(what string, args ...string) {
				t.Helper()
				out, code := r.run(true, raucBin, args...)
				ok := false
				for _, w := range c.want {
					ok = ok || strings.Contains(out, w)
				}
				if code == 0 || !ok {
					t.Errorf("%s as nobody: exit %d, want a refusal naming one of %q\n%s", what, code, c.want, out)
				}
			}
			refused("rauc install", "install", bundlePath)
			refused("rauc status mark-bad other", "status", "mark-bad", "other")
			refused("rauc status mark-active booted", "status", "mark-active", "booted")
			if got, ost := r.otadSlots(), r.otadStatus(); got["B"] != "" || ost.Operation != "idle" {
				t.Fatalf("otad after refused calls: %v %+v", got, ost)
			}
		})
	}
}

// rauc115 is RAUC 1.15's de.pengutronix.rauc.Installer member by member,
// written from reading src/de.pengutronix.rauc.Installer.xml at tag v1.15
// of github.com/rauc/rauc (read with the fetch tool) and the "D-Bus API"
// section of its docs/reference.rst. A method's signature is "in→out".
// Newer RAUC (after 1.15) adds the property SystemVersion; otad follows
// 1.15 and does not serve it.
var rauc115 = []struct{ member, kind, sig string }{
	{"Install", "method", "s→"},
	{"InstallBundle", "method", "sa{sv}→"},
	{"Info", "method", "s→ss"},
	{"InspectBundle", "method", "sa{sv}→a{sv}"},
	{"Mark", "method", "ss→ss"},
	{"GetSlotStatus", "method", "→a(sa{sv})"},
	{"GetArtifactStatus", "method", "→aa{sv}"},
	{"GetPrimary", "method", "→s"},
	{"Operation", "property", "s"},
	{"LastError", "property", "s"},
	{"Progress", "property", "(isi)"},
	{"Compatible", "property", "s"},
	{"Variant", "property", "s"},
	{"BootSlot", "property", "s"},
	{"Completed", "signal", "i"},
}

// deliberatelyAbsent lists members of rauc115 otad does not serve, with the
// reason. Empty: otad serves every one (GetArtifactStatus answers an empty
// list, Variant is "": otad has no artifact repositories and no variants).
var deliberatelyAbsent = map[string]string{}

// TestRAUCIntrospectionMatchesRAUC115 reads the running service with
// busctl introspect and compares it member by member with rauc115.
func TestRAUCIntrospectionMatchesRAUC115(t *testing.T) {
	r := newRig(t, shippedPolicies(t, false))
	r.start()
	out, code := r.run(false, "busctl", "--address="+r.addr, "introspect", "--no-pager", raucapi.BusName, "/", raucapi.Interface)
	if code != 0 {
		t.Fatalf("busctl introspect: exit %d\n%s", code, out)
	}
	served := map[string]string{} // member → "kind sig"
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], ".") {
			continue
		}
		name, kind, sig := f[0][1:], f[1], f[2]
		if sig == "-" {
			sig = ""
		}
		if kind == "method" {
			res := f[3]
			if res == "-" {
				res = ""
			}
			sig += "→" + res
		}
		served[name] = kind + " " + sig
	}
	for _, m := range rauc115 {
		got, ok := served[m.member]
		delete(served, m.member)
		if why, absent := deliberatelyAbsent[m.member]; absent {
			if ok {
				t.Errorf("%s is listed as absent (%s) but served as %s", m.member, why, got)
			}
			continue
		}
		if want := m.kind + " " + m.sig; got != want {
			t.Errorf("%s: served %q, RAUC 1.15 has %q", m.member, got, want)
		}
	}
	for name, got := range served {
		t.Errorf("%s (%s) is served but not in RAUC 1.15's interface", name, got)
	}
	if t.Failed() {
		t.Logf("busctl introspect:\n%s", out)
	}
}

// busctl runs busctl as root on the rig's bus.
func (r *rig) busctl(args ...string) (string, int) {
	r.t.Helper()
	return r.run(false, "busctl", append([]string{"--address=" + r.addr}, args...)...)
}

// TestRAUCInstallBundleArgs: http-headers and transaction-id are honoured
// (the headers reach the bundle server; the id is reported as
// installed.transaction), and arguments that would skip a check, or that
// otad does not know, are refused before anything starts.
func TestRAUCInstallBundleArgs(t *testing.T) {
	r := newRig(t, shippedPolicies(t, false))
	r.start()
	bundlePath := r.b.bundle("3.0", 1, img(true, 9, 1<<20))
	var sawAuth atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") != "Bearer tok-123" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		sawAuth.Add(1)
		http.ServeFile(w, req, bundlePath)
	}))
	defer srv.Close()
	url := srv.URL + "/update.otab"
	call := func(args ...string) (string, int) {
		return r.busctl(append([]string{"call", raucapi.BusName, "/", raucapi.Interface, "InstallBundle", "sa{sv}", url}, args...)...)
	}

	conn, err := dbus.Connect(r.addr)
	must(t, err)
	defer conn.Close()
	obj := conn.Object(raucapi.BusName, "/")
	for _, c := range []struct {
		args map[string]dbus.Variant
		says string
	}{
		{map[string]dbus.Variant{"ignore-compatible": dbus.MakeVariant(true)}, "ignore-compatible=true"},
		{map[string]dbus.Variant{"ignore-version-limit": dbus.MakeVariant(true)}, "ignore-version-limit=true"},
		{map[string]dbus.Variant{"tls-no-verify": dbus.MakeVariant(true)}, "tls-no-verify=true"},
		{map[string]dbus.Variant{"require-manifest-hash": dbus.MakeVariant("abc")}, "require-manifest-hash"},
		{map[string]dbus.Variant{"handler-args": dbus.MakeVariant("x")}, `unsupported key "handler-args"`},
		{map[string]dbus.Variant{"http-headers": dbus.MakeVariant([]string{"Bearer tok-123"})}, "http-headers[0]"},
	} {
		err := obj.Call(raucapi.Interface+".InstallBundle", 0, url, c.args).Err
		var de dbus.Error
		if !errors.As(err, &de) || de.Name != dbusapi.ErrInvalidArgs || !strings.Contains(fmt.Sprint(de.Body...), c.says) {
			t.Errorf("InstallBundle %v: %v, want %s saying %q", c.args, err, dbusapi.ErrInvalidArgs, c.says)
		}
		if err != nil && strings.Contains(err.Error(), "tok-123") {
			t.Errorf("InstallBundle %v: the error shows the header value: %v", c.args, err)
		}
	}
	if sawAuth.Load() != 0 || r.otadStatus().Operation != "idle" {
		t.Fatal("a refused InstallBundle started something")
	}

	wait := func(args ...string) (int, string) {
		t.Helper()
		ch, stop := r.d.Engine.Subscribe()
		defer stop()
		if out, code := call(args...); code != 0 {
			t.Fatalf("InstallBundle %v: exit %d\n%s", args, code, out)
		}
		for ev := range ch {
			if ev.Kind == "completed" {
				r.d.Engine.Wait()
				return ev.Result, ev.Message
			}
		}
		t.Fatal("no completed event")
		return 0, ""
	}
	// Without the header the server refuses the download.
	if res, msg := wait("0"); res == 0 || !strings.Contains(msg, "401") {
		t.Fatalf("install without the header: result %d %q", res, msg)
	}
	if res, msg := wait("2", "http-headers", "as", "1", "Authorization: Bearer tok-123", "transaction-id", "s", "dad3289a-7de1-4ad2-931e-fb827edc6496"); res != 0 {
		t.Fatalf("install with the header: result %d %q", res, msg)
	}
	if sawAuth.Load() == 0 {
		t.Fatal("the bundle server never saw the header")
	}
	out, code := r.busctl("--json=short", "call", raucapi.BusName, "/", raucapi.Interface, "GetSlotStatus")
	if code != 0 {
		t.Fatalf("GetSlotStatus: exit %d\n%s", code, out)
	}
	var reply struct {
		Data [][][]json.RawMessage `json:"data"`
	}
	must(t, json.Unmarshal([]byte(out), &reply))
	found := false
	for _, e := range reply.Data[0] {
		var name string
		var props map[string]struct{ Data any }
		must(t, json.Unmarshal(e[0], &name))
		must(t, json.Unmarshal(e[1], &props))
		if name == "rootfs.1" {
			found = props["installed.transaction"].Data == "dad3289a-7de1-4ad2-931e-fb827edc6496" && props["bundle.version"].Data == "3.0"
		}
	}
	if !found {
		t.Fatalf("rootfs.1 does not report the install's transaction-id and version:\n%s", out)
	}
}

// writeTestPKI writes a throwaway CA and a client certificate and key
// (PEM files, as a gateway has them) and returns the server's TLS
// certificate for 127.0.0.1 and the CA pool that verifies clients.
func writeTestPKI(t *testing.T, dir string) (caFile, certFile, keyFile string, server tls.Certificate, clients *x509.CertPool) {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(t, err)
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rauc test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(t, err)
	ca, err := x509.ParseCertificate(caDER)
	must(t, err)
	issue := func(serial int64, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		must(t, err)
		return der, k
	}
	srvDER, srvKey := issue(2, x509.ExtKeyUsageServerAuth)
	cliDER, cliKey := issue(3, x509.ExtKeyUsageClientAuth)
	cliKeyDER, err := x509.MarshalPKCS8PrivateKey(cliKey)
	must(t, err)
	clients = x509.NewCertPool()
	clients.AddCert(ca)
	return write("ca.pem", "CERTIFICATE", caDER), write("client.pem", "CERTIFICATE", cliDER),
		write("client.key", "PRIVATE KEY", cliKeyDER),
		tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}, clients
}

// TestRAUCInstallBundleTLSArgs: tls-ca, tls-cert and tls-key are used for
// that install's download (a server otad's [fetch] knows nothing about,
// requiring a client certificate).
func TestRAUCInstallBundleTLSArgs(t *testing.T) {
	r := newRig(t, shippedPolicies(t, false))
	r.start()
	bundlePath := r.b.bundle("4.0", 1, img(true, 11, 1<<20))
	caFile, certFile, keyFile, server, clients := writeTestPKI(t, t.TempDir())
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		http.ServeFile(w, req, bundlePath)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{server}, ClientCAs: clients, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	srv.StartTLS()
	defer srv.Close()
	url := srv.URL + "/update.otab"
	install := func(args ...string) (int, string) {
		t.Helper()
		ch, stop := r.d.Engine.Subscribe()
		defer stop()
		out, code := r.busctl(append([]string{"call", raucapi.BusName, "/", raucapi.Interface, "InstallBundle", "sa{sv}", url}, args...)...)
		if code != 0 {
			t.Fatalf("InstallBundle %v: exit %d\n%s", args, code, out)
		}
		for ev := range ch {
			if ev.Kind == "completed" {
				r.d.Engine.Wait()
				return ev.Result, ev.Message
			}
		}
		t.Fatal("no completed event")
		return 0, ""
	}
	if res, msg := install("0"); res == 0 || !strings.Contains(msg, "certificate") {
		t.Fatalf("install without tls-ca: result %d %q, want an unknown-authority failure", res, msg)
	}
	if res, msg := install("1", "tls-ca", "s", caFile); res == 0 || strings.Contains(msg, "unknown authority") {
		t.Fatalf("install with tls-ca but no client certificate: result %d %q, want the server's refusal", res, msg)
	} else {
		t.Logf("without a client certificate: %s", msg)
	}
	if res, msg := install("3", "tls-ca", "s", caFile, "tls-cert", "s", certFile, "tls-key", "s", keyFile); res != 0 {
		t.Fatalf("install with tls-ca, tls-cert, tls-key: result %d %q", res, msg)
	}
	if got := r.otadSlots(); got["B"] != "pending" {
		t.Fatalf("otad after the TLS install: %v", got)
	}
}

// TestRAUCMarkGoodDuringTrial: RAUC clients (Home Assistant OS Supervisor,
// Edgehog) mark the booted slot good after a boot. On otad the health
// check decides a trial boot: while it runs, Mark good booted is refused
// as Busy and says so; once otad has committed, the same call succeeds.
func TestRAUCMarkGoodDuringTrial(t *testing.T) {
	r := newRig(t, shippedPolicies(t, false))
	stop := r.start()
	r.rauc("install", r.copyToWorld(r.b.bundle("2.0", 1, img(true, 21, 1<<20))))
	stop()
	if s := r.b.powerOn(); s != "B" {
		t.Fatalf("booted %s", s)
	}
	// The health check waits for a flag, so the trial stays in its
	// confirmation while the client calls.
	flag := r.b.path("healthy")
	orig, err := os.ReadFile(r.b.path("check.sh"))
	must(t, err)
	must(t, os.WriteFile(r.b.path("check.sh"), append([]byte("while [ ! -e "+flag+" ]; do sleep 0.05; done\n"), orig...), 0o644))
	r.start()
	if st := r.otadStatus(); st.Operation != "confirming" || st.BootSlot != "B" {
		t.Fatalf("otad in the trial boot: %+v", st)
	}
	out, code := r.run(false, raucBin, "status", "mark-good", "booted")
	if code == 0 || !strings.Contains(out, "health check is confirming the trial boot") {
		t.Fatalf("mark-good booted during the confirmation: exit %d\n%s", code, out)
	}
	must(t, os.WriteFile(flag, nil, 0o644))
	for deadline := time.Now().Add(time.Minute); ; {
		st := r.otadStatus()
		if st.Operation == "idle" && !st.TrialBoot {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trial not committed: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := r.rauc("status", "mark-good", "booted"); !strings.Contains(out, "marked slot rootfs.1 as good") {
		t.Fatalf("mark-good booted after the commit: %s", out)
	}
	if got := r.otadSlots(); got["B"] != "active" {
		t.Fatalf("otad after the commit: %v", got)
	}
}

// TestRAUCNameTaken: with RAUC's own service on the bus, otad logs that it
// cannot serve the compat face and keeps serving io.otad.Update1; the
// other owner keeps the name.
func TestRAUCNameTaken(t *testing.T) {
	r := newRig(t, openPolicy)
	other, err := dbus.Connect(r.addr)
	must(t, err)
	defer other.Close()
	reply, err := other.RequestName(raucapi.BusName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("claim %s: %v %v", raucapi.BusName, reply, err)
	}
	r.start()
	if st := r.otadStatus(); st.BootSlot != "A" {
		t.Fatalf("io.otad.Update1 with the RAUC name taken: %+v", st)
	}
	var owner string
	must(t, other.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, raucapi.BusName).Store(&owner))
	if owner != other.Names()[0] {
		t.Fatalf("%s owned by %s, want the first claimant %s", raucapi.BusName, owner, other.Names()[0])
	}
	// otad's connection does not answer RAUC's interface under its own
	// unique name either.
	var otadName string
	must(t, other.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, "io.otad.Update1").Store(&otadName))
	var compatible dbus.Variant
	err = other.Object(otadName, "/").Call("org.freedesktop.DBus.Properties.Get", 0, raucapi.Interface, "Compatible").Store(&compatible)
	if err == nil {
		t.Fatalf("otad answers %s at / without owning the name: %v", raucapi.Interface, compatible)
	}
}
