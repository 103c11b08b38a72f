//go:build !otad_device

package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// demoServeEnv makes this test binary act as otad: the demo runs
// os.Executable() as `otad serve`, and under `go test` that is this binary.
// "run" serves, "fail" exits 1 at once (a daemon that cannot start).
const demoServeEnv = "OTAD_DEMO_TEST_SERVE"

func TestMain(m *testing.M) {
	switch os.Getenv(demoServeEnv) {
	case "run":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := Run(ctx, append([]string{"otad"}, os.Args[1:]...), os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(Report(err, os.Stderr))
	case "fail":
		fmt.Fprintln(os.Stderr, "otad serve: failing on purpose (demo test)")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// procsMentioning lists the live processes whose command line names dir:
// the demo's dbus-daemon (--config-file) and otad serve (-config) do.
func procsMentioning(t *testing.T, dir string) []string {
	t.Helper()
	cmdlines, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range cmdlines {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited meanwhile
		}
		if line := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(line, dir) {
			out = append(out, filepath.Base(filepath.Dir(p))+": "+line)
		}
	}
	return out
}

func TestDemoRunsUpdateAndRollback(t *testing.T) {
	t.Setenv(demoServeEnv, "run")
	work := filepath.Join(t.TempDir(), "demo-work")
	var out, errb bytes.Buffer
	e := &Env{Prog: "otad", Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}
	err := cmdDemo(context.Background(), e, []string{"-dir", work, "-slot-size", "16M"})
	if left := procsMentioning(t, work); len(left) > 0 {
		t.Errorf("demo left processes running: %q", left)
	}
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(work, "otad.log"))
		t.Fatalf("demo: %v\n%s\n%s\notad.log:\n%s", err, out.String(), errb.String(), log)
	}
	s := out.String()
	for _, want := range []string{
		"bus: private dbus-daemon",
		"io.otad.Update1.conf", // the repo's bus policy, found from the working directory
		"installed 2.0 into slot B",
		"reboot requested (reboot = auto)",
		"boots slot B (trial boot 1 of 3)",
		"slot B confirmed and committed",
		"ROLLED BACK slot A",
		"application in slot A did not start",
		"reboot requested to fall back",
		"back on slot B, release 2.0",
		"anti-rollback floor 2",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	// Every power-on is a new otad serve process: four boots, four PIDs,
	// none of them this process.
	pids := map[string]bool{}
	for _, m := range regexp.MustCompile(`otad serve \(pid (\d+)\) owns io\.otad\.Update1`).FindAllStringSubmatch(s, -1) {
		if m[1] == fmt.Sprint(os.Getpid()) {
			t.Errorf("the daemon ran in the demo's own process")
		}
		pids[m[1]] = true
	}
	if len(pids) != 4 {
		t.Errorf("want 4 distinct otad serve processes (one per power-on), got %v:\n%s", pids, s)
	}
	// The daemon's env lock is the work dir's, as system.conf says.
	if _, err := os.Stat(filepath.Join(work, "fw_env.lock")); err != nil {
		t.Errorf("env lock not in the work dir: %v", err)
	}
	// Everything it made is inside the work dir; it recreates it on rerun.
	entries, err := os.ReadDir(filepath.Dir(work))
	if err != nil || len(entries) != 1 {
		t.Fatalf("demo left %v next to its work dir (%v)", entries, err)
	}
	if err := cmdDemo(context.Background(), &Env{Prog: "otad", Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}},
		[]string{"-dir", work, "-slot-size", "16M"}); err != nil {
		t.Fatalf("second run: %v", err)
	}
	if left := procsMentioning(t, work); len(left) > 0 {
		t.Errorf("second run left processes running: %q", left)
	}
	if err := cmdDemo(context.Background(), e, []string{"-dir", "/"}); err == nil {
		t.Fatal("demo accepted / as its work dir")
	}
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "precious"), []byte("x"), 0o644)
	if err := cmdDemo(context.Background(), e, []string{"-dir", foreign}); err == nil {
		t.Fatal("demo would remove a directory it did not make")
	}
	if _, err := os.Stat(filepath.Join(foreign, "precious")); err != nil {
		t.Fatal("demo removed a foreign file")
	}
}

// A daemon that cannot start fails the demo with a clear error, and the
// private bus it had started is gone afterwards.
func TestDemoDaemonFailsToStart(t *testing.T) {
	t.Setenv(demoServeEnv, "fail")
	work := filepath.Join(t.TempDir(), "demo-work")
	var out, errb bytes.Buffer
	err := cmdDemo(context.Background(), &Env{Prog: "otad", Stdout: &out, Stderr: &errb}, []string{"-dir", work, "-slot-size", "8M"})
	if err == nil || !strings.Contains(err.Error(), "otad serve exited at start") {
		t.Fatalf("want an error naming the failed start, got %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "bus: private dbus-daemon") {
		t.Fatalf("the bus was never started, so the cleanup is not tested:\n%s", out.String())
	}
	if left := procsMentioning(t, work); len(left) > 0 {
		t.Errorf("failed demo left processes running: %q", left)
	}
	log, _ := os.ReadFile(filepath.Join(work, "otad.log"))
	if !strings.Contains(string(log), "failing on purpose") {
		t.Errorf("otad.log lacks the daemon's stderr:\n%s", log)
	}
}

func TestDemoRefusesLongWorkDir(t *testing.T) {
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	err := cmdDemo(context.Background(), &Env{Prog: "otad", Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}}, []string{"-dir", long})
	if err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(long); err == nil {
		t.Fatal("demo created the directory it refused")
	}
}
