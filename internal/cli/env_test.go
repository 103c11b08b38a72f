package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// envFixture is a redundant env file (blank: never initialised) and its config.
func envFixture(t *testing.T) (cfg, img string) {
	t.Helper()
	dir := t.TempDir()
	img = filepath.Join(dir, "env.img")
	if err := os.WriteFile(img, make([]byte, 0x8000), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(dir, "fw_env.config")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("%s 0x0 0x4000\n%s 0x4000 0x4000\n", img, img)), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, img
}

func otad(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := Run(context.Background(), append([]string{"otad"}, args...), strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

func fw(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s %q: %v (make deps installs libubootenv-tool)", name, args, err)
	}
	return string(out)
}

func TestEnvInitPrintSetLikeFwTools(t *testing.T) {
	cfg, _ := envFixture(t)
	if _, _, err := otad(t, "", "env", "print", "-c", cfg); err == nil || !strings.Contains(err.Error(), "env init") {
		t.Fatalf("print on a blank env: %v", err)
	}
	defaults := filepath.Join(t.TempDir(), "u-boot-initial-env")
	os.WriteFile(defaults, []byte("# board\nbootcmd=run distro_bootcmd\nbootdelay=2\notad_part_A=2\n"), 0o644)
	if _, _, err := otad(t, "", "env", "init", "-c", cfg, "-f", defaults); err != nil {
		t.Fatal(err)
	}
	if _, _, err := otad(t, "", "env", "init", "-c", cfg); err == nil {
		t.Fatal("init over a valid env without -force succeeded")
	}
	mine, _, err := otad(t, "", "env", "print", "-c", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if theirs := fw(t, "fw_printenv", "-c", cfg); mine != theirs {
		t.Fatalf("otad env print:\n%s\nfw_printenv:\n%s", mine, theirs)
	}
	for _, want := range []string{"bootcmd=run distro_bootcmd\n", "otad_slot=A\n", "bootlimit=3\n", "upgrade_available=0\n"} {
		if !strings.Contains(mine, want) {
			t.Fatalf("init result lacks %q:\n%s", want, mine)
		}
	}

	if _, _, err := otad(t, "", "env", "set", "-c", cfg, "bootargs", "console=ttyAMA0", "quiet"); err != nil {
		t.Fatal(err)
	}
	if v := fw(t, "fw_printenv", "-c", cfg, "-n", "bootargs"); v != "console=ttyAMA0 quiet\n" {
		t.Fatalf("fw_printenv -n bootargs = %q", v)
	}
	if _, _, err := otad(t, "", "env", "set", "-c", cfg, "bootdelay"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fw(t, "fw_printenv", "-c", cfg), "bootdelay=") {
		t.Fatal("env set NAME did not delete")
	}
	script := "# trial\notad_slot B\notad_prev=A\nupgrade_available 1\nbootcmd\n"
	if _, _, err := otad(t, script, "env", "set", "-c", cfg, "-s", "-"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"otad_slot", "otad_prev", "upgrade_available", "bootcmd", "nosuch"} {
		mine, _, err := otad(t, "", "env", "print", "-c", cfg, name)
		if err != nil {
			t.Fatal(err)
		}
		if theirs := fw(t, "fw_printenv", "-c", cfg, name); mine != theirs {
			t.Fatalf("print %s: otad %q, fw_printenv %q", name, mine, theirs)
		}
	}
	if v, _, _ := otad(t, "", "env", "print", "-c", cfg, "-n", "otad_slot"); v != "B\n" {
		t.Fatalf("print -n otad_slot = %q", v)
	}

	// fw_setenv writes, otad reads.
	fw(t, "fw_setenv", "-c", cfg, "from_fw", "yes")
	if v, _, _ := otad(t, "", "env", "print", "-c", cfg, "-n", "from_fw"); v != "yes\n" {
		t.Fatalf("after fw_setenv: %q", v)
	}
}

func TestEnvUsageErrors(t *testing.T) {
	cfg, _ := envFixture(t)
	for _, args := range [][]string{
		{"env"}, {"env", "frob"}, {"env", "set", "-c", cfg}, {"env", "set", "-c", cfg, "a=b", "1"},
		{"env", "set", "-c", cfg, "-s", "x", "name"}, {"env", "print", "-c", cfg, "-n"},
	} {
		_, _, err := otad(t, "", args...)
		var u *UsageError
		if !errors.As(err, &u) {
			t.Errorf("%q: err = %v, want a usage error", args, err)
		}
	}
	_, errOut, err := otad(t, "", "env", "set", "-c", filepath.Join(t.TempDir(), "missing.config"), "a", "1")
	if err == nil || Report(err, &bytes.Buffer{}) != 1 {
		t.Fatalf("missing config: %v %s", err, errOut)
	}
}
