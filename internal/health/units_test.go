package health

import (
	"bufio"
	"context"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	godbus "github.com/godbus/dbus/v5"
	"github.com/otadev/otad/internal/privbus"
)

// The unit files, the watchdog drop-in and the bus policy an image installs
// live in systemd/ at the repository root.
const unitsDir = "../../systemd"

// verifyUnits copies the given files (and the example drop-in directory)
// into a fresh directory, points ExecStart=/usr/bin/otad at an executable
// that exists on the test machine, and runs `systemd-analyze verify`. It
// returns everything the tool printed: warnings about unknown keys do not
// change its exit status, so silence is the criterion.
func verifyUnits(t *testing.T, dir string, units ...string) (string, error) {
	t.Helper()
	// verify checks that ExecStart's binary exists and is executable; the
	// running test binary is a real executable at a known path.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		p := filepath.Join(dir, u)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "ExecStart=/usr/bin/otad serve", "ExecStart="+self+" serve")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := append([]string{"verify", "--man=no"}, units...)
	cmd := exec.Command("systemd-analyze", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// stageUnits copies the shipped files into a temp dir laid out like a unit
// directory, plus boot-complete.target from the installed systemd so that
// the drop-in is parsed with the unit it extends.
func stageUnits(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatalf("systemd-analyze not installed (make deps): %v", err)
	}
	dir := t.TempDir()
	copyFile(t, filepath.Join(unitsDir, "otad.service"), filepath.Join(dir, "otad.service"))
	copyFile(t, filepath.Join(unitsDir, "otad-health-example.service"), filepath.Join(dir, "otad-health-example.service"))
	if err := os.Mkdir(filepath.Join(dir, "boot-complete.target.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(unitsDir, "examples/boot-complete.target.d/10-otad-health.conf"), filepath.Join(dir, "boot-complete.target.d/10-otad-health.conf"))
	var found bool
	for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(d, DefaultTarget)); err == nil {
			copyFile(t, filepath.Join(d, DefaultTarget), filepath.Join(dir, DefaultTarget))
			found = true
			break
		}
	}
	if !found {
		t.Fatalf("%s not shipped by the installed systemd", DefaultTarget)
	}
	return dir
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestUnitsVerify(t *testing.T) {
	dir := stageUnits(t)
	out, err := verifyUnits(t, dir, "otad.service", "otad-health-example.service", DefaultTarget)
	if err != nil || out != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The verify criterion must be able to fail: a misspelt key, a missing
// required unit in the drop-in.
func TestUnitsVerifyCatchesMistakes(t *testing.T) {
	dir := stageUnits(t)
	p := filepath.Join(dir, "otad.service")
	b, _ := os.ReadFile(p)
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), "WatchdogSec=30s", "WatchdogSek=30s", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := verifyUnits(t, dir, "otad.service"); err == nil && out == "" {
		t.Fatal("verify accepted a misspelt key")
	}
	if err := os.Remove(filepath.Join(dir, "otad-health-example.service")); err != nil {
		t.Fatal(err)
	}
	if out, err := verifyUnits(t, dir, DefaultTarget); err == nil && out == "" {
		t.Fatal("verify accepted a drop-in requiring a missing unit")
	}
}

// unitKeys reads "Key=Value" lines per section; repeated keys accumulate.
func unitKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not key=value: %q", path, line)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	return keys
}

func TestOtadServiceSettings(t *testing.T) {
	k := unitKeys(t, filepath.Join(unitsDir, "otad.service"))
	want := map[string]string{
		"Service.Type":            "notify",
		"Service.ExecStart":       "/usr/bin/otad serve",
		"Service.WatchdogSec":     "30s",
		"Service.Restart":         "on-failure",
		"Service.ProtectSystem":   "strict",
		"Service.ProtectHome":     "yes",
		"Service.PrivateTmp":      "yes",
		"Service.NoNewPrivileges": "yes",
		"Service.DevicePolicy":    "closed",
		"Service.BusName":         "io.otad.Update1",
	}
	for key, v := range want {
		if got := k[key]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %v, want %q", key, got, v)
		}
	}
	rw := strings.Join(k["Service.ReadWritePaths"], " ")
	for _, p := range []string{"/var/lib/otad", "/run/otad"} {
		if !strings.Contains(rw, p) {
			t.Errorf("ReadWritePaths %q lacks %s", rw, p)
		}
	}
	devs := strings.Join(k["Service.DeviceAllow"], ",")
	for _, d := range []string{"block-blkext rw", "block-mmc rw", "char-mtd rw", "char-ubi* rw", "char-watchdog rw", "/dev/watchdog rw"} {
		if !strings.Contains(devs, d) {
			t.Errorf("DeviceAllow lacks %q", d)
		}
	}
	ex := unitKeys(t, filepath.Join(unitsDir, "otad-health-example.service"))
	if got := ex["Install.RequiredBy"]; len(got) != 1 || got[0] != DefaultTarget {
		t.Errorf("example RequiredBy = %v", got)
	}
	if !strings.Contains(strings.Join(ex["Unit.Before"], " "), DefaultTarget) {
		t.Errorf("example not ordered before %s", DefaultTarget)
	}
}

// The system.conf drop-in for watchdog mode (a): known keys in [Manager],
// each a time span that systemd itself parses.
func TestWatchdogSystemConfDropIn(t *testing.T) {
	k := unitKeys(t, filepath.Join(unitsDir, "system.conf.d/10-otad-watchdog.conf"))
	if len(k["Manager.RuntimeWatchdogSec"]) != 1 {
		t.Fatalf("no RuntimeWatchdogSec in [Manager]: %v", k)
	}
	for key, vals := range k {
		switch key {
		case "Manager.RuntimeWatchdogSec", "Manager.RebootWatchdogSec":
		default:
			t.Errorf("unexpected key %s", key)
			continue
		}
		if out, err := exec.Command("systemd-analyze", "timespan", vals[0]).CombinedOutput(); err != nil {
			t.Errorf("%s=%s: %v\n%s", key, vals[0], err, out)
		}
	}
	// The same check rejects garbage.
	if err := exec.Command("systemd-analyze", "timespan", "thirty").Run(); err == nil {
		t.Fatal("systemd-analyze timespan accepted garbage")
	}
}

type busconfig struct {
	Policies []struct {
		Context string `xml:"context,attr"`
		User    string `xml:"user,attr"`
		Group   string `xml:"group,attr"`
		Rules   []struct {
			XMLName     xml.Name
			Own         string `xml:"own,attr"`
			Destination string `xml:"send_destination,attr"`
			Interface   string `xml:"send_interface,attr"`
			Member      string `xml:"send_member,attr"`
		} `xml:",any"`
	} `xml:"policy"`
}

// policyAllows evaluates the parsed policy the way dbus-daemon does for a
// method call to io.otad.Update1: default context, then group, then user;
// the last matching rule wins.
func policyAllows(cfg *busconfig, root, inGroup bool, iface, member string) bool {
	allowed := false
	apply := func(ctx, user, group string) {
		for _, p := range cfg.Policies {
			if p.Context != ctx || p.User != user || p.Group != group {
				continue
			}
			for _, r := range p.Rules {
				if r.Own != "" || r.Destination != "io.otad.Update1" {
					continue
				}
				if (r.Interface == "" || r.Interface == iface) && (r.Member == "" || r.Member == member) {
					allowed = r.XMLName.Local == "allow"
				}
			}
		}
	}
	apply("default", "", "")
	if inGroup {
		apply("", "", "otad")
	}
	if root {
		apply("", "root", "")
	}
	return allowed
}

func TestBusPolicy(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(unitsDir, "io.otad.Update1.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg busconfig
	if err := xml.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("policy XML: %v", err)
	}
	const api = "io.otad.Update1"
	type who struct {
		name        string
		root, group bool
	}
	for _, w := range []who{{"anyone", false, false}, {"group otad", false, true}, {"root", true, false}} {
		for _, m := range []string{"Install", "Cancel", "Reboot", "MarkGood", "MarkBad", "MarkActive"} {
			if got, want := policyAllows(&cfg, w.root, w.group, api, m), w.root || w.group; got != want {
				t.Errorf("%s calling %s: allowed=%v, want %v", w.name, m, got, want)
			}
		}
		for _, c := range [][2]string{{api, "InspectBundle"}, {api, "GetSlotStatus"},
			{"org.freedesktop.DBus.Properties", "Get"}, {"org.freedesktop.DBus.Properties", "GetAll"},
			{"org.freedesktop.DBus.Introspectable", "Introspect"}, {"org.freedesktop.DBus.Peer", "Ping"}} {
			if !policyAllows(&cfg, w.root, w.group, c[0], c[1]) {
				t.Errorf("%s may not call %s.%s", w.name, c[0], c[1])
			}
		}
	}
	if policyAllows(&cfg, false, false, "org.freedesktop.DBus.Properties", "Set") {
		t.Error("anyone may set properties")
	}
	// Only root owns the name.
	for _, p := range cfg.Policies {
		for _, r := range p.Rules {
			if r.Own != "" && r.XMLName.Local == "allow" && p.User != "root" {
				t.Errorf("policy %+v lets non-root own %s", p, r.Own)
			}
		}
	}
}

// dbus-daemon itself must accept the file: it rejects unknown elements and
// attributes at start-up.
func TestBusPolicyLoadsInDbusDaemon(t *testing.T) {
	policy, err := filepath.Abs(filepath.Join(unitsDir, "io.otad.Update1.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := startPolicyBus(t, policy); err != nil {
		t.Fatalf("dbus-daemon refused the policy: %v", err)
	}
	// And the check can fail: the same file with a misspelt attribute.
	b, _ := os.ReadFile(policy)
	bad := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(b), `send_member="Get"`, `send_membr="Get"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := startPolicyBus(t, bad); err == nil {
		t.Fatal("dbus-daemon accepted a broken policy")
	}
}

// startPolicyBus runs a private deny-by-default bus shaped like Debian's
// system bus (privbus) that includes policy, in a directory every user can
// reach (the policy, not the file mode, must decide), and returns it; it is
// stopped in t.Cleanup by its PID.
func startPolicyBus(t *testing.T, policy string) (*privbus.Bus, error) {
	t.Helper()
	dir, err := os.MkdirTemp("", "otad-health-policy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := privbus.Start(context.Background(), dir, privbus.Include(policy))
	if err != nil {
		return nil, err
	}
	t.Cleanup(b.Stop)
	return b, nil
}

// otadAPI stands in for the daemon's object so the bus has something to
// route to; the policy, not this code, decides who gets through.
type otadAPI struct{}

func (otadAPI) Install(string) (string, *godbus.Error) { return "tx1", nil }
func (otadAPI) InspectBundle(string) (string, *godbus.Error) {
	return "{}", nil
}
func (otadAPI) GetSlotStatus() (string, *godbus.Error) { return "[]", nil }

type otadProps struct{}

func (otadProps) GetAll(string) (map[string]godbus.Variant, *godbus.Error) {
	return map[string]godbus.Variant{"Operation": godbus.MakeVariant("idle")}, nil
}

// TestBusPolicyEnforced runs the policy in a real dbus-daemon and calls the
// service as root and as the unprivileged user nobody (through setpriv).
func TestBusPolicyEnforced(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to call as another user")
	}
	for _, tool := range []string{"setpriv", "dbus-send"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make deps): %v", tool, err)
		}
	}
	src, err := filepath.Abs(filepath.Join(unitsDir, "io.otad.Update1.conf"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// The second run maps the group rule onto nobody's own group, which
	// exists on every Debian system, to prove group members get through.
	variants := []struct {
		name        string
		policy      string
		nobodyMayDo bool
	}{
		{"as shipped", string(b), false},
		{"nobody in the otad group", strings.ReplaceAll(string(b), `group="otad"`, `group="nogroup"`), true},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			policy := filepath.Join(t.TempDir(), "policy.conf")
			if err := os.WriteFile(policy, []byte(v.policy), 0o644); err != nil {
				t.Fatal(err)
			}
			bus, err := startPolicyBus(t, policy)
			if err != nil {
				t.Fatal(err)
			}
			addr := bus.Address
			svc, err := godbus.Connect(addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { svc.Close() })
			if err := svc.Export(otadAPI{}, "/io/otad/Update1", "io.otad.Update1"); err != nil {
				t.Fatal(err)
			}
			if err := svc.Export(otadProps{}, "/io/otad/Update1", "org.freedesktop.DBus.Properties"); err != nil {
				t.Fatal(err)
			}
			if r, err := svc.RequestName("io.otad.Update1", godbus.NameFlagDoNotQueue); err != nil || r != godbus.RequestNameReplyPrimaryOwner {
				t.Fatalf("root could not own io.otad.Update1: %v %v", r, err)
			}

			call := func(asNobody bool, method string, args ...string) (string, error) {
				argv := append([]string{"dbus-send", "--bus=" + addr, "--print-reply", "--reply-timeout=10000", "--dest=io.otad.Update1", "/io/otad/Update1", method}, args...)
				if asNobody {
					argv = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, argv...)
				}
				out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
				return string(out), err
			}
			// Root: everything.
			if out, err := call(false, "io.otad.Update1.Install", "string:/tmp/b.otab"); err != nil {
				t.Fatalf("root Install: %v\n%s", err, out)
			}
			// Nobody: reads always.
			for _, m := range [][]string{
				{"io.otad.Update1.InspectBundle", "string:/tmp/b.otab"},
				{"io.otad.Update1.GetSlotStatus"},
				{"org.freedesktop.DBus.Properties.GetAll", "string:io.otad.Update1"},
			} {
				if out, err := call(true, m[0], m[1:]...); err != nil {
					t.Errorf("nobody %s: %v\n%s", m[0], err, out)
				}
			}
			// Nobody: mutating only through the group rule.
			out, err := call(true, "io.otad.Update1.Install", "string:/tmp/b.otab")
			if v.nobodyMayDo {
				if err != nil {
					t.Fatalf("group member Install: %v\n%s", err, out)
				}
			} else if err == nil || !strings.Contains(out, "AccessDenied") {
				t.Fatalf("nobody Install got through: %v\n%s", err, out)
			}
			// Only root may own the name.
			own := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
				"dbus-send", "--bus="+addr, "--print-reply", "--reply-timeout=10000", "--dest=org.freedesktop.DBus",
				"/org/freedesktop/DBus", "org.freedesktop.DBus.RequestName", "string:io.otad.Update1", "uint32:4")
			if out, err := own.CombinedOutput(); err == nil || !strings.Contains(string(out), "AccessDenied") {
				t.Fatalf("nobody may own io.otad.Update1: %v\n%s", err, out)
			}
		})
	}
}
