package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFullFile(t *testing.T) {
	c, err := Load("testdata/full.conf")
	if err != nil {
		t.Fatal(err)
	}
	if c.Compatible != "acme-gw-v1" || c.DataDir != "/data/otad" || c.BootLimit != 5 || c.Reboot != RebootManual {
		t.Fatalf("system section: %+v", c)
	}
	if !reflect.DeepEqual(c.RebootCommand, []string{"/sbin/shutdown", "-r", "now please"}) {
		t.Fatalf("reboot-command %q", c.RebootCommand)
	}
	if c.EnvLock != "/run/lock/otad-env.lock" {
		t.Fatalf("env-lock %q", c.EnvLock)
	}
	if c.Keyring.Threshold != 2 {
		t.Fatalf("threshold %d", c.Keyring.Threshold)
	}
	b, ok := c.Slot("rootfs", "B")
	if !ok || b.Device != "/dev/mmcblk0p3" || b.Type != "block" || b.Index != 1 {
		t.Fatalf("slot B %+v", b)
	}
	wantChecks := [][]string{{"/usr/bin/app-check", "--quick"}, {"/bin/sh", "-c", "test -e /run/ok"}}
	if !reflect.DeepEqual(c.Health.Checks, wantChecks) || !c.Health.NoFailedUnits || c.Health.Timeout != 90*time.Second {
		t.Fatalf("health %+v", c.Health)
	}
	wantHdr := [][2]string{{"Authorization", "Bearer abc:def"}, {"X-Device", "gw-17"}}
	wantOrigins := []string{"https://updates.example.com/fleet", "https://cdn.example.com:8443/"}
	if !reflect.DeepEqual(c.Fetch.Headers, wantHdr) || c.Fetch.MinRate != 4096 || !reflect.DeepEqual(c.Fetch.Origins, wantOrigins) || c.Fetch.Redirects != "none" {
		t.Fatalf("fetch %+v", c.Fetch)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load("testdata/minimal.conf")
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/var/lib/otad" || c.EnvConfig != "/etc/fw_env.config" || c.BootLimit != 3 ||
		c.Reboot != RebootAuto || len(c.RebootCommand) != 0 || c.Health.Target != "boot-complete.target" ||
		c.Health.Timeout != 5*time.Minute || c.Health.Watchdog != WatchdogSystemd || c.EnvLock != "" {
		t.Fatalf("defaults: %+v", c)
	}
	if a, _ := c.Slot("rootfs", "A"); a.Bootname != "A" {
		t.Fatalf("bootname default: %+v", a)
	}
}

func TestErrorsNameTheLine(t *testing.T) {
	_, err := Load("testdata/unknown-key.conf")
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != 3 || !strings.Contains(ce.Msg, "bootlimt") {
		t.Fatalf("got %v", err)
	}
	cases := map[string]int{
		"[system]\ncompatible=x\ncompatible=y\n": 3,
		"[sytem]\n":                              1,
		"compatible = x\n":                       1,
		"[system]\nbootlimit = zero\n":           2,
		"[system]\nbootlimit = 10\n":             2,
		"[system]\nreboot = later\n":             2,
		"[slot.rootfs.2]\n":                      1,
		"[system]\n[system]\n":                   2,
		"[health]\ncheck = 'unterminated\n":      2,
		"[fetch]\nheader = no colon\n":           2,
		"[fetch]\norigins = https://u:p@h/\n":    2,
		"[fetch]\norigins = https://h/a/../b\n":  2,
		"[fetch]\nredirects = sometimes\n":       2,
		"[system]\ndata-dir = relative/path\n":   2,
		"[system]\njust text\n":                  2,
		"[slot.rootfs.0]\nname = C\n":            2,
		"[health]\ntimeout = -1s\n":              2,
	}
	for in, line := range cases {
		_, err := Parse(strings.NewReader(in), "t.conf")
		if !errors.As(err, &ce) || ce.Line != line {
			t.Errorf("%q: got %v, want an error at line %d", in, err, line)
		}
	}
}

func TestValidation(t *testing.T) {
	for _, in := range []string{
		"[slot.rootfs.0]\nname=A\ndevice=/a\n[slot.rootfs.1]\nname=B\ndevice=/b\n",                                               // no compatible
		"[system]\ncompatible=x\n[slot.rootfs.0]\nname=A\ndevice=/a\n",                                                           // no B
		"[system]\ncompatible=x\n[slot.rootfs.0]\nname=A\ndevice=/a\n[slot.rootfs.1]\nname=A\ndevice=/b\n",                       // A twice
		"[system]\ncompatible=x\n[slot.rootfs.0]\nname=A\ndevice=/a\nsize=1M\n[slot.rootfs.1]\nname=B\ndevice=/b\n",              // size on a block slot
		"[system]\ncompatible=x\n[slot.rootfs.0]\nname=A\n[slot.rootfs.1]\nname=B\ndevice=/b\n",                                  // no device
		"[system]\ncompatible=x\n[slot.rootfs.0]\nname=A\ndevice=/a\n[slot.rootfs.1]\nname=B\ndevice=/b\n[fetch]\nheader=A: b\n", // header without origins
	} {
		if _, err := Parse(strings.NewReader(in), "t"); err == nil {
			t.Errorf("%q: accepted", in)
		}
	}
}

// env-lock is an absolute path or "-" (no lock); a relative path would
// depend on the daemon's working directory.
func TestEnvLock(t *testing.T) {
	const base = "[system]\ncompatible=x\nenv-lock=%s\n[slot.rootfs.0]\nname=A\ndevice=/a\n[slot.rootfs.1]\nname=B\ndevice=/b\n"
	for in, want := range map[string]string{"/tmp/demo/env.lock": "/tmp/demo/env.lock", "-": "-"} {
		c, err := Parse(strings.NewReader(fmt.Sprintf(base, in)), "t")
		if err != nil || c.EnvLock != want {
			t.Errorf("env-lock=%s: got %q, %v", in, c.EnvLock, err)
		}
	}
	for _, in := range []string{"env.lock", ""} {
		if _, err := Parse(strings.NewReader(fmt.Sprintf(base, in)), "t"); err == nil {
			t.Errorf("env-lock=%q accepted", in)
		}
	}
}

func TestSplitArgs(t *testing.T) {
	got, err := SplitArgs(`a "b c" 'd\e' f\ g ""`)
	want := []string{"a", "b c", `d\e`, "f g", ""}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q %v", got, err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "64K": 65536, "8M": 8 << 20, "1GiB": 1 << 30, "2MB": 2 << 20} {
		if n, err := ParseSize(in); err != nil || n != want {
			t.Errorf("%s: %d %v", in, n, err)
		}
	}
	if _, err := ParseSize("-1"); err == nil {
		t.Error("negative size accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("[system]\ncompatible=x\n[slot.rootfs.0]\nname=A\ndevice=/a\n[slot.rootfs.1]\nname=B\ndevice=/b\n")
	f.Add("[health]\ncheck = a 'b c' \"d\\\"\"\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse(strings.NewReader(in), "fuzz")
		if err == nil && (c.Compatible == "" || len(c.Slots) < 2) {
			t.Fatalf("accepted an invalid config: %+v", c)
		}
	})
}
